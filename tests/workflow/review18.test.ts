// Findings of a new user's trial (issue 18), each on the memory store and on MessageDB (IMPEL_PG_URL):
// a compensation whose handler hangs past its deadline, a runner over a source with its own
// consumer group, bad steps in the background made visible, and awaitIdle saying why.
// @ts-types="@types/pg"
import pg from "pg";
import assert from "node:assert/strict";
import { configure, type LogRecord, reset } from "@logtape/logtape";
import { initPostgresCheckpoints, postgresCheckpoints } from "../../checkpoints/postgres.ts";
import type { Batch } from "../../core/batch.ts";
import type { EventStore } from "../../core/store.ts";
import { createCodec } from "../../core/codec.ts";
import { createDecider } from "../../core/decider.ts";
import { InvalidArgumentError } from "../../core/errors.ts";
import {
  AwaitIdleTimeoutError,
  defineSaga,
  type Delivery,
  deliveryOptions,
  InvalidSagaInputError,
  InvalidWorkflowDecisionError,
  manualClock,
  SagaStepError,
  type SendHandlers,
  startWorkflow,
  stepCompensated,
  stepFailed,
  stepSucceeded,
  workflowCategories,
  type WorkflowRunner,
} from "../../core/workflow.ts";
import type { SagaInput, SagaState, SagaStep } from "../../core/saga.ts";
import { messageDbSource } from "../../sources/messagedb.ts";
import { createMemoryStore, memorySource } from "../../sources/memory.ts";
import { messageDbStore } from "../../stores/messagedb.ts";
import { url } from "../support/postgres.ts";

type Order = { orderId: string };
type Message =
  | { type: "Reserve"; data: Order }
  | { type: "Release"; data: Order }
  | { type: "Charge"; data: Order }
  | { type: "Refund"; data: Order }
  | { type: "Ship"; data: Order };

/** A store and sources over it; `pool` when it is MessageDB. */
interface Backend {
  readonly name: string;
  readonly store: EventStore;
  source(categories: readonly string[], group?: string): ReadableStream<Batch>;
  readonly pool?: pg.Pool;
}

const unique = () => crypto.randomUUID().replaceAll("-", "").slice(0, 10);

function orderSteps(compensationTimeoutMs = 500): SagaStep<Order, Message>[] {
  return [
    {
      name: "reserve",
      action: (o) => ({ to: `Inventory-${o.orderId}`, type: "Reserve", data: o }),
      compensation: (o) => ({ to: `Inventory-${o.orderId}`, type: "Release", data: o }),
    },
    {
      name: "pay",
      action: (o) => ({ to: `Payment-${o.orderId}`, type: "Charge", data: o }),
      compensation: (o) => ({ to: `Payment-${o.orderId}`, type: "Refund", data: o }),
      compensationTimeoutMs,
    },
    { name: "ship", action: (o) => ({ to: `Shipping-${o.orderId}`, type: "Ship", data: o }) },
  ];
}

const orders = (category: string) => defineSaga<Order, Message>({ category, steps: orderSteps() });

/** Resolves once `check` holds, polling; rejects naming `what` after `ms`. */
async function eventually(
  what: string,
  check: () => boolean | Promise<boolean>,
  ms = 10_000,
) {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function withBackend(kind: "memory" | "messagedb", fn: (b: Backend) => Promise<void>) {
  if (kind === "memory") {
    const store = createMemoryStore();
    return await fn({
      name: "memory",
      store,
      source: (categories, group) => memorySource({ store, categories: [...categories], group }),
    });
  }
  const pool = new pg.Pool({
    connectionString: url,
    max: 8,
    options: "-c search_path=message_store,public",
  });
  pool.on("error", () => {});
  try {
    await initPostgresCheckpoints(pool);
    const checkpoints = postgresCheckpoints(pool);
    await fn({
      name: "MessageDB",
      store: messageDbStore(pool),
      pool,
      source: (categories, group) =>
        messageDbSource({
          client: pool,
          categories: [...categories],
          group: group ?? `g${unique()}`,
          checkpoints,
          tailSleepMs: 20,
        }),
    });
  } finally {
    await pool.end();
  }
}

// pg keeps sockets and timers of its pool until `end`, which each test awaits.
const both = (name: string, fn: (b: Backend) => Promise<void>) => {
  for (const kind of ["memory", "messagedb"] as const) {
    Deno.test({
      name: `${name} (${kind})`,
      sanitizeOps: false,
      sanitizeResources: false,
      fn: () => withBackend(kind, fn),
    });
  }
};

const status = async (runner: WorkflowRunner<SagaState<Order>, SagaInput<Order>>, id: string) =>
  (await runner.read(id)).state;

both(
  "a compensation whose handler hangs past its deadline counts as failed; the next one runs, stop is prompt",
  async (b) => {
    const saga = orders(`Hang${unique()}`);
    const clock = manualClock(0);
    const calls: string[] = [];
    let refundSignal: AbortSignal | undefined;
    const handlers: SendHandlers<SagaInput<Order>, Message> = {
      Reserve: () => stepSucceeded("reserve"),
      Release: () => {
        calls.push("Release");
        return stepCompensated("reserve");
      },
      Charge: () => stepSucceeded("pay"),
      Refund: (_send, context) => {
        calls.push("Refund");
        refundSignal = context.signal;
        return new Promise(() => {}); // never settles, whatever its signal says
      },
      Ship: () => stepFailed("ship", "no address"),
    };
    const runner = startWorkflow(saga, {
      store: b.store,
      clock,
      source: b.source(workflowCategories(saga)),
      handlers,
    });
    try {
      await runner.handle("o1", { type: "Start", data: { orderId: "o1" } });
      await eventually("the Refund handler is called", () => calls.includes("Refund"));
      assert.equal((await status(runner, "o1")).status, "compensating");
      clock.advance(600);
      await eventually(
        "the saga ends after the Refund's deadline",
        async () => (await status(runner, "o1")).status === "failed",
      );
      const state = await status(runner, "o1");
      assert.match(state.reason ?? "", /pay: compensation not confirmed within 500 ms/);
      assert.deepEqual(calls, ["Refund", "Release"]);
      assert.equal(refundSignal?.aborted, true, "the abandoned call's signal is aborted");
      assert.deepEqual((await runner.read("o1")).pending, []);
    } finally {
      const started = Date.now();
      await runner.stop();
      assert.ok(Date.now() - started < 3_000, `stop took ${Date.now() - started} ms`);
    }
  },
);

both(
  "a runner over a source with its own consumer group reads and commits as that group",
  async (b) => {
    const saga = orders(`Grp${unique()}`);
    const group = `order-saga-${unique()}`;
    const runner = startWorkflow(saga, {
      store: b.store,
      source: b.source(workflowCategories(saga), group),
      handlers: {
        Reserve: () => stepSucceeded("reserve"),
        Release: () => stepCompensated("reserve"),
        Charge: () => stepSucceeded("pay"),
        Refund: () => stepCompensated("pay"),
        Ship: () => stepSucceeded("ship"),
      },
    });
    try {
      await runner.handle("o1", { type: "Start", data: { orderId: "o1" } });
      await eventually(
        "the order completes",
        async () => (await status(runner, "o1")).status === "completed",
      );
    } finally {
      await runner.stop();
    }
    if (b.pool !== undefined) {
      const { rows } = await b.pool.query(
        "SELECT count(*)::int AS n FROM impel.checkpoints WHERE consumer_group = $1",
        [group],
      );
      assert.ok(rows[0].n > 0, `checkpoints kept under ${group}`);
    }
  },
);

Deno.test("awaitIdle names the failing stream, its attempts and its error when it times out", async () => {
  const saga = orders("Idle");
  const store = createMemoryStore();
  const runner = startWorkflow(saga, {
    store,
    source: memorySource({ store, categories: workflowCategories(saga) }),
    handlers: {
      Reserve: () => stepSucceeded("reserve"),
      Release: () => stepCompensated("reserve"),
      Charge: () => stepSucceeded("reserv"), // a typo: the stream fails with UnknownStepError
      Refund: () => stepCompensated("pay"),
      Ship: () => stepSucceeded("ship"),
    },
    sink: { statsIntervalMs: 0, retry: { initialDelayMs: 10, maxDelayMs: 50 } },
  });
  try {
    await runner.handle("o1", { type: "Start", data: { orderId: "o1" } });
    await assert.rejects(runner.awaitIdle({ timeoutMs: 500 }), (e) => {
      assert.ok(e instanceof AwaitIdleTimeoutError, String(e));
      assert.equal(e.code, "Timeout");
      assert.match(e.message, /awaitIdle took over 500 ms; failing: Idle-o1 \(\d+ attempts?\)/);
      assert.match(e.message, /UnknownStepError: saga Idle has no step "reserv"/);
      assert.equal(e.failing[0]?.stream, "Idle-o1");
      return true;
    });
  } finally {
    await runner.stop();
  }
});

Deno.test("awaitIdle rejects at once with the runner's failure when running has rejected", async () => {
  const saga = orders("Fault");
  const store = createMemoryStore();
  const runner = startWorkflow(saga, {
    store,
    source: memorySource({ store, categories: workflowCategories(saga) }),
    handlers: {
      Reserve: () => {
        throw new Error("inventory down");
      },
      Release: () => stepCompensated("reserve"),
      Charge: () => stepSucceeded("pay"),
      Refund: () => stepCompensated("pay"),
      Ship: () => stepSucceeded("ship"),
    },
    sink: { statsIntervalMs: 0, failure: { kind: "fault", maxAttempts: 1 } },
  });
  const ran = runner.running.then(() => undefined, (e) => e);
  await runner.handle("o1", { type: "Start", data: { orderId: "o1" } });
  const started = Date.now();
  await assert.rejects(runner.awaitIdle({ timeoutMs: 20_000 }), (e: Error) => {
    assert.ok(!(e instanceof AwaitIdleTimeoutError), `rejected with ${e}`);
    assert.match(String(e), /inventory down/);
    return true;
  });
  assert.ok(Date.now() - started < 5_000, `awaitIdle took ${Date.now() - started} ms`);
  assert.match(String(await ran), /inventory down/);
  await runner.stop().catch(() => {});
});

Deno.test("a saga declaring its sends is refused at start when a handler is missing; an undeclared send fails its decision", async () => {
  const declared = defineSaga<Order, Message>({
    category: "Decl",
    sends: ["Reserve", "Release", "Charge", "Refund"], // Ship forgotten
    steps: orderSteps(),
  });
  const store = createMemoryStore();
  assert.throws(
    () =>
      startWorkflow(declared, {
        store,
        source: memorySource({ store, categories: ["Decl"] }),
        handlers: {
          Reserve: () => stepSucceeded("reserve"),
          Charge: () => stepSucceeded("pay"),
        } as unknown as SendHandlers<SagaInput<Order>, Message>,
      }),
    (e: Error) =>
      e instanceof InvalidArgumentError &&
      /handlers has no handler for "Release", "Refund", which Decl declares in sends/.test(
        e.message,
      ),
  );
  const runner = startWorkflow(declared, {
    store,
    source: memorySource({ store, categories: ["Decl"] }),
    handlers: {
      Reserve: () => stepSucceeded("reserve"),
      Release: () => stepCompensated("reserve"),
      Charge: () => stepSucceeded("pay"),
      Refund: () => stepCompensated("pay"),
      Ship: () => stepSucceeded("ship"),
    },
    sink: { statsIntervalMs: 0, retry: { initialDelayMs: 10, maxDelayMs: 50 } },
  });
  try {
    await runner.handle("o1", { type: "Start", data: { orderId: "o1" } });
    await assert.rejects(
      runner.awaitIdle({ timeoutMs: 500 }),
      (e: Error) =>
        e instanceof AwaitIdleTimeoutError &&
        e.failing[0]?.error instanceof InvalidWorkflowDecisionError &&
        /"Ship", which Decl does not declare/.test(e.message),
    );
    // The reply to Charge, whose decision would send Ship, is refused: nothing is recorded.
    const instance = await runner.read("o1");
    assert.equal(instance.state.step, "pay");
    assert.deepEqual(instance.pending.map((p) => p.type), ["Charge"]);
  } finally {
    await runner.stop();
  }
});

Deno.test("bad steps in the background fail their stream, visibly: a later action that throws, a reply that is no input", async () => {
  const base = orderSteps();
  const saga = defineSaga<Order, Message>({
    category: "Bg",
    steps: [base[0], {
      ...base[1],
      action: () => {
        throw new Error("no gateway configured");
      },
    }, base[2]],
  });
  const store = createMemoryStore();
  const runner = startWorkflow(saga, {
    store,
    source: memorySource({ store, categories: ["Bg"] }),
    handlers: {
      Reserve: (send) =>
        send.data.orderId === "o2" ? "ok" as unknown as SagaInput<Order> : stepSucceeded("reserve"),
      Release: () => stepCompensated("reserve"),
      Charge: () => stepSucceeded("pay"),
      Refund: () => stepCompensated("pay"),
      Ship: () => stepSucceeded("ship"),
    },
    sink: { statsIntervalMs: 0, retry: { initialDelayMs: 10, maxDelayMs: 50 } },
  });
  try {
    await runner.handle("o1", { type: "Start", data: { orderId: "o1" } });
    await runner.handle("o2", { type: "Start", data: { orderId: "o2" } });
    await assert.rejects(runner.awaitIdle({ timeoutMs: 500 }), (e: Error) => {
      assert.ok(e instanceof AwaitIdleTimeoutError, String(e));
      const byStream = new Map(e.failing.map((f) => [f.stream, f.error]));
      assert.ok(byStream.get("Bg-o1") instanceof SagaStepError, String(byStream.get("Bg-o1")));
      assert.match(String(byStream.get("Bg-o2")), /the reply of handlers.Reserve must be a/);
      assert.match(e.message, /no gateway configured/);
      return true;
    });
  } finally {
    await runner.stop();
  }
});

Deno.test("stepSucceeded refuses a result JSON cannot store, naming where", () => {
  assert.throws(
    () => stepSucceeded("pay", { n: 1n }),
    (e: Error) =>
      e instanceof InvalidArgumentError && /result.n must be JSON data.*1n/.test(e.message),
  );
  assert.throws(() => stepSucceeded("pay", { at: [1, NaN] }), /result.at\[1\] must be JSON data/);
  assert.throws(
    () => stepSucceeded("pay", { f: () => 1 }),
    /result.f must be JSON data .*, got a function/,
  );
  assert.throws(() => stepSucceeded("pay", new Date(0)), /result must be JSON data .*, got a Date/);
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  assert.throws(
    () => stepSucceeded("pay", cyclic),
    /result.self must be JSON data .*, got a cycle/,
  );
  assert.deepEqual(stepSucceeded("pay", { id: "p1", n: [1, null], skip: undefined }).data, {
    step: "pay",
    result: { id: "p1", n: [1, null], skip: undefined },
  });
});

both(
  "deliveryOptions gives each append of a delivery its own key: a second write is kept, a re-send appends nothing",
  async (b) => {
    type Ledger = { type: "ChargeTried" | "Charged"; data: { orderId: string } };
    const ledger = createDecider<Ledger, string[]>({
      store: b.store,
      codec: createCodec<Ledger>({ ChargeTried: {}, Charged: {} }),
      initial: [],
      fold: (s, es) => [...s, ...es.map((e) => e.type)],
    });
    const target = `Ledger-${unique()}`;
    const charge = async (send: Delivery<Message>) => {
      await ledger.transact(
        target,
        () => [{ type: "ChargeTried", data: send.data }],
        deliveryOptions(send),
      );
      await ledger.transact(
        target,
        () => [{ type: "Charged", data: send.data }],
        deliveryOptions(send),
      );
      await ledger.transact(
        target,
        () => [{ type: "Charged", data: send.data }],
        deliveryOptions(send, "audit"),
      );
    };
    const delivery = (): Delivery<Message> => ({
      id: "Orders-o1#1",
      seq: 1,
      workflow: "Orders-o1",
      to: target,
      type: "Charge",
      data: { orderId: "o1" },
      correlationId: "c1",
      causationId: "i1",
    });
    await charge(delivery());
    await charge(delivery()); // delivered again after a crash: a new Delivery, the same keys
    const state = await ledger.query(target, (s) => s);
    assert.deepEqual(state, ["ChargeTried", "Charged", "Charged"]);
    assert.throws(() => deliveryOptions(delivery(), ""), /part must be a non-empty string/);
  },
);

Deno.test("small things: a Start with null data is refused; a second Start or a Cancel after the end is counted as ignored; stale timer fires are not counted fired", async () => {
  const saga = orders("Small");
  const store = createMemoryStore();
  const clock = manualClock(0);
  const runner = startWorkflow(saga, {
    store,
    clock,
    source: memorySource({ store, categories: ["Small"] }),
    handlers: {
      Reserve: () => stepSucceeded("reserve"),
      Release: () => stepCompensated("reserve"),
      Charge: () => stepSucceeded("pay"),
      Refund: () => stepCompensated("pay"),
      Ship: () => stepFailed("ship", "no address"),
    },
  });
  try {
    await assert.rejects(
      runner.handle("n", { type: "Start", data: null as unknown as Order }),
      (e: Error) => e instanceof InvalidSagaInputError && /data is missing/.test(e.message),
    );
    await runner.handle("o1", { type: "Start", data: { orderId: "o1" } });
    await runner.awaitIdle({ timeoutMs: 5_000 });
    assert.equal((await status(runner, "o1")).status, "compensated");
    // pay's compensation deadline was set and cancelled by the confirmation: its fire is stale.
    clock.advance(1_000);
    await runner.awaitIdle({ timeoutMs: 5_000 });
    assert.equal(runner.timers.stats().fired, 0);
    assert.equal(runner.timers.stats().stale, 1);
    const again = await runner.handle("o1", { type: "Start", data: { orderId: "other" } });
    assert.equal(again.appended, 0);
    const cancel = await runner.handle("o1", { type: "Cancel", data: { reason: "late" } });
    assert.equal(cancel.appended, 0);
    assert.equal(runner.stats().ignoredInputs, 2);
  } finally {
    await runner.stop();
  }
});

Deno.test("a scheduled timer's debug log gives its due time as an ISO date, and the number apart", async () => {
  const records: LogRecord[] = [];
  await configure({
    reset: true,
    sinks: { buffer: (r) => void records.push(r) },
    loggers: [
      { category: ["impel", "timers"], lowestLevel: "debug", sinks: ["buffer"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: [] },
    ],
  });
  try {
    const saga = defineSaga<Order, Message>({
      category: "Logged",
      steps: [{ ...orderSteps()[0], timeoutMs: 1_000 }],
    });
    const store = createMemoryStore();
    const runner = startWorkflow(saga, {
      store,
      clock: manualClock(Date.UTC(2026, 11, 2)),
      source: memorySource({ store, categories: ["Logged"] }),
      handlers: {
        Reserve: () => undefined, // no answer: the step's deadline stays set
        Release: () => stepCompensated("reserve"),
        Charge: () => stepSucceeded("pay"),
        Refund: () => stepCompensated("pay"),
        Ship: () => stepSucceeded("ship"),
      },
    });
    await runner.handle("o1", { type: "Start", data: { orderId: "o1" } });
    await runner.awaitIdle({ timeoutMs: 5_000 });
    await runner.stop();
    const scheduled = records.find((r) =>
      r.properties.stream === "Logged-o1" && "dueMs" in r.properties
    );
    assert.equal(scheduled?.properties.due, "2026-12-02T00:00:01.000Z");
    assert.equal(scheduled?.properties.dueMs, Date.UTC(2026, 11, 2) + 1_000);
  } finally {
    await reset();
  }
});

both(
  "sendTimeoutMs: a hung action's call times out (its signal aborted), so after its deadline the step is compensated",
  async (b) => {
    const saga = defineSaga<Order, Message>({
      category: `Slow${unique()}`,
      steps: [{ ...orderSteps()[1], timeoutMs: 1_000 }],
    });
    const clock = manualClock(0);
    const calls: string[] = [];
    let chargeSignal: AbortSignal | undefined;
    const runner = startWorkflow(saga, {
      store: b.store,
      clock,
      source: b.source(workflowCategories(saga)),
      sendTimeoutMs: 300,
      sink: { statsIntervalMs: 0, retry: { initialDelayMs: 10, maxDelayMs: 50 } },
      handlers: {
        Reserve: () => stepSucceeded("reserve"),
        Release: () => stepCompensated("reserve"),
        Charge: (_send, context) => {
          calls.push("Charge");
          chargeSignal = context.signal;
          return new Promise(() => {}); // the gateway never answers, whatever the signal says
        },
        Refund: () => {
          calls.push("Refund");
          return stepCompensated("pay");
        },
        Ship: () => stepSucceeded("ship"),
      },
    });
    try {
      await runner.handle("o1", { type: "Start", data: { orderId: "o1" } });
      await eventually("the Charge handler is called", () => calls.includes("Charge"));
      clock.advance(1_500);
      await eventually(
        "the pay step is compensated",
        async () => (await status(runner, "o1")).status === "compensated",
      );
      assert.equal(chargeSignal?.aborted, true, "the timed-out call's signal is aborted");
      assert.match(String(chargeSignal?.reason), /handlers.Charge for .*#\d+ took over 300 ms/);
      assert.equal(calls.filter((c) => c === "Refund").length, 1);
    } finally {
      await runner.stop();
    }
  },
);
