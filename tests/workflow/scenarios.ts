// End-to-end fulfilment scenarios, run by memory.test.ts (in process) and messagedb.test.ts (a
// real PostgreSQL server): the saga runner and the simulated payment gateway as two pipelines
// over one store, a manual clock for the payment deadline. Every id is fresh, so scenarios can
// share a database with earlier runs.
import assert from "node:assert/strict";
import type { Batch } from "../../core/batch.ts";
import { createStateCache } from "../../core/decider.ts";
import type { StreamEvent } from "../../core/event.ts";
import { run, type StreamsSink, streamsSink } from "../../core/sink.ts";
import type { EventStore } from "../../core/store.ts";
import {
  type ManualClock,
  manualClock,
  type SagaInput,
  type SagaState,
  startWorkflow,
  workflowCategories,
  type WorkflowRunner,
} from "../../core/workflow.ts";
import {
  fulfilment,
  fulfilmentHandlers,
  type FulfilmentServices,
  fulfilmentServices,
  type Order,
  PAYMENT_TIMEOUT_MS,
} from "../../examples/fulfilment/fulfilment.ts";
import { type GatewayAnswer, gatewayHandler } from "../../examples/fulfilment/gateway.ts";
import { PAYMENT, paymentStream } from "../../examples/fulfilment/payment.ts";
import { shipmentStream } from "../../examples/fulfilment/shipping.ts";
import { stockStream } from "../../examples/fulfilment/stock.ts";

export const newId = (): string => crypto.randomUUID().replaceAll("-", "").slice(0, 12);

/** A store plus the feeds and waits the scenarios need. */
export interface FulfilmentBackend {
  readonly store: EventStore;
  /** A feed of `categories` for consumer `group`, positioned where the backend wants. */
  source(categories: readonly string[], group: string, signal: AbortSignal): ReadableStream<Batch>;
  /**
   * Resolves once every sink has handled everything written to its categories so far and the
   * timers are idle, with nothing new written meanwhile.
   */
  settle(
    sinks: readonly { sink: StreamsSink; categories: readonly string[] }[],
    idle: () => Promise<void>,
  ): Promise<void>;
}

/** What a scenario works with. */
export interface FulfilmentEnv {
  readonly runner: WorkflowRunner<SagaState<Order>, SagaInput<Order>>;
  readonly services: FulfilmentServices;
  readonly store: EventStore;
  readonly clock: ManualClock;
  /** The timers' category of this run. */
  readonly timerCategory: string;
  /** Fresh ids for SKUs and orders. */
  readonly sku: string;
  /** Places an order (the gateway will `answer` its payment); returns the order. */
  place(answer: GatewayAnswer, order?: Partial<Order>): Promise<Order>;
  /** Waits until the runner and the gateway have handled everything. */
  settle(): Promise<void>;
  /** The event types of `stream`. */
  types(stream: string): Promise<string[]>;
  /** The events of `stream`. */
  events(stream: string): Promise<StreamEvent[]>;
}

/** Runs the fulfilment runner and the gateway over `backend` around `scenario`. */
export async function withFulfilment(
  backend: FulfilmentBackend,
  scenario: (env: FulfilmentEnv) => Promise<void>,
): Promise<void> {
  const run_ = newId();
  const clock = manualClock(Date.parse("2026-03-01T12:00:00Z"));
  const store = backend.store;
  const services = fulfilmentServices(store, { cache: createStateCache() });
  const answers = new Map<string, GatewayAnswer>();
  const stop = new AbortController();
  const categories = workflowCategories(fulfilment);
  const timerCategory = `FulfilmentTimers${run_}`;
  const runner = startWorkflow(fulfilment, {
    store,
    clock,
    source: backend.source(categories, `fulfilment-${run_}`, stop.signal),
    handlers: fulfilmentHandlers(services),
    timers: { category: timerCategory, shards: 4 },
    sink: { retry: { initialDelayMs: 5, maxDelayMs: 50 } },
  });
  const gateway = streamsSink({
    group: `gateway-${run_}`,
    statsIntervalMs: 0,
    handler: gatewayHandler(services.payment, (orderId) => answers.get(orderId) ?? "capture"),
  });
  const gatewayRun = run(backend.source([PAYMENT], `gateway-${run_}`, stop.signal), gateway, {
    signal: stop.signal,
  });
  const sinks = [{ sink: runner.sink, categories }, { sink: gateway, categories: [PAYMENT] }];
  const settle = () => backend.settle(sinks, () => runner.timers.idle());
  let orders = 0;
  const sku = `sku${run_}`;
  try {
    // Both feeds positioned before anything is written.
    await Promise.all(sinks.map((s) => s.sink.monitor.awaitCompletion({ tail: true })));
    await services.stock.restock(sku, 10);
    await scenario({
      runner,
      services,
      store,
      clock,
      timerCategory,
      sku,
      async place(answer, extra = {}) {
        const order: Order = {
          orderId: `${run_}o${orders++}`,
          sku,
          quantity: 1,
          amount: 450,
          address: "1 Main St",
          ...extra,
        };
        answers.set(order.orderId, answer);
        await runner.handle(order.orderId, { type: "Start", data: order }, {
          id: `place-${order.orderId}`,
          correlationId: `req-${order.orderId}`,
        });
        return order;
      },
      settle,
      types: async (stream) => (await store.readStream(stream)).map((e) => e.type),
      events: (stream) => store.readStream(stream),
    });
    assert.deepEqual(runner.sink.stats().failing, [], "no stream kept failing");
    assert.equal(runner.timers.stats().failing, 0, "no timer kept failing");
  } finally {
    stop.abort();
    await Promise.all([runner.stop(), gatewayRun]);
  }
}

const sagaTypes = async (env: FulfilmentEnv, orderId: string) =>
  (await env.types(env.runner.streamOf(orderId))).filter((t) => !t.startsWith("Workflow"));

/** Reserve, capture, ship: completed, nothing pending, the stock taken. */
export async function completes(env: FulfilmentEnv): Promise<void> {
  const order = await env.place("capture");
  await env.settle();
  const instance = await env.runner.read(order.orderId);
  assert.equal(instance.state.status, "completed");
  assert.deepEqual(instance.pending, []);
  assert.deepEqual(instance.timers, []);
  assert.deepEqual(await sagaTypes(env, order.orderId), [
    "Started",
    "StepSucceeded",
    "StepSucceeded",
    "StepSucceeded",
    "Completed",
  ]);
  assert.deepEqual(instance.state.results.ship, { trackingId: `T-${order.orderId}` });
  assert.deepEqual(await env.types(paymentStream(order.orderId)), [
    "PaymentRequested",
    "PaymentCaptured",
  ]);
  assert.deepEqual(await env.types(shipmentStream(order.orderId)), ["Shipped"]);
  const stock = await env.services.stock.read(env.sku);
  assert.equal(stock.available, 9);
  assert.equal(stock.orders[order.orderId], "held");
}

/** A declined payment releases the reservation. */
export async function declinedPaymentReleases(env: FulfilmentEnv): Promise<void> {
  const order = await env.place("decline");
  await env.settle();
  const { state } = await env.runner.read(order.orderId);
  assert.equal(state.status, "compensated");
  assert.equal(state.reason, "pay: card declined");
  assert.deepEqual(await env.types(paymentStream(order.orderId)), [
    "PaymentRequested",
    "PaymentDeclined",
  ]);
  assert.deepEqual(await env.types(shipmentStream(order.orderId)), []);
  const stock = await env.services.stock.read(env.sku);
  assert.equal(stock.available, 10);
  assert.equal(stock.orders[order.orderId], "released");
}

/** No answer within the deadline: the timer fires once, the request is cancelled, stock released. */
export async function unpaidOrderTimesOut(env: FulfilmentEnv): Promise<void> {
  const order = await env.place("ignore");
  await env.settle();
  const waiting = await env.runner.read(order.orderId);
  assert.equal(waiting.state.status, "running");
  assert.equal(waiting.state.step, "pay");
  assert.deepEqual(waiting.timers.map((t) => [t.name, t.due - env.clock.now()]), [
    ["deadline", PAYMENT_TIMEOUT_MS],
  ]);
  env.clock.advance(PAYMENT_TIMEOUT_MS - 1);
  await env.settle();
  assert.equal((await env.runner.read(order.orderId)).state.status, "running", "not due yet");
  env.clock.advance(1);
  await env.settle();
  const { state, timers } = await env.runner.read(order.orderId);
  assert.equal(state.status, "compensated");
  assert.equal(state.reason, `pay: no outcome within ${PAYMENT_TIMEOUT_MS} ms`);
  assert.deepEqual(timers, []);
  assert.deepEqual(await env.types(paymentStream(order.orderId)), [
    "PaymentRequested",
    "PaymentCancelled",
  ]);
  assert.equal((await env.services.stock.read(env.sku)).orders[order.orderId], "released");
  const types = await env.types(env.runner.streamOf(order.orderId));
  assert.equal(types.filter((t) => t === "WorkflowTimerFired").length, 1);
  // The gateway answers late: the capture is refused, nothing else moves.
  await env.services.payment.capture(order.orderId);
  env.clock.advance(PAYMENT_TIMEOUT_MS);
  await env.settle();
  assert.deepEqual(await env.types(paymentStream(order.orderId)), [
    "PaymentRequested",
    "PaymentCancelled",
  ]);
  assert.deepEqual(await env.types(env.runner.streamOf(order.orderId)), types);
  assert.equal(env.runner.timers.stats().pending, 0);
}

/** Too few units: compensated at the first step, with nothing to undo. */
export async function outOfStock(env: FulfilmentEnv): Promise<void> {
  const order = await env.place("capture", { quantity: 11 });
  await env.settle();
  const { state } = await env.runner.read(order.orderId);
  assert.equal(state.status, "compensated");
  assert.equal(state.reason, "reserve: out of stock: 11 wanted, 10 free");
  assert.deepEqual(await env.types(paymentStream(order.orderId)), []);
  assert.deepEqual(await env.types(stockStream(env.sku)), ["Restocked", "ReservationRejected"]);
}

/** A refused shipment refunds the payment, then releases the stock. */
export async function refusedShipmentUndoesInReverse(env: FulfilmentEnv): Promise<void> {
  const order = await env.place("capture", { address: "" });
  await env.settle();
  const { state } = await env.runner.read(order.orderId);
  assert.equal(state.status, "compensated");
  assert.equal(state.reason, "ship: no address");
  const saga = (await env.events(env.runner.streamOf(order.orderId)))
    .filter((e) => e.type === "StepCompensated")
    .map((e) => (e.data as { step: string }).step);
  assert.deepEqual(saga, ["pay", "reserve"]);
  const refund = (await env.events(paymentStream(order.orderId))).at(-1)!;
  const release = (await env.events(stockStream(env.sku))).at(-1)!;
  assert.equal(refund.type, "PaymentRefunded");
  assert.equal(release.type, "Released");
  // Each carries the id of the send that caused it: the refund's was sent first.
  const seq = (e: StreamEvent) => Number(e.causationId!.split("#")[1]);
  assert.ok(
    seq(refund) < seq(release),
    `refund ${refund.causationId}, release ${release.causationId}`,
  );
}

/** The order's correlation id is on everything; causation ids name the sends. */
export async function correlationIsCarried(env: FulfilmentEnv): Promise<void> {
  const order = await env.place("capture");
  await env.settle();
  const correlation = `req-${order.orderId}`;
  const instance = env.runner.streamOf(order.orderId);
  const streams = [instance, paymentStream(order.orderId), shipmentStream(order.orderId)];
  for (const stream of streams) {
    for (const e of await env.events(stream)) {
      assert.equal(e.correlationId, correlation, `${stream}@${e.index} ${e.type}`);
    }
  }
  const reserved = (await env.events(stockStream(env.sku))).find((e) =>
    (e.data as { orderId?: string }).orderId === order.orderId
  )!;
  assert.equal(reserved.correlationId, correlation);
  assert.equal(reserved.causationId, `${instance}#0`);
  const [shipped] = await env.events(shipmentStream(order.orderId));
  const shipSend = (await env.events(instance)).find((e) =>
    e.type === "WorkflowSend" && (e.data as { type: string }).type === "Ship"
  )!;
  assert.equal(shipped.causationId, `${instance}#${(shipSend.data as { seq: number }).seq}`);
  // The capture came from the gateway: the saga's next step names it as its cause.
  const captured = (await env.events(paymentStream(order.orderId)))[1];
  assert.equal(shipSend.causationId, `${paymentStream(order.orderId)}@${captured.index}`);
}

/** Twelve orders for ten units at once: exactly ten go through, none oversold. */
export async function concurrentOrdersNeverOversell(env: FulfilmentEnv): Promise<void> {
  const orders = await Promise.all(Array.from({ length: 12 }, () => env.place("capture")));
  await env.settle();
  const statuses = await Promise.all(
    orders.map(async (o) => (await env.runner.read(o.orderId)).state.status),
  );
  assert.equal(statuses.filter((s) => s === "completed").length, 10);
  assert.equal(statuses.filter((s) => s === "compensated").length, 2);
  const stock = await env.services.stock.read(env.sku);
  assert.equal(stock.available, 0);
  assert.equal(Object.keys(stock.held).length, 10);
}

/** An input without a correlation id (a capture by hand) joins the instance's correlation. */
export async function uncorrelatedInputJoinsInstance(env: FulfilmentEnv): Promise<void> {
  const order = await env.place("ignore");
  await env.settle();
  await env.services.payment.capture(order.orderId);
  await env.settle();
  assert.equal((await env.runner.read(order.orderId)).state.status, "completed");
  const [shipped] = await env.events(shipmentStream(order.orderId));
  assert.equal(shipped.correlationId, `req-${order.orderId}`);
}
