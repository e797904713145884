// Domain tests of the workflows on plain functions: given events, when an input, then the
// events recorded, the messages sent and the timers set; and the fulfilment services' deciders
// through deciderSpec.
import assert from "node:assert/strict";
import { InvalidArgumentError } from "../../core/errors.ts";
import {
  compensationFailed,
  defineSaga,
  defineWorkflow,
  type SagaEvent,
  type SagaInput,
  stepCompensated,
  stepFailed,
  stepSucceeded,
  type WorkflowContext,
} from "../../core/workflow.ts";
import { createCodec } from "../../core/codec.ts";
import {
  fulfilment,
  type FulfilmentMessage,
  type Order,
  PAYMENT_TIMEOUT_MS,
  paymentOutcome,
} from "../../examples/fulfilment/fulfilment.ts";
import { foldStock, initialStock, stockCodec } from "../../examples/fulfilment/stock.ts";
import * as stock from "../../examples/fulfilment/stock.ts";
import * as payment from "../../examples/fulfilment/payment.ts";
import * as shipping from "../../examples/fulfilment/shipping.ts";
import { deciderSpec } from "../../testing.ts";
import {
  type GroupCheckoutInput,
  groupCheckoutWorkflow,
} from "../../examples/hotel/groupCheckoutWorkflow.ts";

const order: Order = { orderId: "o1", sku: "tea", quantity: 2, amount: 900, address: "1 Main St" };
const context = (extra: Partial<WorkflowContext> = {}): WorkflowContext => ({
  id: "o1",
  stream: "Fulfilment-o1",
  now: 1_000,
  inputId: "input-1",
  correlationId: "req-1",
  version: 0,
  timers: [],
  ...extra,
});
const given = (events: readonly SagaEvent<Order>[]) => ({
  when: (input: SagaInput<Order>) =>
    fulfilment.decide(fulfilment.fold(fulfilment.initial, events), input, context()),
});
const started: SagaEvent<Order> = { type: "Started", data: order };
const succeeded = (step: string, result: unknown = null): SagaEvent<Order> => ({
  type: "StepSucceeded",
  data: { step, result },
});
const reserve: FulfilmentMessage & { to: string } = {
  to: "Stock-tea",
  type: "Reserve",
  data: { sku: "tea", orderId: "o1", quantity: 2 },
};
const release = { to: "Stock-tea", type: "Release", data: { sku: "tea", orderId: "o1" } };
const requestPayment = {
  to: "Payment-o1",
  type: "RequestPayment",
  data: { orderId: "o1", amount: 900 },
};
const cancelPayment = { to: "Payment-o1", type: "CancelPayment", data: { orderId: "o1" } };
const payDeadline = {
  name: "deadline",
  afterMs: PAYMENT_TIMEOUT_MS,
  input: { type: "Deadline", data: { step: "pay", phase: "action" } },
};

Deno.test("fulfilment: a start records the order and sends the reservation", () => {
  assert.deepEqual(given([]).when({ type: "Start", data: order }), {
    events: [started],
    sends: [reserve],
    cancelTimers: ["deadline"],
    timers: [],
  });
});

Deno.test("fulfilment: a reservation leads to the payment request with its deadline", () => {
  assert.deepEqual(given([started]).when(stepSucceeded("reserve")), {
    events: [succeeded("reserve")],
    sends: [requestPayment],
    timers: [payDeadline],
  });
});

Deno.test("fulfilment: a captured payment ships; a shipment completes the order", () => {
  const afterPay = [started, succeeded("reserve"), succeeded("pay", { amount: 900 })];
  assert.deepEqual(given(afterPay.slice(0, 2)).when(stepSucceeded("pay", { amount: 900 })), {
    events: [succeeded("pay", { amount: 900 })],
    sends: [{
      to: "Shipment-o1",
      type: "Ship",
      data: { orderId: "o1", sku: "tea", quantity: 2, address: "1 Main St" },
    }],
    cancelTimers: ["deadline"],
    timers: [],
  });
  const decision = given(afterPay).when(stepSucceeded("ship", { trackingId: "T-o1" }));
  assert.deepEqual(decision, {
    events: [succeeded("ship", { trackingId: "T-o1" }), { type: "Completed", data: {} }],
    cancelTimers: ["deadline"],
  });
  const state = fulfilment.fold(fulfilment.fold(fulfilment.initial, afterPay), decision.events!);
  assert.equal(state.status, "completed");
  assert.deepEqual(state.results, {
    reserve: null,
    pay: { amount: 900 },
    ship: { trackingId: "T-o1" },
  });
});

Deno.test("fulfilment: out of stock ends compensated at once: nothing to undo", () => {
  assert.deepEqual(given([started]).when(stepFailed("reserve", "out of stock")), {
    events: [
      { type: "StepFailed", data: { step: "reserve", reason: "out of stock", compensate: false } },
      { type: "Compensated", data: { reason: "reserve: out of stock" } },
    ],
    cancelTimers: ["deadline"],
  });
});

Deno.test("fulfilment: a declined payment releases the reservation, then ends compensated", () => {
  const failed: SagaEvent<Order> = {
    type: "StepFailed",
    data: { step: "pay", reason: "card expired", compensate: false },
  };
  assert.deepEqual(given([started, succeeded("reserve")]).when(stepFailed("pay", "card expired")), {
    events: [failed],
    sends: [release],
    cancelTimers: ["deadline"],
    timers: [],
  });
  const compensating = [started, succeeded("reserve"), failed];
  assert.equal(fulfilment.fold(fulfilment.initial, compensating).status, "compensating");
  assert.deepEqual(given(compensating).when(stepCompensated("reserve")), {
    events: [
      { type: "StepCompensated", data: { step: "reserve" } },
      { type: "Compensated", data: { reason: "pay: card expired" } },
    ],
    cancelTimers: ["deadline"],
  });
});

Deno.test("fulfilment: no answer in time cancels the payment first, then releases", () => {
  const history = [started, succeeded("reserve")];
  const deadline: SagaInput<Order> = { type: "Deadline", data: { step: "pay", phase: "action" } };
  const timedOut: SagaEvent<Order> = {
    type: "StepFailed",
    data: {
      step: "pay",
      reason: `no outcome within ${PAYMENT_TIMEOUT_MS} ms`,
      compensate: true,
      timedOut: true,
    },
  };
  assert.deepEqual(given(history).when(deadline), {
    events: [timedOut],
    sends: [cancelPayment],
    cancelTimers: ["deadline"],
    timers: [],
  });
  const cancelled = [
    ...history,
    timedOut,
    {
      type: "StepCompensated",
      data: { step: "pay" },
    } as const,
  ];
  assert.deepEqual(given(cancelled).when(stepCompensated("reserve")).events?.at(-1), {
    type: "Compensated",
    data: { reason: `pay: no outcome within ${PAYMENT_TIMEOUT_MS} ms` },
  });
  assert.deepEqual(given(history.concat([timedOut])).when(stepCompensated("pay")).sends, [release]);
});

Deno.test("fulfilment: a refused shipment refunds the payment, then releases (reverse order)", () => {
  const history = [started, succeeded("reserve"), succeeded("pay", { amount: 900 })];
  const decision = given(history).when(stepFailed("ship", "no address"));
  assert.deepEqual(decision.sends, [cancelPayment]);
  const state = fulfilment.fold(fulfilment.fold(fulfilment.initial, history), decision.events!);
  assert.deepEqual(state.undo, ["pay", "reserve"]);
});

Deno.test("fulfilment: late, repeated and foreign outcomes are ignored", () => {
  // A second Start is noted (counted by the runner as ignored), not silently dropped.
  assert.deepEqual(given([started]).when({ type: "Start", data: order }), {
    ignored: "Start ignored: the instance has already started (running)",
  });
  assert.deepEqual(given([started, succeeded("reserve")]).when(stepSucceeded("reserve")), {});
  assert.deepEqual(given([started]).when(stepSucceeded("pay")), {});
  assert.deepEqual(given([]).when(stepSucceeded("reserve")), {});
  const compensating: SagaEvent<Order>[] = [started, succeeded("reserve"), {
    type: "StepFailed",
    data: { step: "pay", reason: "declined", compensate: false },
  }];
  assert.deepEqual(given(compensating).when(stepSucceeded("pay")), {});
  assert.deepEqual(given(compensating).when(stepCompensated("pay")), {});
  assert.deepEqual(
    given(compensating).when({ type: "Deadline", data: { step: "pay", phase: "action" } }),
    {},
  );
});

Deno.test("fulfilment: a cancel compensates the running step and the ones before", () => {
  const decision = given([started, succeeded("reserve")]).when({
    type: "Cancel",
    data: { reason: "customer" },
  });
  assert.deepEqual(decision.events, [{
    type: "StepFailed",
    data: { step: "pay", reason: "customer", compensate: true },
  }]);
  assert.deepEqual(decision.sends, [cancelPayment]);
});

Deno.test("fulfilment: the gateway's answers route to the order's instance", () => {
  const ev = (type: string, data: unknown) => ({
    index: 1,
    type,
    data,
    meta: null,
    id: "e",
    time: new Date(0),
    size: 0,
  });
  assert.deepEqual(paymentOutcome("Payment-o7", ev("PaymentCaptured", { amount: 5 })), {
    id: "o7",
    input: stepSucceeded("pay", { amount: 5 }),
  });
  assert.deepEqual(paymentOutcome("Payment-o7", ev("PaymentDeclined", { reason: "no" })), {
    id: "o7",
    input: stepFailed("pay", "no"),
  });
  assert.equal(paymentOutcome("Payment-o7", ev("PaymentRequested", { amount: 5 })), undefined);
});

// A saga of its own for what fulfilment does not use: compensation deadlines and failures.
type Msg = { type: "Do"; data: { step: string } } | { type: "Undo"; data: { step: string } };
const steps = ["a", "b", "c"].map((name) => ({
  name,
  action: () => ({ to: `Svc-${name}`, type: "Do" as const, data: { step: name } }),
  compensation: () => ({ to: `Svc-${name}`, type: "Undo" as const, data: { step: name } }),
  compensationTimeoutMs: 5_000,
}));
const abc = defineSaga<null, Msg>({ category: "Abc", steps });

Deno.test("saga: a failed compensation ends failed with the reasons, after undoing the rest", () => {
  const ctx = context({ id: "x", stream: "Abc-x" });
  let s = abc.fold(abc.initial, [
    { type: "Started", data: null },
    { type: "StepSucceeded", data: { step: "a", result: null } },
    { type: "StepSucceeded", data: { step: "b", result: null } },
  ]);
  const apply = (input: SagaInput<null>) => {
    const d = abc.decide(s, input, ctx);
    s = abc.fold(s, d.events ?? []);
    return d;
  };
  const failed = apply(stepFailed("c", "broken"));
  assert.deepEqual(failed.sends, [{ to: "Svc-b", type: "Undo", data: { step: "b" } }]);
  assert.deepEqual(failed.timers, [{
    name: "deadline",
    afterMs: 5_000,
    input: { type: "Deadline", data: { step: "b", phase: "compensation" } },
  }]);
  const next = apply(compensationFailed("b", "refused"));
  assert.deepEqual(next.sends, [{ to: "Svc-a", type: "Undo", data: { step: "a" } }]);
  const end = apply({ type: "Deadline", data: { step: "a", phase: "compensation" } });
  assert.deepEqual(end.events?.at(-1), {
    type: "Failed",
    data: {
      reason:
        "c: broken; compensation failed: b: refused; a: compensation not confirmed within 5000 ms",
    },
  });
  assert.equal(s.status, "failed");
  // A confirmation after the deadline records nothing, and says why (the runner logs and counts it).
  const late = abc.decide(s, stepCompensated("a"), ctx);
  assert.equal(late.events, undefined);
  assert.match(late.ignored ?? "", /StepCompensated of a came late/);
});

Deno.test("saga: a saga without steps completes on start; steps without compensation are skipped", () => {
  const empty = defineSaga<null, Msg>({ category: "Empty", steps: [] });
  assert.deepEqual(empty.decide(empty.initial, { type: "Start", data: null }, context()).events, [
    { type: "Started", data: null },
    { type: "Completed", data: {} },
  ]);
  const partial = defineSaga<null, Msg>({
    category: "Partial",
    steps: [{ ...steps[0], compensation: undefined }, steps[1], steps[2]],
  });
  const s = partial.fold(partial.initial, [
    { type: "Started", data: null },
    { type: "StepSucceeded", data: { step: "a", result: null } },
  ]);
  const d = partial.decide(s, stepFailed("b", "no"), context());
  assert.deepEqual(d.events?.map((e) => e.type), ["StepFailed", "Compensated"]);
});

Deno.test("saga and workflow definitions: bad parts are refused with the field named", () => {
  const bad = (fn: () => unknown, field: string) =>
    assert.throws(fn, (e) => e instanceof InvalidArgumentError && e.field === field);
  bad(() => defineSaga<null, Msg>({ category: "A", steps: [steps[0], steps[0]] }), "steps[1].name");
  bad(() => defineSaga({ category: "A", steps: [{ name: "x" }] } as never), "steps[0].action");
  bad(
    () => defineSaga<null, Msg>({ category: "A", steps: [{ ...steps[0], timeoutMs: 0 }] }),
    "steps[0].timeoutMs",
  );
  bad(() => defineSaga({ category: "A", steps: "x" } as never), "steps");
  assert.throws(() => defineSaga<null, Msg>({ category: "A-b", steps: [] }), /category contains/);
  const codec = createCodec<{ type: "E"; data: null }>({ E: {} });
  const base = { category: "W", codec, initial: 0, fold: (n: number) => n, decide: () => ({}) };
  bad(() => defineWorkflow({ ...base, decide: 3 } as never), "decide");
  bad(() => defineWorkflow({ ...base, codec: {} } as never), "codec");
  bad(
    () => defineWorkflow({ ...base, routes: [{ category: "W", route: () => undefined }] } as never),
    "routes[0].category",
  );
  bad(() => defineWorkflow({ ...base, routes: [{ category: "P" }] } as never), "routes[0].route");
});

// The services the saga drives, through a real decider (deciderSpec).
const stockSpec = deciderSpec({ codec: stockCodec, initial: initialStock, fold: foldStock });
const restocked = { type: "Restocked", data: { quantity: 3 } } as const;

Deno.test("stock: reserves what is free, rejects (and records) what is not, once per order", async () => {
  await stockSpec.given([restocked]).when(stock.reserve("o1", 2)).thenResult({ ok: true }, [
    { type: "Reserved", data: { orderId: "o1", quantity: 2 } },
  ]);
  await stockSpec.given([restocked]).when(stock.reserve("o1", 4)).thenResult(
    { ok: false, reason: "out of stock: 4 wanted, 3 free" },
    [{ type: "ReservationRejected", data: { orderId: "o1", quantity: 4, available: 3 } }],
  );
  const reserved = { type: "Reserved", data: { orderId: "o1", quantity: 2 } } as const;
  await stockSpec.given([restocked, reserved]).when(stock.reserve("o1", 2)).thenResult(
    { ok: true },
    [],
  );
  await stockSpec.given([restocked, reserved]).when(stock.release("o1")).then([
    { type: "Released", data: { orderId: "o1", quantity: 2 } },
  ]);
  const released = { type: "Released", data: { orderId: "o1", quantity: 2 } } as const;
  await stockSpec.given([restocked, reserved, released]).when(stock.release("o1")).thenNothing();
  await stockSpec.given([restocked]).when(stock.release("o9")).thenNothing();
  await stockSpec.given([restocked, reserved, released]).when(stock.reserve("o1", 1)).thenResult(
    { ok: false, reason: "released" },
    [],
  );
  const rejected = {
    type: "ReservationRejected",
    data: { orderId: "o2", quantity: 4, available: 3 },
  } as const;
  await stockSpec.given([restocked, rejected]).when(stock.reserve("o2", 4)).thenResult(
    { ok: false, reason: "out of stock: 4 wanted, 3 free" },
    [],
  );
});

const paymentSpec = deciderSpec({
  codec: payment.paymentCodec,
  initial: payment.initialPayment,
  fold: payment.foldPayment,
});
const requested = { type: "PaymentRequested", data: { orderId: "o1", amount: 900 } } as const;

Deno.test("payment: cancelling cancels a request, refunds a capture, leaves the rest", async () => {
  await paymentSpec.given([]).when(payment.request("o1", 900)).then([requested]);
  await paymentSpec.given([requested]).when(payment.request("o1", 900)).thenNothing();
  await paymentSpec.given([requested]).when(payment.cancel()).then([
    { type: "PaymentCancelled", data: {} },
  ]);
  const captured = { type: "PaymentCaptured", data: { amount: 900 } } as const;
  await paymentSpec.given([requested, captured]).when(payment.cancel()).then([
    { type: "PaymentRefunded", data: { amount: 900 } },
  ]);
  const cancelled = { type: "PaymentCancelled", data: {} } as const;
  await paymentSpec.given([requested, cancelled]).when(payment.capture()).thenNothing();
  await paymentSpec.given([requested, cancelled]).when(payment.cancel()).thenNothing();
  await paymentSpec.given([]).when(payment.cancel()).then([cancelled]);
  await paymentSpec.given([cancelled]).when(payment.request("o1", 900)).thenNothing();
  await paymentSpec.given([requested, { type: "PaymentDeclined", data: { reason: "x" } }])
    .when(payment.cancel()).thenNothing();
});

Deno.test("shipping: ships once with a tracking id, refuses an order without address", async () => {
  const spec = deciderSpec({
    codec: shipping.shipmentCodec,
    initial: shipping.initialShipment,
    fold: shipping.foldShipment,
  });
  const shipped = {
    type: "Shipped",
    data: { sku: "tea", quantity: 2, address: "1 Main St", trackingId: "T-o1" },
  } as const;
  await spec.given([]).when(shipping.ship("o1", "tea", 2, "1 Main St")).thenResult(
    { ok: true, trackingId: "T-o1" },
    [shipped],
  );
  await spec.given([shipped]).when(shipping.ship("o1", "tea", 2, "1 Main St")).thenResult(
    { ok: true, trackingId: "T-o1" },
    [],
  );
  await spec.given([]).when(shipping.ship("o1", "tea", 2, " ")).thenResult(
    { ok: false, reason: "no address" },
    [{ type: "ShipmentRefused", data: { reason: "no address" } }],
  );
});

Deno.test("hotel group checkout as a workflow: selecting sends one transfer per new stay", () => {
  const w = groupCheckoutWorkflow;
  const ctx = context({ id: "g1", stream: "GroupCheckoutFlow-g1" });
  const select: GroupCheckoutInput = {
    type: "SelectStays",
    data: { stayIds: ["s1", "s2", "s1"], at: "t" },
  };
  const decision = w.decide(w.initial, select, ctx);
  assert.deepEqual(decision.events, [{
    type: "StaysSelected",
    data: { stayIds: ["s1", "s2"], at: "t" },
  }]);
  assert.deepEqual(decision.sends?.map((s) => [s.to, s.type, s.data]), [
    ["GuestStay-s1", "TransferToGroup", { stayId: "s1", groupId: "g1", at: "t" }],
    ["GuestStay-s2", "TransferToGroup", { stayId: "s2", groupId: "g1", at: "t" }],
  ]);
  const s = w.fold(w.initial, decision.events!);
  assert.deepEqual(w.decide(s, select, ctx), { events: [], sends: [] });
  const reported = w.decide(s, {
    type: "TransferReported",
    data: { stayId: "s1", result: { ok: true, residual: 300 } },
  }, ctx);
  assert.deepEqual(reported.events, [{
    type: "StaysMerged",
    data: { stays: [{ stayId: "s1", residual: 300 }] },
  }]);
});
