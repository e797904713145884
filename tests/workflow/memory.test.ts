// Workflows end to end on the memory store: the fulfilment scenarios, and the runtime's
// guarantees shown the way they break (a re-delivered input, a crash between a send and its
// record, a timer fired by two runners, a restart between setting a timer and its firing).
import assert from "node:assert/strict";
import { configure, type LogRecord, reset } from "@logtape/logtape";
import { memoryCheckpoints } from "../../checkpoints/memory.ts";
import { createCodec } from "../../core/codec.ts";
import { createDecider } from "../../core/decider.ts";
import { InvalidArgumentError } from "../../core/errors.ts";
import {
  defineSaga,
  defineWorkflow,
  deliveryOptions,
  InvalidWorkflowDecisionError,
  manualClock,
  MissingSendHandlerError,
  type SendHandler,
  startWorkflow,
  stepCompensated,
  stepSucceeded,
  UnknownStepError,
  workflowCategories,
  workflowClient,
} from "../../core/workflow.ts";
import {
  fulfilment,
  fulfilmentHandlers,
  fulfilmentServices,
  type Order,
  PAYMENT_TIMEOUT_MS,
} from "../../examples/fulfilment/fulfilment.ts";
import { createMemoryStore, memorySource, type MemoryStore } from "../../sources/memory.ts";
import {
  completes,
  concurrentOrdersNeverOversell,
  correlationIsCarried,
  declinedPaymentReleases,
  type FulfilmentBackend,
  outOfStock,
  refusedShipmentUndoesInReverse,
  uncorrelatedInputJoinsInstance,
  unpaidOrderTimesOut,
  withFulfilment,
} from "./scenarios.ts";

function memoryBackend(store: MemoryStore = createMemoryStore()): FulfilmentBackend {
  const checkpoints = memoryCheckpoints();
  return {
    store,
    source: (categories, group) => memorySource({ store, categories, checkpoints, group }),
    async settle(sinks, idle) {
      for (;;) {
        const head = store.head;
        for (const { sink } of sinks) {
          await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 10_000 });
        }
        await idle();
        await new Promise((resolve) => setTimeout(resolve, 0));
        if (store.head === head) return;
      }
    },
  };
}

const scenario = (fn: Parameters<typeof withFulfilment>[1]) => () =>
  withFulfilment(memoryBackend(), fn);

Deno.test("workflow on memory: reserve, pay, ship completes the order", scenario(completes));
Deno.test(
  "workflow on memory: a declined payment releases the reservation",
  scenario(declinedPaymentReleases),
);
Deno.test(
  "workflow on memory: an unpaid order times out once, cancels the payment and releases the stock",
  scenario(unpaidOrderTimesOut),
);
Deno.test("workflow on memory: out of stock compensates at once", scenario(outOfStock));
Deno.test(
  "workflow on memory: a refused shipment refunds, then releases (reverse order)",
  scenario(refusedShipmentUndoesInReverse),
);
Deno.test(
  "workflow on memory: correlation and causation ids are carried to every service",
  scenario(correlationIsCarried),
);
Deno.test(
  "workflow on memory: an input without correlation id joins the instance's",
  scenario(uncorrelatedInputJoinsInstance),
);
Deno.test(
  "workflow on memory: concurrent orders of one SKU never oversell",
  scenario(concurrentOrdersNeverOversell),
);

// A workflow whose target is not idempotent by design: every Increment appends, so only the
// send's idempotency key can keep a re-send from counting twice.
type Tally = { type: "Added"; data: { n: number } };
type TallyInput = { type: "Add"; data: { n: number } } | {
  type: "Counted";
  data: { total: number };
};
type Increment = { type: "Increment"; data: { n: number } };
const tally = defineWorkflow<Tally, number, TallyInput, Increment>({
  category: "Tally",
  codec: createCodec<Tally>({ Added: {} }),
  initial: 0,
  fold: (total, events) => events.reduce((t, e) => t + e.data.n, total),
  decide: (_, input) =>
    input.type === "Add"
      ? {
        events: [{ type: "Added", data: input.data }],
        sends: [{ to: "Counter-1", type: "Increment", data: input.data }],
      }
      : {},
});
type Counted = { type: "Incremented"; data: { n: number } };
const counterOf = (store: MemoryStore) =>
  createDecider<Counted, number>({
    store,
    codec: createCodec<Counted>({ Incremented: {} }),
    initial: 0,
    fold: (t, events) => events.reduce((s, e) => s + e.data.n, t),
  });

async function crashAfterEffect(keyed: boolean) {
  const store = createMemoryStore();
  const counter = counterOf(store);
  const calls: string[] = [];
  const increment: SendHandler<TallyInput, Increment> = async (send, { attempt }) => {
    calls.push(send.id);
    await counter.transact(
      send.to,
      () => [{ type: "Incremented", data: send.data }],
      keyed ? deliveryOptions(send) : {},
    );
    // The process dies after the effect, before the delivery is recorded.
    if (attempt === 1) throw new Error("crashed after the effect");
  };
  const runner = startWorkflow(tally, {
    store,
    source: memorySource({ store, categories: workflowCategories(tally) }),
    handlers: { Increment: increment },
    sink: { retry: { initialDelayMs: 1, maxDelayMs: 5 } },
  });
  try {
    await runner.handle("t1", { type: "Add", data: { n: 5 } });
    await runner.awaitIdle();
    return {
      calls,
      counted: await counter.query("Counter-1", (t) => t),
      pending: (await runner.read("t1")).pending.length,
    };
  } finally {
    await runner.stop();
  }
}

Deno.test("workflow: a crash between a send and its record re-sends; the key makes it count once", async () => {
  const keyed = await crashAfterEffect(true);
  assert.deepEqual(keyed.calls, ["Tally-t1#0", "Tally-t1#0"], "sent twice");
  assert.equal(keyed.counted, 5, "applied once");
  assert.equal(keyed.pending, 0);
  // The same crash with a handler that drops the key: the target counts it twice.
  const unkeyed = await crashAfterEffect(false);
  assert.equal(unkeyed.counted, 10);
});

Deno.test("workflow: re-delivered inputs are no-ops (a second runner replays the whole log)", async () => {
  const store = createMemoryStore();
  const clock = manualClock(0);
  const services = fulfilmentServices(store);
  await services.stock.restock("tea", 5);
  const calls: string[] = [];
  const handlers = Object.fromEntries(
    Object.entries(fulfilmentHandlers(services)).map((
      [type, h],
    ) => [type, (send: never, ctx: never) => {
      calls.push(`${type} ${(send as { id: string }).id}`);
      return (h as (s: never, c: never) => unknown)(send, ctx);
    }]),
  ) as unknown as ReturnType<typeof fulfilmentHandlers>;
  const start = () =>
    startWorkflow(fulfilment, {
      store,
      clock,
      source: memorySource({ store, categories: workflowCategories(fulfilment) }),
      handlers,
    });
  const first = start();
  const orders: Order[] = ["o1", "o2", "o3"].map((orderId) => ({
    orderId,
    sku: "tea",
    quantity: 1,
    amount: 100,
    address: orderId === "o3" ? "" : "1 Main St",
  }));
  for (const o of orders) {
    await first.handle(o.orderId, { type: "Start", data: o }, { id: `place-${o.orderId}` });
  }
  await first.awaitIdle();
  await services.payment.capture("o1");
  await services.payment.decline("o2", "no funds");
  await services.payment.capture("o3");
  await first.awaitIdle();
  // The same commands again, as a client retrying after lost replies.
  for (const o of orders) {
    const again = await first.handle(o.orderId, { type: "Start", data: o }, {
      id: `place-${o.orderId}`,
    });
    assert.equal(again.duplicate, true);
  }
  await first.stop();
  const statuses = await Promise.all(
    orders.map(async (o) => (await first.read(o.orderId)).state.status),
  );
  assert.deepEqual(statuses, ["completed", "compensated", "compensated"]);
  const head = store.head, sent = calls.length;
  // No checkpoints: the second runner is handed every event ever written, from the start.
  const second = start();
  await second.awaitIdle();
  await second.stop();
  assert.equal(store.head, head, "nothing appended");
  assert.equal(calls.length, sent, "nothing sent again");
  assert.ok(second.sink.stats().counters.handled >= head - 20, "the log was handled again");
});

Deno.test("workflow: a timer set before a restart fires once after it, and never again", async () => {
  const store = createMemoryStore();
  const clock = manualClock(0);
  const checkpoints = memoryCheckpoints();
  const services = fulfilmentServices(store);
  await services.stock.restock("tea", 5);
  const start = () =>
    startWorkflow(fulfilment, {
      store,
      clock,
      source: memorySource({
        store,
        checkpoints,
        group: "f",
        categories: workflowCategories(fulfilment),
      }),
      handlers: fulfilmentHandlers(services),
      sink: { commitIntervalMs: 5 },
    });
  const first = start();
  const order = { orderId: "o1", sku: "tea", quantity: 1, amount: 100, address: "x" };
  await first.handle("o1", { type: "Start", data: order });
  await first.awaitIdle();
  assert.equal(first.timers.stats().pending, 1);
  await first.stop();
  clock.advance(PAYMENT_TIMEOUT_MS);
  // The second runner starts past the checkpoint: only the timers' shards know of the timer.
  const second = start();
  await second.awaitIdle();
  assert.equal((await second.read("o1")).state.status, "compensated");
  assert.equal(second.timers.stats().fired, 1);
  await second.stop();
  const third = start();
  clock.advance(PAYMENT_TIMEOUT_MS);
  await third.awaitIdle();
  assert.equal(third.timers.stats().fired, 0, "removed from its shard once fired");
  await third.stop();
  const fired = (await store.readStream("Fulfilment-o1")).filter((e) =>
    e.type === "WorkflowTimerFired"
  );
  assert.equal(fired.length, 1);
});

Deno.test("workflow: two runners over one store (duplicate dispatch, duplicate timer fires): every effect once", async () => {
  const store = createMemoryStore();
  const clock = manualClock(0);
  const services = fulfilmentServices(store);
  await services.stock.restock("tea", 100);
  // As two processes would: each its own store object over the same data (one process refuses
  // a second runner of a category over one store object).
  const connection = (): MemoryStore =>
    new Proxy(store, {
      get: (target, key) => {
        const value = Reflect.get(target, key, target);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
  const runners = [1, 2].map(() =>
    startWorkflow(fulfilment, {
      store: connection(),
      clock,
      source: memorySource({ store, categories: workflowCategories(fulfilment) }),
      handlers: fulfilmentHandlers(services),
      sink: { retry: { initialDelayMs: 1, maxDelayMs: 10 } },
    })
  );
  const ids = Array.from({ length: 30 }, (_, i) => `o${i}`);
  await Promise.all(ids.map((orderId, i) =>
    runners[i % 2].handle(orderId, {
      type: "Start",
      data: { orderId, sku: "tea", quantity: 1, amount: 100, address: "x" },
    })
  ));
  const idle = async () => {
    for (let i = 0; i < 3; i++) for (const r of runners) await r.awaitIdle();
  };
  await idle();
  for (const [i, id] of ids.entries()) {
    if (i % 3 === 0) await services.payment.capture(id);
    if (i % 3 === 1) await services.payment.decline(id, "no");
  }
  await idle();
  clock.advance(PAYMENT_TIMEOUT_MS);
  await idle();
  const fires = runners.reduce((n, r) => n + r.timers.stats().fired, 0);
  assert.ok(fires >= 10, `both runners fire the unpaid orders' timers (${fires} fires)`);
  for (const [i, id] of ids.entries()) {
    const types = (await store.readStream(`Fulfilment-${id}`)).map((e) => e.type);
    const count = (t: string) => types.filter((x) => x === t).length;
    assert.equal(count("WorkflowTimerFired"), i % 3 === 2 ? 1 : 0, id);
    assert.equal(count("StepSucceeded") + count("StepFailed"), i % 3 === 0 ? 3 : 2, id);
    assert.equal(count("Completed") + count("Compensated"), 1, id);
    const payment = (await store.readStream(`Payment-${id}`)).map((e) => e.type);
    assert.equal(payment.filter((t) => t === "PaymentRequested").length, 1, id);
    assert.ok(payment.filter((t) => t === "PaymentCancelled").length <= 1, id);
    assert.equal((await store.readStream(`Shipment-${id}`)).length, i % 3 === 0 ? 1 : 0, id);
  }
  const stock = await services.stock.read("tea");
  assert.equal(stock.available, 90);
  const counts = new Map<string, number>();
  for (const e of await store.readStream("Stock-tea")) {
    const key = `${e.type} ${(e.data as { orderId?: string }).orderId}`;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  assert.ok([...counts.values()].every((n) => n === 1), "each reservation and release once");
  await Promise.all(runners.map((r) => r.stop()));
});

Deno.test("workflow: decisions and sends are logged with their correlation and causation ids", async () => {
  const records: LogRecord[] = [];
  await configure({
    reset: true,
    sinks: { buffer: (r) => void records.push(r) },
    loggers: [
      { category: ["impel", "workflow"], lowestLevel: "debug", sinks: ["buffer"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: [] },
    ],
  });
  try {
    const store = createMemoryStore();
    const counter = counterOf(store);
    const runner = startWorkflow(tally, {
      store,
      source: memorySource({ store, categories: workflowCategories(tally) }),
      handlers: {
        Increment: async (send) => {
          await counter.transact(
            send.to,
            () => [{ type: "Incremented", data: send.data }],
            deliveryOptions(send),
          );
        },
      },
    });
    await runner.handle("t1", { type: "Add", data: { n: 1 } }, {
      id: "cmd-1",
      correlationId: "req-42",
    });
    await runner.awaitIdle();
    await runner.stop();
    const traced = records.filter((r) => r.properties.correlationId === "req-42");
    assert.ok(
      traced.some((r) => r.properties.causationId === "cmd-1" && r.properties.input === "Add"),
    );
    assert.ok(
      traced.some((r) => r.properties.sendId === "Tally-t1#0" && r.properties.to === "Counter-1"),
    );
  } finally {
    await reset();
  }
});

Deno.test("workflow: bad input is refused with typed errors naming what was wrong", async () => {
  const store = createMemoryStore();
  const client = workflowClient(tally, { store });
  await assert.rejects(client.handle("", { type: "Add", data: { n: 1 } }), InvalidArgumentError);
  await assert.rejects(
    client.handle("t1", { data: 1 } as never),
    /input must be a \{ type, data \}/,
  );
  await assert.rejects(
    client.handle("t1", { type: "Add", data: { n: 1 } }, { correlationId: "" }),
    /correlationId must be a non-empty string/,
  );
  const broken = (decide: () => unknown) =>
    workflowClient(defineWorkflow({ ...tally, decide } as never), { store });
  for (
    const [decide, message] of [
      [() => [], /decide must return/],
      [
        () => ({ sends: [{ type: "Increment", data: {} }] }),
        /sends\[0\]\.to must be a non-empty string/,
      ],
      [() => ({ events: [{ type: "WorkflowSend", data: {} }] }), /runtime's type WorkflowSend/],
      [
        () => ({ timers: [{ name: "t", input: { type: "X", data: null } }] }),
        /timers\[0\] needs afterMs/,
      ],
      [() => ({ timers: [{ name: "t", afterMs: 5, input: "x" }] }), /timers\[0\]\.input must be/],
      [() => ({ cancelTimers: [3] }), /cancelTimers\[0\] must be a string/],
    ] as const
  ) {
    await assert.rejects(
      broken(decide).handle("b1", { type: "Add", data: { n: 1 } }),
      (e) => e instanceof InvalidWorkflowDecisionError && message.test(e.message),
    );
  }
  assert.deepEqual(await store.readStream("Tally-b1"), [], "nothing appended");
  // A runner knows its handlers: a send nobody delivers is refused before it is recorded.
  const runner = startWorkflow(tally, {
    store,
    source: memorySource({ store, categories: workflowCategories(tally) }),
    handlers: {} as never,
  });
  await assert.rejects(
    runner.handle("t2", { type: "Add", data: { n: 1 } }),
    (e) => e instanceof InvalidWorkflowDecisionError && /no handler delivers/.test(e.message),
  );
  // One recorded by a client with no such check fails its stream, loudly, until handled.
  await client.handle("t3", { type: "Add", data: { n: 1 } });
  for (let i = 0; i < 200 && runner.sink.stats().failing.length === 0; i++) {
    await new Promise((r) => setTimeout(r, 5));
  }
  const [failing] = runner.sink.stats().failing;
  assert.equal(failing?.stream, "Tally-t3");
  assert.ok(failing.error instanceof MissingSendHandlerError);
  await runner.stop();
  assert.throws(
    () =>
      startWorkflow(tally, {
        store,
        source: memorySource({ store }),
        handlers: { Increment: 5 } as never,
      }),
    (e) => e instanceof InvalidArgumentError && e.field === "handlers.Increment",
  );
  assert.throws(
    () => startWorkflow(tally, { store, source: {} as never, handlers: {} as never }),
    (e) => e instanceof InvalidArgumentError && e.field === "source",
  );
  assert.throws(
    () =>
      startWorkflow(tally, {
        store,
        source: memorySource({ store }),
        handlers: {} as never,
        timers: { category: "Tally" },
      }),
    (e) => e instanceof InvalidArgumentError && e.field === "timers.category",
  );
});

Deno.test("workflow: a route that returns garbage fails its stream, others carry on", async () => {
  const store = createMemoryStore();
  const routed = defineWorkflow({
    ...tally,
    routes: [{
      category: "Deposit",
      route: (stream: string, e: { data: unknown }) =>
        stream === "Deposit-bad" ? 42 : { id: "t1", input: { type: "Add", data: e.data } },
    }],
  } as never) as typeof tally;
  const counter = counterOf(store);
  const runner = startWorkflow(routed, {
    store,
    source: memorySource({ store, categories: workflowCategories(routed) }),
    handlers: {
      Increment: async (send) => {
        await counter.transact(
          send.to,
          () => [{ type: "Incremented", data: send.data }],
          deliveryOptions(send),
        );
      },
    },
    sink: { retry: { initialDelayMs: 1, maxDelayMs: 5 } },
  });
  await store.append("Deposit-bad", [{ type: "Deposited", data: { n: 1 } }], 0);
  await store.append("Deposit-good", [{ type: "Deposited", data: { n: 2 } }], 0);
  for (let i = 0; i < 200 && (await counter.query("Counter-1", (t) => t)) !== 2; i++) {
    await new Promise((r) => setTimeout(r, 5));
  }
  assert.equal(await counter.query("Counter-1", (t) => t), 2);
  for (let i = 0; i < 200 && runner.sink.stats().failing.length === 0; i++) {
    await new Promise((r) => setTimeout(r, 5));
  }
  const [failing] = runner.sink.stats().failing;
  assert.equal(failing?.stream, "Deposit-bad");
  assert.match(String(failing.error), /must return \{ id, input \} or undefined, got 42/);
  await runner.stop();
});

// ---- a compensation never takes effect before its action (review of issue 18, defect 1) -------

type Checkout = { orderId: string };
type CheckoutMessage = { type: "Charge"; data: Checkout } | { type: "Refund"; data: Checkout };
const checkout = (timeoutMs?: number) =>
  defineSaga<Checkout, CheckoutMessage>({
    category: "Checkout",
    steps: [{
      name: "charge",
      ...(timeoutMs === undefined ? {} : { timeoutMs }),
      action: (o) => ({ to: `Card-${o.orderId}`, type: "Charge", data: o }),
      compensation: (o) => ({ to: `Refund-${o.orderId}`, type: "Refund", data: o }),
    }],
  });

Deno.test("workflow: a Cancel withdraws the undelivered action; its compensation (another target) never runs before it", async () => {
  const saga = checkout();
  const store = createMemoryStore();
  const client = workflowClient(saga, { store });
  await client.handle("o1", { type: "Start", data: { orderId: "o1" } }, { id: "start" });
  await client.handle("o1", { type: "Cancel", data: { reason: "customer" } }, { id: "cancel" });
  assert.deepEqual((await client.read("o1")).pending.map((p) => p.type), ["Refund"]);
  const effects: string[] = [];
  const runner = startWorkflow(saga, {
    store,
    source: memorySource({ store, categories: workflowCategories(saga) }),
    handlers: {
      Charge: async () => {
        await new Promise((r) => setTimeout(r, 30));
        effects.push("charged");
        return stepSucceeded("charge");
      },
      Refund: () => {
        effects.push("refunded");
        return stepCompensated("charge");
      },
    },
  });
  try {
    await runner.awaitIdle({ timeoutMs: 5_000 });
    assert.deepEqual(effects, ["refunded"]);
    assert.equal((await runner.read("o1")).state.status, "compensated");
  } finally {
    await runner.stop();
  }
});

Deno.test("workflow: a deadline while the action's handler fails withdraws the action: no charge after the refund", async () => {
  const saga = checkout(1_000);
  const store = createMemoryStore();
  const clock = manualClock(0);
  const effects: string[] = [];
  let down = true;
  const runner = startWorkflow(saga, {
    store,
    clock,
    source: memorySource({ store, categories: workflowCategories(saga) }),
    handlers: {
      Charge: () => {
        if (down) throw new Error("card service down");
        effects.push("charged");
        return stepSucceeded("charge");
      },
      Refund: () => {
        effects.push("refunded");
        return stepCompensated("charge");
      },
    },
    sink: { statsIntervalMs: 0, retry: { initialDelayMs: 20, maxDelayMs: 20 } },
  });
  try {
    await runner.handle("o1", { type: "Start", data: { orderId: "o1" } });
    await new Promise((r) => setTimeout(r, 60));
    clock.advance(1_500);
    await new Promise((r) => setTimeout(r, 150));
    down = false;
    await new Promise((r) => setTimeout(r, 150));
    const instance = await runner.read("o1");
    assert.deepEqual(effects, ["refunded"]);
    assert.equal(instance.state.status, "compensated");
    assert.deepEqual(instance.pending, []);
  } finally {
    await runner.stop();
  }
});

Deno.test("workflow: idempotencyWindow sets how many input ids an instance remembers", async () => {
  type E = { type: "Added"; data: { n: number } };
  type I = { type: "Add"; data: { n: number } };
  const tally = defineWorkflow<E, number, I, never>({
    category: "Tally",
    codec: createCodec<E>({ Added: {} }),
    initial: 0,
    fold: (s, es) => es.reduce((a, e) => a + e.data.n, s),
    decide: (_, i) => ({ events: [{ type: "Added", data: i.data }] }),
  });
  const add = { type: "Add", data: { n: 1 } } as const;
  const client = workflowClient(tally, { store: createMemoryStore(), idempotencyWindow: 200 });
  for (let k = 1; k <= 101; k++) await client.handle("t1", add, { id: `payment-${k}` });
  const again = await client.handle("t1", add, { id: "payment-1" });
  assert.equal(again.duplicate, true);
  assert.equal(again.state, 101);
  assert.throws(
    () => workflowClient(tally, { store: createMemoryStore(), idempotencyWindow: 0 }),
    InvalidArgumentError,
  );
});

Deno.test("workflow: a timer whose firing keeps failing fails its stream: sink stats show it, a fault policy faults", async () => {
  type E = { type: "Waiting"; data: Record<string, never> };
  type I = { type: "Begin"; data: null } | { type: "Expired"; data: null };
  type M = { type: "Notify"; data: null };
  const hold = defineWorkflow<E, string, I, M>({
    category: "Hold",
    codec: createCodec<E>({ Waiting: {} }),
    initial: "new",
    fold: (s, es) => es.length ? "waiting" : s,
    decide: (s, i) =>
      i.type === "Begin" && s === "new"
        ? {
          events: [{ type: "Waiting", data: {} }],
          timers: [{ name: "t", afterMs: 1_000, input: { type: "Expired", data: null } }],
        }
        // A typo: no handler delivers it, so the timer's decision is refused every time.
        : i.type === "Expired"
        ? { sends: [{ to: "X-1", type: "Nottify" as "Notify", data: null }] }
        : {},
  });
  for (const failure of [undefined, { kind: "fault", maxAttempts: 1 } as const]) {
    const store = createMemoryStore();
    const clock = manualClock(0);
    const runner = startWorkflow(hold, {
      store,
      clock,
      source: memorySource({ store, categories: workflowCategories(hold) }),
      handlers: { Notify: () => {} },
      sink: { statsIntervalMs: 0, retry: { initialDelayMs: 10, maxDelayMs: 10 }, failure },
    });
    let faulted: unknown;
    runner.running.catch((error) => faulted = error);
    await runner.handle("h1", { type: "Begin", data: null });
    await runner.awaitIdle({ timeoutMs: 5_000 });
    clock.advance(2_000);
    await new Promise((r) => setTimeout(r, 200));
    if (failure === undefined) {
      const failing = runner.sink.stats().failing;
      assert.equal(failing.length, 1, JSON.stringify(failing));
      assert.equal(failing[0].stream, "Hold-h1");
      await runner.stop().catch(() => {});
    } else {
      assert.ok(faulted instanceof Error, "the runner faulted");
      assert.match(String(faulted), /Nottify/);
      await runner.stop().catch(() => {});
    }
  }
});

Deno.test("workflow: an outcome naming a step the saga does not have is refused (UnknownStepError), and fails its stream", async () => {
  type O = { id: string };
  type M = { type: "Ship"; data: O };
  const saga = defineSaga<O, M>({
    category: "Deliv",
    steps: [{ name: "ship", action: (o) => ({ to: `Ship-${o.id}`, type: "Ship", data: o }) }],
  });
  const client = workflowClient(saga, { store: createMemoryStore() });
  await client.handle("o0", { type: "Start", data: { id: "o0" } });
  await assert.rejects(
    () => client.handle("o0", stepSucceeded("shipping")),
    (e) => e instanceof UnknownStepError && e.step === "shipping" && e.code === "UnknownStep",
  );
  const store = createMemoryStore();
  const runner = startWorkflow(saga, {
    store,
    source: memorySource({ store, categories: workflowCategories(saga) }),
    handlers: { Ship: () => stepSucceeded("shipping") }, // a typo
    sink: { statsIntervalMs: 0, retry: { initialDelayMs: 10, maxDelayMs: 10 } },
  });
  try {
    await runner.handle("o1", { type: "Start", data: { id: "o1" } });
    await new Promise((r) => setTimeout(r, 100));
    const failing = runner.sink.stats().failing;
    assert.equal(failing.length, 1);
    assert.equal(failing[0].stream, "Deliv-o1");
    assert.ok(failing[0].error instanceof UnknownStepError);
  } finally {
    await runner.stop().catch(() => {});
  }
});
