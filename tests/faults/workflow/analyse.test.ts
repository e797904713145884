// The workflow crash-loop analysis on hand-written streams and logs: each check finds what it is
// meant to find, so that the fault suite's zeros are not zeros by construction.
import assert from "node:assert/strict";
import type { StreamEvent } from "../../../core/event.ts";
import type { Order } from "../../../examples/fulfilment/fulfilment.ts";
import { analyse, type Observed } from "./analyse.ts";

const order: Order = { orderId: "o1", sku: "s0", quantity: 1, amount: 100, address: "x" };
const ev = (type: string, data: unknown = {}): StreamEvent => ({
  index: 0,
  type,
  data,
  meta: null,
  id: crypto.randomUUID(),
  time: new Date(0),
  size: 0,
});
const completed = () =>
  new Map<string, StreamEvent[]>([
    ["Fulfilment-o1", [
      ev("Started", order),
      ev("WorkflowSend", { seq: 0, type: "Reserve" }),
      ev("WorkflowDelivered", { seq: 0 }),
      ev("StepSucceeded", { step: "reserve" }),
      ev("StepSucceeded", { step: "pay" }),
      ev("StepSucceeded", { step: "ship" }),
      ev("Completed"),
    ]],
    ["Stock-s0", [
      ev("Restocked", { quantity: 5 }),
      ev("Reserved", { orderId: "o1", quantity: 1 }),
    ]],
    ["Payment-o1", [ev("PaymentRequested"), ev("PaymentCaptured")]],
    ["Shipment-o1", [ev("Shipped")]],
  ]);
const observed = (streams: Map<string, StreamEvent[]>, log = ""): Observed => ({
  orders: [order],
  answers: () => "capture",
  streams,
  restocked: new Map([["s0", 5]]),
  runs: [{ log, killed: true }, { log: "", killed: false }],
});

Deno.test("workflow fault analysis: a clean completed order", () => {
  const log = [
    "send\tFulfilment-o1#0\tReserve\t1\t1",
    "timer\tscheduled\tFulfilment-o1#1\t1\t2",
    "send\tFulfilment-o1#0\tReserve\t2\t3",
    "timer\tfired\tFulfilment-o1#1\t2\t4",
  ].join("\n");
  const f = analyse(observed(completed(), log));
  assert.deepEqual(
    [f.kills, f.completed, f.unfinished, f.duplicateRecords, f.effectsTwice, f.inconsistent],
    [1, 1, 0, 0, 0, 0],
  );
  assert.deepEqual([f.stockMismatches, f.undelivered, f.sends, f.sendCalls, f.resent], [
    0,
    0,
    1,
    2,
    1,
  ]);
  assert.equal(f.timersFiredAfterRestart, 1);
  assert.deepEqual(f.problems, []);
});

Deno.test("workflow fault analysis: every kind of violation is counted", () => {
  const streams = completed();
  streams.get("Payment-o1")!.push(ev("PaymentCaptured"));
  streams.get("Fulfilment-o1")!.splice(1, 0, ev("WorkflowSend", { seq: 1, type: "Ship" }));
  streams.get("Fulfilment-o1")!.push(
    ev("WorkflowTimerFired", { seq: 2 }),
    ev("WorkflowTimerFired", { seq: 2 }),
  );
  streams.get("Shipment-o1")!.length = 0;
  const f = analyse(observed(streams));
  assert.equal(f.effectsTwice, 1, "captured twice");
  assert.equal(f.undelivered, 1, "send 1 never delivered");
  assert.equal(f.timersFiredTwice, 1);
  assert.equal(f.duplicateRecords, 1);
  assert.equal(f.inconsistent, 1, "completed but not shipped");
  const unended = completed();
  unended.get("Fulfilment-o1")!.pop();
  unended.get("Stock-s0")!.push(ev("Reserved", { orderId: "o9", quantity: 2 }));
  const g = analyse(observed(unended));
  assert.equal(g.unfinished, 1);
  assert.equal(g.stockMismatches, 1);
  const wrong = completed();
  const h = analyse({ ...observed(wrong), answers: () => "ignore" });
  assert.equal(h.inconsistent, 1, "completed though the gateway never answered");
});
