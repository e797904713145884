// The README's Workflows example, verbatim (the README shows it with the package's import
// names; tests/examples/workflow_readme.test.ts checks that and runs it under Deno and Bun):
// an order saga over a stock decider, a payment and a shipment, on the memory store.
//   deno run -A examples/workflow_readme.ts    or    bun run examples/workflow_readme.ts
import { createCodec, createDecider } from "../mod.ts";
import { createMemoryStore, memorySource } from "../sources/memory.ts";
import {
  defineSaga,
  deliveryOptions,
  manualClock,
  startWorkflow,
  stepCompensated,
  stepFailed,
  stepSucceeded,
  workflowCategories,
} from "../core/workflow.ts";

type Order = { orderId: string; sku: string; amount: number };
type Message =
  | { type: "Reserve"; data: Order }
  | { type: "Release"; data: Order }
  | { type: "Charge"; data: Order }
  | { type: "Refund"; data: Order }
  | { type: "Ship"; data: Order };
type StockEvent = { type: "Reserved" | "Released"; data: { orderId: string } };

const store = createMemoryStore();
const stock = createDecider<StockEvent, readonly string[]>({ // the orders holding stock
  store,
  codec: createCodec<StockEvent>({ Reserved: {}, Released: {} }),
  initial: [],
  fold: (held, events) =>
    events.reduce(
      (ids, e) =>
        e.type === "Reserved"
          ? [...ids, e.data.orderId]
          : ids.filter((id) => id !== e.data.orderId),
      held,
    ),
});

const fulfilment = defineSaga<Order, Message>({
  category: "Fulfilment",
  steps: [
    {
      name: "reserve",
      action: (o) => ({ to: `Stock-${o.sku}`, type: "Reserve", data: o }),
      compensation: (o) => ({ to: `Stock-${o.sku}`, type: "Release", data: o }),
    },
    {
      name: "pay",
      action: (o) => ({ to: `Payment-${o.orderId}`, type: "Charge", data: o }),
      compensation: (o) => ({ to: `Payment-${o.orderId}`, type: "Refund", data: o }),
      timeoutMs: 15 * 60_000, // no answer in 15 minutes: refund (in case) and release
    },
    { name: "ship", action: (o) => ({ to: `Shipment-${o.orderId}`, type: "Ship", data: o }) },
  ],
});

const clock = manualClock(Date.now()); // so that this file can show the deadline at once
const runner = startWorkflow(fulfilment, {
  store,
  clock,
  source: memorySource({ store, categories: workflowCategories(fulfilment) }),
  handlers: {
    // Idempotent by the stock's state, not only by the keys: a send may come twice (after the
    // target's idempotency window), a Release for a Reserve never delivered (it timed out).
    Reserve: async (send) => {
      const { orderId } = send.data;
      await stock.transact(
        send.to,
        (held) => held.includes(orderId) ? [] : [{ type: "Reserved", data: { orderId } }],
        deliveryOptions(send),
      );
      return stepSucceeded("reserve");
    },
    Release: async (send) => {
      const { orderId } = send.data;
      await stock.transact(
        send.to,
        (held) => held.includes(orderId) ? [{ type: "Released", data: { orderId } }] : [],
        deliveryOptions(send),
      );
      return stepCompensated("reserve");
    },
    Charge: (send) => {
      if (send.data.amount > 1_000) return; // the gateway never answers this one
      return send.data.amount <= 100
        ? stepSucceeded("pay", { paymentId: `P-${send.data.orderId}` })
        : stepFailed("pay", "card declined");
    },
    Refund: () => stepCompensated("pay"),
    Ship: (send) => stepSucceeded("ship", { trackingId: `T-${send.data.orderId}` }),
  },
});

const orders: Order[] = [
  { orderId: "o1", sku: "tea", amount: 45 },
  { orderId: "o2", sku: "tea", amount: 450 },
  { orderId: "o3", sku: "tea", amount: 4_500 },
];
for (const order of orders) {
  await runner.handle(order.orderId, { type: "Start", data: order }, {
    id: `place-${order.orderId}`, // a retry with the same id is recorded once
    correlationId: `req-${order.orderId}`,
  });
}
await runner.awaitIdle();
clock.advance(15 * 60_000);
await runner.awaitIdle();

for (const { orderId } of orders) {
  const { state, pending, timers } = await runner.read(orderId);
  const why = state.reason === undefined ? "" : ` (${state.reason})`;
  console.log(
    `${orderId}: ${state.status}${why}; ${pending.length} sends, ${timers.length} timers left`,
  );
}
console.log(`Stock-tea: ${await stock.query("Stock-tea", (held) => held.length)} reserved`);
await runner.stop();
