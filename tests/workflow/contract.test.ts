// The workflow API's contract at its edges: inputs checked at the public boundary with typed
// errors, timers replaced by name, steps with nothing to send, and compensations past their
// deadline. Each was a defect found in the review of issue 18.
import assert from "node:assert/strict";
import { configure, type LogRecord, reset } from "@logtape/logtape";
import { createCodec } from "../../core/codec.ts";
import { InvalidArgumentError } from "../../core/errors.ts";
import {
  compensationFailed,
  defineSaga,
  defineWorkflow,
  deliveryOptions,
  InvalidSagaInputError,
  manualClock,
  sagaEnded,
  SagaStepError,
  startWorkflow,
  stepCompensated,
  stepFailed,
  stepSucceeded,
  workflowCategories,
  workflowClient,
  WorkflowDecideError,
} from "../../core/workflow.ts";
import { fulfilment } from "../../examples/fulfilment/fulfilment.ts";
import { createMemoryStore, memorySource } from "../../sources/memory.ts";

const context = {
  id: "o1",
  stream: "Trip-o1",
  now: 0,
  inputId: "i1",
  correlationId: "c1",
  version: 0,
  timers: [],
};

Deno.test("saga: a Start without data is refused naming the saga, the first step and what is missing", async () => {
  const client = workflowClient(fulfilment, { store: createMemoryStore() });
  for (const start of [{ type: "Start" }, { type: "Start", data: null }]) {
    await assert.rejects(
      () => client.handle("o1", start as never),
      (e) =>
        e instanceof InvalidSagaInputError && e.code === "InvalidSagaInput" &&
        e.category === "Fulfilment" && e.step === "reserve" && /data/.test(e.message) &&
        /Fulfilment/.test(e.message) && /reserve/.test(e.message),
    );
  }
  // The saga's parse names the missing field.
  await assert.rejects(
    () =>
      client.handle(
        "o1",
        { type: "Start", data: { orderId: "o1", address: "1 Main St" } } as never,
      ),
    (e) => e instanceof InvalidSagaInputError && e.step === "reserve" && /sku/.test(e.message),
  );
  assert.equal((await client.read("o1")).version, 0, "nothing was recorded");
});

Deno.test("saga: an action or compensation that throws or returns garbage fails with SagaStepError", () => {
  type D = { id: string };
  type M = { type: "Go"; data: D };
  const saga = (action: unknown, compensation?: unknown) =>
    defineSaga<D, M>({
      category: "Trip",
      steps: [
        {
          name: "first",
          action: () => ({ to: "X-1", type: "Go", data: { id: "1" } }),
          compensation: compensation as never,
        },
        { name: "second", action: action as never },
      ],
    });
  const started = (s: ReturnType<typeof saga>) =>
    s.fold(s.initial, [{ type: "Started", data: { id: "1" } }]);
  const throwing = saga(() => {
    throw new TypeError("boom");
  });
  assert.throws(
    () =>
      throwing.decide(
        throwing.fold(started(throwing), []),
        stepSucceeded("first"),
        context,
      ),
    (e) =>
      e instanceof SagaStepError && e.step === "second" && e.phase === "action" &&
      e.category === "Trip" && /boom/.test(e.message),
  );
  const garbage = saga(() => 42);
  assert.throws(
    () => garbage.decide(started(garbage), stepSucceeded("first"), context),
    (e) => e instanceof SagaStepError && /must return a send or an array of sends/.test(e.message),
  );
  const badUndo = saga(() => [], () => "nope");
  const s = badUndo.fold(started(badUndo), [{
    type: "StepSucceeded",
    data: { step: "first", result: null },
  }]);
  assert.throws(
    () => badUndo.decide(s, { type: "Cancel", data: { reason: "x" } }, context),
    (e) => e instanceof SagaStepError && e.phase === "compensation" && e.step === "first",
  );
});

Deno.test("saga and workflow inputs: bad outcomes and builders are refused with typed errors", async () => {
  type D = { id: string };
  type M = { type: "Go"; data: D };
  const saga = defineSaga<D, M>({
    category: "Trip",
    steps: [{ name: "go", action: (d) => ({ to: "X-1", type: "Go", data: d }) }],
  });
  const client = workflowClient(saga, { store: createMemoryStore() });
  await client.handle("t1", { type: "Start", data: { id: "t1" } });
  await assert.rejects(
    () => client.handle("t1", { type: "StepFailed", data: { step: "go" } } as never),
    (e) => e instanceof InvalidSagaInputError && e.step === "go" && /reason/.test(e.message),
  );
  await assert.rejects(
    () => client.handle("t1", { type: "Cancel" } as never),
    (e) => e instanceof InvalidSagaInputError && /reason/.test(e.message),
  );
  await assert.rejects(
    () => client.handle("t1", { type: "Deadline", data: { step: "go", phase: "later" } } as never),
    (e) => e instanceof InvalidSagaInputError && /phase/.test(e.message),
  );
  assert.throws(() => stepSucceeded(undefined as never), InvalidArgumentError);
  assert.throws(() => stepFailed("go", 3 as never), InvalidArgumentError);
  assert.throws(() => stepCompensated("" as never), InvalidArgumentError);
  assert.throws(() => compensationFailed("go", undefined as never), InvalidArgumentError);
  assert.throws(() => sagaEnded(undefined as never), InvalidArgumentError);
  assert.throws(() => deliveryOptions(undefined as never), InvalidArgumentError);
  assert.throws(() => workflowCategories(null as never), InvalidArgumentError);
  await assert.rejects(() => client.handle("t1", undefined as never), InvalidArgumentError);
  await assert.rejects(() => client.read(undefined as never), InvalidArgumentError);
  assert.throws(() => client.streamOf(7 as never), InvalidArgumentError);

  // A workflow's decide that throws is named with the instance and the input.
  type E = { type: "Noted"; data: null };
  type I = { type: "Note"; data: { text: string } };
  const notes = defineWorkflow<E, null, I, never>({
    category: "Notes",
    codec: createCodec<E>({ Noted: {} }),
    initial: null,
    fold: (s) => s,
    decide: (_, input) => ({ events: [{ type: "Noted", data: input.data.text.length as never }] }),
  });
  await assert.rejects(
    () =>
      workflowClient(notes, { store: createMemoryStore() }).handle("n1", { type: "Note" } as never),
    (e) =>
      e instanceof WorkflowDecideError && e.code === "WorkflowDecide" && e.stream === "Notes-n1" &&
      e.input === "Note" && e.cause instanceof TypeError,
  );
  const store = createMemoryStore();
  const runner = startWorkflow(saga, {
    store,
    source: memorySource({ store, categories: workflowCategories(saga) }),
    handlers: { Go: () => {} },
  });
  try {
    await assert.rejects(() => runner.awaitIdle(null as never), InvalidArgumentError);
    await assert.rejects(() => runner.awaitIdle({ timeoutMs: -1 }), InvalidArgumentError);
  } finally {
    await runner.stop();
  }
});

Deno.test("workflow: two timers of one name in one decision: the last replaces the first, it fires once", async () => {
  type E = { type: "Armed"; data: null } | { type: "Rang"; data: null };
  type I = { type: "Arm"; data: null } | { type: "Ring"; data: null } | {
    type: "Rearm";
    data: null;
  };
  const alarm = defineWorkflow<E, number, I, never>({
    category: "Alarm",
    codec: createCodec<E>({ Armed: {}, Rang: {} }),
    initial: 0,
    fold: (n, es) => n + es.filter((e) => e.type === "Rang").length,
    decide: (_, input) =>
      input.type === "Arm"
        ? {
          events: [{ type: "Armed", data: null }],
          timers: [
            { name: "bell", afterMs: 1_000, input: { type: "Ring", data: null } },
            { name: "bell", afterMs: 2_000, input: { type: "Ring", data: null } },
          ],
        }
        : input.type === "Rearm"
        ? { timers: [{ name: "bell", afterMs: 5_000, input: { type: "Ring", data: null } }] }
        : { events: [{ type: "Rang", data: null }] },
  });
  const store = createMemoryStore();
  const clock = manualClock(0);
  const runner = startWorkflow(alarm, {
    store,
    clock,
    source: memorySource({ store, categories: workflowCategories(alarm) }),
    handlers: {},
  });
  try {
    await runner.handle("a1", { type: "Arm", data: null });
    await runner.awaitIdle({ timeoutMs: 5_000 });
    assert.deepEqual((await runner.read("a1")).timers, [{ name: "bell", due: 2_000 }]);
    await runner.handle("a1", { type: "Rearm", data: null });
    assert.deepEqual((await runner.read("a1")).timers, [{ name: "bell", due: 5_000 }]);
    clock.advance(10_000);
    await runner.awaitIdle({ timeoutMs: 5_000 });
    const instance = await runner.read("a1");
    assert.equal(instance.state, 1, "the bell rang once");
    assert.deepEqual(instance.timers, []);
  } finally {
    await runner.stop();
  }
});

Deno.test("saga: a step whose action sends nothing completes at once; a compensation that sends nothing counts as done", async () => {
  type D = { id: string; gift: boolean };
  type M = { type: "Wrap"; data: D } | { type: "Ship"; data: D } | { type: "Unwrap"; data: D };
  const sent: string[] = [];
  const saga = defineSaga<D, M>({
    category: "Parcel",
    steps: [
      {
        name: "wrap",
        action: (d) => d.gift ? { to: `Wrap-${d.id}`, type: "Wrap", data: d } : [],
        compensation: (d) => d.gift ? { to: `Wrap-${d.id}`, type: "Unwrap", data: d } : [],
      },
      { name: "ship", action: (d) => ({ to: `Ship-${d.id}`, type: "Ship", data: d }) },
    ],
  });
  const store = createMemoryStore();
  const runner = startWorkflow(saga, {
    store,
    source: memorySource({ store, categories: workflowCategories(saga) }),
    handlers: {
      Wrap: (s) => {
        sent.push(`wrap ${s.data.id}`);
        return stepSucceeded("wrap");
      },
      Unwrap: (s) => {
        sent.push(`unwrap ${s.data.id}`);
        return stepCompensated("wrap");
      },
      Ship: (s) => {
        sent.push(`ship ${s.data.id}`);
        return s.data.id === "p3" ? stepFailed("ship", "no address") : stepSucceeded("ship");
      },
    },
  });
  try {
    await runner.handle("p1", { type: "Start", data: { id: "p1", gift: false } });
    await runner.handle("p2", { type: "Start", data: { id: "p2", gift: true } });
    await runner.handle("p3", { type: "Start", data: { id: "p3", gift: false } });
    await runner.awaitIdle({ timeoutMs: 5_000 });
    const p1 = (await runner.read("p1")).state;
    assert.equal(p1.status, "completed");
    assert.deepEqual(p1.done, ["wrap", "ship"]);
    assert.equal((await runner.read("p2")).state.status, "completed");
    const p3 = (await runner.read("p3")).state;
    assert.equal(p3.status, "compensated");
    assert.equal(p3.reason, "ship: no address");
    assert.deepEqual(sent.sort(), ["ship p1", "ship p2", "ship p3", "wrap p2"]);
  } finally {
    await runner.stop();
  }
  // The same as plain functions: one decision records the empty step and sends the next.
  const s0 = saga.initial;
  const d = saga.decide(s0, { type: "Start", data: { id: "p9", gift: false } }, context);
  assert.deepEqual(d.events?.map((e) => e.type), ["Started", "StepSucceeded"]);
  assert.deepEqual(d.sends?.map((m) => m.type), ["Ship"]);
});

/** A saga whose second step fails, so the first is compensated within 1 s. */
function undoable() {
  type D = { id: string };
  type M = { type: "Book"; data: D } | { type: "Unbook"; data: D } | { type: "Pay"; data: D };
  return defineSaga<D, M>({
    category: "Booking",
    steps: [
      {
        name: "book",
        action: (d) => ({ to: `Room-${d.id}`, type: "Book", data: d }),
        compensation: (d) => ({ to: `Room-${d.id}`, type: "Unbook", data: d }),
        compensationTimeoutMs: 1_000,
      },
      { name: "pay", action: (d) => ({ to: `Card-${d.id}`, type: "Pay", data: d }) },
    ],
  });
}

Deno.test("saga: a compensation not delivered by its deadline is withdrawn: never delivered after it, the saga ends failed", async () => {
  const saga = undoable();
  const store = createMemoryStore();
  const clock = manualClock(0);
  const unbooked: number[] = [];
  let down = true;
  const runner = startWorkflow(saga, {
    store,
    clock,
    source: memorySource({ store, categories: workflowCategories(saga) }),
    handlers: {
      Book: () => stepSucceeded("book"),
      Pay: () => stepFailed("pay", "declined"),
      Unbook: () => {
        if (down) throw new Error("rooms service down");
        unbooked.push(clock.now());
        return stepCompensated("book");
      },
    },
    sink: { statsIntervalMs: 0, retry: { initialDelayMs: 20, maxDelayMs: 20 } },
  });
  try {
    await runner.handle("b1", { type: "Start", data: { id: "b1" } });
    await new Promise((r) => setTimeout(r, 60));
    assert.equal((await runner.read("b1")).state.status, "compensating");
    clock.advance(1_500);
    await new Promise((r) => setTimeout(r, 150));
    down = false;
    await new Promise((r) => setTimeout(r, 150));
    const instance = await runner.read("b1");
    assert.deepEqual(unbooked, [], "the compensation was not delivered after its deadline");
    assert.equal(instance.state.status, "failed");
    assert.match(instance.state.reason ?? "", /compensation failed: book: .*within 1000 ms/);
    assert.deepEqual(instance.pending, []);
  } finally {
    await runner.stop();
  }
});

Deno.test("saga: a compensation confirmed after its deadline takes the timeout path; the late reply is logged and counted", async () => {
  const saga = undoable();
  const store = createMemoryStore();
  const clock = manualClock(0);
  const records: LogRecord[] = [];
  await configure({
    sinks: { mem: (r) => void records.push(r) },
    loggers: [{ category: ["impel", "workflow"], lowestLevel: "debug", sinks: ["mem"] }],
    reset: true,
  });
  let release = () => {};
  const slow = new Promise<void>((r) => release = r);
  let started = false;
  const runner = startWorkflow(saga, {
    store,
    clock,
    source: memorySource({ store, categories: workflowCategories(saga) }),
    handlers: {
      Book: () => stepSucceeded("book"),
      Pay: () => stepFailed("pay", "declined"),
      Unbook: async () => {
        started = true;
        await slow;
        return stepCompensated("book");
      },
    },
  });
  try {
    await runner.handle("b1", { type: "Start", data: { id: "b1" } });
    while (!started) await new Promise((r) => setTimeout(r, 5));
    clock.advance(1_500);
    await runner.timers.idle();
    release();
    await runner.awaitIdle({ timeoutMs: 5_000 });
    const instance = await runner.read("b1");
    assert.equal(instance.state.status, "failed");
    assert.deepEqual(instance.state.failures, [
      "book: compensation not confirmed within 1000 ms (confirmed late)",
    ]);
    assert.equal(runner.stats().ignoredInputs, 1);
    const late = records.filter((r) => r.level === "warning" && /late/.test(String(r.message)));
    assert.equal(late.length, 1, records.map((r) => r.message.join("")).join("\n"));
    assert.equal(late[0].properties.stream, "Booking-b1");
  } finally {
    await runner.stop();
    await reset();
  }
});
