// The rest of the review of workflows (issue 18), each where a store matters on the memory store
// and on MessageDB (IMPEL_PG_URL): a send withdrawn while the dispatcher read its stream is not
// delivered (finding 2), an outcome that comes once its step's deadline is due is late (7), a
// second runner of a category over one store in a process is refused (3), and a handler call is
// bounded by default (4).
// @ts-types="@types/pg"
import pg from "pg";
import assert from "node:assert/strict";
import { initPostgresCheckpoints, postgresCheckpoints } from "../../checkpoints/postgres.ts";
import type { Batch } from "../../core/batch.ts";
import { createCodec } from "../../core/codec.ts";
import { InvalidArgumentError } from "../../core/errors.ts";
import type { EventStore } from "../../core/store.ts";
import { TimeoutError } from "../../core/timeout.ts";
import {
  defineSaga,
  defineWorkflow,
  DuplicateWorkflowRunnerError,
  manualClock,
  type SagaInput,
  type SagaState,
  startWorkflow,
  stepCompensated,
  stepSucceeded,
  workflowCategories,
  workflowClient,
  type WorkflowRunner,
} from "../../core/workflow.ts";
import { messageDbSource } from "../../sources/messagedb.ts";
import { createMemoryStore, memorySource } from "../../sources/memory.ts";
import { messageDbStore } from "../../stores/messagedb.ts";
import { url } from "../support/postgres.ts";

/** A store and sources over it. */
interface Backend {
  readonly name: string;
  readonly store: EventStore;
  source(categories: readonly string[], group?: string): ReadableStream<Batch>;
}

const unique = () => crypto.randomUUID().replaceAll("-", "").slice(0, 10);

/** Resolves once `check` holds, polling; rejects naming `what` after `ms`. */
async function eventually(what: string, check: () => boolean | Promise<boolean>, ms = 10_000) {
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

/** `store` as another connection to the same data would be: a store object of its own. */
function connection(store: EventStore): EventStore {
  return new Proxy(store, {
    get: (target, key) => {
      const value = Reflect.get(target, key, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

// Finding 2 -----------------------------------------------------------------------------------

type Noted = { type: "Noted"; data: null };
type GoStop = { type: "Go"; data: null } | { type: "Stop"; data: null };
type Do = { type: "Do"; data: { n: number } };

/** Go sends Do 1 and Do 2 to one target; Stop withdraws what is pending. */
const stoppable = (category: string) =>
  defineWorkflow<Noted, number, GoStop, Do>({
    category,
    codec: createCodec<Noted>({ Noted: {} }),
    initial: 0,
    fold: (n, events) => n + events.length,
    decide: (_, input, context) =>
      input.type === "Go"
        ? {
          events: [{ type: "Noted", data: null }],
          sends: [1, 2].map((n) => ({ to: "Target-1", type: "Do" as const, data: { n } })),
        }
        : { withdrawSends: (context.pending ?? []).map((p) => p.seq) },
  });

both(
  "a send withdrawn by another writer while the dispatcher reads its stream is not delivered",
  async (b) => {
    const wf = stoppable(`Wd${unique()}`);
    const stream = `${wf.category}-i1`;
    // Another process's client, over the same data: its Stop lands while the runner's dispatch
    // reads the stream after Do 1 was recorded delivered, so that read misses it.
    const other = workflowClient(wf, { store: connection(b.store) });
    let armed = false;
    const runnerStore = new Proxy(b.store, {
      get: (target, key) => {
        if (key === "append") {
          return async (...args: Parameters<EventStore["append"]>) => {
            const written = await target.append(...args);
            if (args[0] === stream && args[1].some((e) => e.type === "WorkflowDelivered")) {
              armed = true;
            }
            return written;
          };
        }
        if (key === "readStream") {
          return async (...args: Parameters<EventStore["readStream"]>) => {
            const read = await target.readStream(...args);
            if (args[0] === stream && armed) {
              armed = false;
              await other.handle("i1", { type: "Stop", data: null }, { id: "stop-1" });
            }
            return read;
          };
        }
        const value = Reflect.get(target, key, target);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
    const delivered: number[] = [];
    const runner = startWorkflow(wf, {
      store: runnerStore,
      source: b.source(workflowCategories(wf)),
      handlers: { Do: (send) => void delivered.push(send.data.n) },
    });
    try {
      await runner.handle("i1", { type: "Go", data: null });
      await eventually("Do 1 is delivered and Do 2 withdrawn", async () => {
        const types = (await b.store.readStream(stream)).map((e) => e.type);
        return types.includes("WorkflowDelivered") && types.includes("WorkflowWithdrawn");
      });
      // Give a wrong delivery of Do 2 the time to happen.
      await new Promise((r) => setTimeout(r, 300));
      assert.deepEqual(delivered, [1], "Do 2 was withdrawn before its turn");
      assert.deepEqual((await runner.read("i1")).pending, []);
      assert.equal(runner.sink.stats().failing.length, 0);
    } finally {
      await runner.stop();
    }
  },
);

// Finding 7 -----------------------------------------------------------------------------------

type Order = { orderId: string };
type Payment = { type: "Charge"; data: Order } | { type: "Refund"; data: Order };
const PAY_MS = 15 * 60_000;
const payments = (category: string) =>
  defineSaga<Order, Payment>({
    category,
    steps: [{
      name: "pay",
      timeoutMs: PAY_MS,
      action: (o) => ({ to: `Gateway-${o.orderId}`, type: "Charge", data: o }),
      compensation: (o) => ({ to: `Gateway-${o.orderId}`, type: "Refund", data: o }),
    }],
  });

Deno.test("an outcome that comes once its step's deadline is due is late: the step takes the deadline's path", async () => {
  const saga = payments("Late");
  const clock = manualClock(0);
  // A client alone: nothing fires the deadline, so the late outcome is decided before it.
  const client = workflowClient(saga, { store: createMemoryStore(), clock });
  await client.handle("o1", { type: "Start", data: { orderId: "o1" } });
  clock.advance(PAY_MS);
  const outcome = await client.handle("o1", stepSucceeded("pay", { paymentId: "p1" }));
  assert.equal(outcome.state.status, "compensating");
  assert.equal(outcome.state.reason, `pay: no outcome within ${PAY_MS} ms (outcome late)`);
  assert.deepEqual(outcome.state.results, {}, "the late success is not the step's result");
  const instance = await client.read("o1");
  assert.deepEqual(instance.pending.map((p) => p.type), ["Refund"], "Charge withdrawn");
  assert.deepEqual(instance.timers, [], "the deadline is cancelled");
  // Just before the deadline, the same success completes the step.
  const onTime = workflowClient(saga, { store: createMemoryStore(), clock });
  await onTime.handle("o2", { type: "Start", data: { orderId: "o2" } });
  clock.advance(PAY_MS - 1);
  const done = await onTime.handle("o2", stepSucceeded("pay"));
  assert.equal(done.state.status, "completed");
});

Deno.test("a late outcome is noted: before the deadline's firing and after it", () => {
  const saga = payments("Note");
  const started = saga.fold(saga.initial, [{ type: "Started", data: { orderId: "o1" } }]);
  const context = (now: number, timers: { name: string; due: number }[]) => ({
    id: "o1",
    stream: "Note-o1",
    now,
    inputId: "r1",
    correlationId: "c1",
    version: 3,
    timers,
    pending: [],
  });
  const before = saga.decide(
    started,
    stepSucceeded("pay"),
    context(PAY_MS, [
      { name: "deadline", due: PAY_MS },
    ]),
  );
  assert.match(before.ignored ?? "", /StepSucceeded of pay came late \(its deadline was due\)/);
  assert.deepEqual(before.events?.[0], {
    type: "StepFailed",
    data: {
      step: "pay",
      reason: `no outcome within ${PAY_MS} ms (outcome late)`,
      compensate: true,
      timedOut: true,
    },
  });
  const fired = saga.decide(started, { type: "Deadline", data: { step: "pay", phase: "action" } }, {
    ...context(PAY_MS, []),
  });
  const timedOut = saga.fold(started, fired.events ?? []);
  assert.equal(timedOut.timedOut, "pay");
  const after = saga.decide(timedOut, stepSucceeded("pay"), context(PAY_MS + 1, []));
  assert.deepEqual(after.events ?? [], [], "nothing recorded");
  assert.match(after.ignored ?? "", /came late \(after its 900000 ms deadline\)/);
  // A stored StepFailed keeps its timedOut mark.
  assert.deepEqual(saga.codec.roundTrip(fired.events![0]).decoded, fired.events![0]);
});

both(
  "a reply that comes once its step's deadline is due does not complete the step; it is counted",
  async (b) => {
    const saga = payments(`Lr${unique()}`);
    const clock = manualClock(0);
    const runner: WorkflowRunner<SagaState<Order>, SagaInput<Order>> = startWorkflow(saga, {
      store: b.store,
      clock,
      source: b.source(workflowCategories(saga)),
      handlers: {
        Charge: () => {
          clock.advance(PAY_MS); // the gateway took 15 minutes to say yes
          return stepSucceeded("pay", { paymentId: "p1" });
        },
        Refund: () => stepCompensated("pay"),
      },
    });
    try {
      await runner.handle("o1", { type: "Start", data: { orderId: "o1" } });
      await eventually(
        "the order ends",
        async () => (await runner.read("o1")).state.status === "compensated",
      );
      const { state } = await runner.read("o1");
      assert.equal(state.reason, `pay: no outcome within ${PAY_MS} ms (outcome late)`);
      assert.equal(runner.stats().ignoredInputs, 1);
    } finally {
      await runner.stop();
    }
  },
);

// Finding 3 -----------------------------------------------------------------------------------

both("a second runner of a category over the same store in one process is refused", async (b) => {
  const saga = payments(`Two${unique()}`);
  const handlers = {
    Charge: () => stepSucceeded("pay"),
    Refund: () => stepCompensated("pay"),
  };
  const start = (store: EventStore) =>
    startWorkflow(saga, { store, source: b.source(workflowCategories(saga)), handlers });
  const first = start(b.store);
  let second: ReturnType<typeof start> | undefined;
  try {
    assert.throws(() => start(b.store), (error: unknown) => {
      assert.ok(error instanceof DuplicateWorkflowRunnerError);
      assert.equal(error.code, "DuplicateWorkflowRunner");
      assert.equal(error.category, saga.category);
      return true;
    });
    // Another store object is another connection (as another process has): not seen.
    second = start(connection(b.store));
    await second.stop();
    second = undefined;
    await first.stop();
    // Once stopped, the category is free again.
    second = start(b.store);
    await second.handle("o1", { type: "Start", data: { orderId: "o1" } });
    await eventually(
      "the order completes",
      async () => (await second!.read("o1")).state.status === "completed",
    );
  } finally {
    await first.stop();
    await second?.stop();
  }
});

// Finding 4 -----------------------------------------------------------------------------------

Deno.test("a handler call is bounded by default: a hung call times out and is retried", async () => {
  const store = createMemoryStore();
  const saga = payments("Hung");
  let calls = 0;
  let signal: AbortSignal | undefined;
  const started = Date.now();
  const runner = startWorkflow(saga, {
    store,
    source: memorySource({ store, categories: workflowCategories(saga) }),
    handlers: {
      Charge: (_send, context) => {
        calls++;
        if (calls > 1) return stepSucceeded("pay");
        signal = context.signal;
        return new Promise(() => {}); // hangs, whatever its signal says
      },
      Refund: () => stepCompensated("pay"),
    },
    sink: { retry: { initialDelayMs: 1, maxDelayMs: 10 } },
    // The default is 60 s; the same mechanism, shorter, so the test does not wait a minute.
    sendTimeoutMs: 200,
  });
  try {
    await runner.handle("o1", { type: "Start", data: { orderId: "o1" } });
    await eventually(
      "the retry completes the order",
      async () => (await runner.read("o1")).state.status === "completed",
    );
    assert.equal(calls, 2);
    assert.ok(signal?.aborted, "the hung call's signal is aborted");
    assert.ok(signal?.reason instanceof TimeoutError);
    assert.ok(Date.now() - started >= 200);
  } finally {
    await runner.stop();
  }
});

Deno.test("sendTimeoutMs: Infinity means no limit; a value a timer cannot hold is refused", async () => {
  const store = createMemoryStore();
  const saga = payments("Bound");
  const handlers = { Charge: () => stepSucceeded("pay"), Refund: () => stepCompensated("pay") };
  const options = (sendTimeoutMs: number) => ({
    store,
    source: memorySource({ store, categories: workflowCategories(saga) }),
    handlers,
    sendTimeoutMs,
  });
  for (const bad of [0, -1, Number.NaN, 2 ** 31]) {
    assert.throws(() => startWorkflow(saga, options(bad)), (error: unknown) => {
      assert.ok(error instanceof InvalidArgumentError, String(bad));
      assert.equal(error.field, "sendTimeoutMs");
      return true;
    });
  }
  const runner = startWorkflow(saga, options(Infinity));
  try {
    await runner.handle("o1", { type: "Start", data: { orderId: "o1" } });
    await runner.awaitIdle();
    assert.equal((await runner.read("o1")).state.status, "completed");
  } finally {
    await runner.stop();
  }
});
