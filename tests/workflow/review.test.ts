// Review of workflows (issue 18), findings 5, 6, 8, 9 and 11, on the memory store: timers due
// before the epoch and ambiguous timers refused (and an old stream with one still runs), bad
// events and withdrawals refused, caller ids of the runner's own forms refused, cancelled timers
// leaving their shards, the instance fold's withdrawn list trimmed and linear, and the hotel
// sample carrying its ids to the stays it transfers.
import assert from "node:assert/strict";
import { createCodec } from "../../core/codec.ts";
import { InvalidArgumentError } from "../../core/errors.ts";
import { InvalidStreamNameError } from "../../core/streamName.ts";
import {
  defineWorkflow,
  type DurableTimer,
  durableTimers,
  InvalidWorkflowDecisionError,
  manualClock,
  startWorkflow,
  workflowCategories,
  workflowClient,
  type WorkflowDecision,
} from "../../core/workflow.ts";
import { type Internal, internalFold, storedCodec } from "../../core/workflow/instance.ts";
import {
  groupCheckoutHandlers,
  groupCheckoutWorkflow,
} from "../../examples/hotel/groupCheckoutWorkflow.ts";
import { guestStayService } from "../../examples/hotel/guestStay.ts";
import { createMemoryStore, memorySource, type MemoryStore } from "../../sources/memory.ts";

type Noted = { type: "Noted"; data: null };
type Input = { type: "Go"; data: null } | { type: "Wake"; data: null };
type Ping = { type: "Ping"; data: null };

/** A workflow whose every decision is `decision`, on a fresh store. */
function deciding(decision: unknown, category = "Rev") {
  return defineWorkflow<Noted, number, Input, Ping>({
    category,
    codec: createCodec<Noted>({ Noted: {} }),
    initial: 0,
    fold: (n, es) => n + es.length,
    decide: () => decision as WorkflowDecision<Noted, Input, Ping>,
  });
}

Deno.test("review 5/9: malformed decisions are refused by name, nothing appended", async () => {
  const wake = { type: "Wake", data: null };
  const cases: [unknown, RegExp][] = [
    [{ timers: [{ name: "t", at: -1, input: wake }] }, /timers\[0\]\.at must be .*>= 0.*got -1/],
    [{ timers: [{ name: "t", at: 5, afterMs: 1_000, input: wake }] }, /both at \(5\) and afterMs/],
    [{ timers: [{ name: "t", at: 10, afterMs: "5", input: wake }] }, /both at .* and afterMs/],
    [{ timers: [{ name: "t", afterMs: "5", input: wake }] }, /timers\[0\]\.afterMs must be/],
    [{ timers: [{ name: "t", afterMs: -5, input: wake }] }, /timers\[0\]\.afterMs must be/],
    [{ timers: [{ name: "t", input: wake }] }, /timers\[0\] needs afterMs/],
    [{ events: [null] }, /events\[0\] must be an event \{ type, data \}, got null/],
    [{ events: [{ data: {} }] }, /events\[0\]\.type must be a non-empty string/],
    [{ withdrawSends: [-1] }, /withdrawSends\[0\] must be an outbox index \(>= 0\), got -1/],
  ];
  for (const [decision, message] of cases) {
    const store = createMemoryStore();
    const client = workflowClient(deciding(decision), { store, clock: manualClock(1_000) });
    await assert.rejects(
      client.handle("i1", { type: "Go", data: null }),
      (e: unknown) => e instanceof InvalidWorkflowDecisionError && message.test(e.message),
      JSON.stringify(decision),
    );
    assert.equal((await store.readStream("Rev-i1")).length, 0, JSON.stringify(decision));
  }
  // At the epoch, and after, is fine.
  const client = workflowClient(deciding({ timers: [{ name: "t", at: 0, input: wake }] }), {
    store: createMemoryStore(),
  });
  assert.equal((await client.handle("i1", { type: "Go", data: null })).appended, 1);
});

Deno.test("review 5: a stream recorded with a timer due before the epoch still runs", async () => {
  const store = createMemoryStore();
  const wf = defineWorkflow<Noted, number, Input, Ping>({
    category: "Neg",
    codec: createCodec<Noted>({ Noted: {} }),
    initial: 0,
    fold: (n, es) => n + es.length,
    decide: (_, input) => input.type === "Wake" ? { events: [{ type: "Noted", data: null }] } : {},
  });
  // As a decision recorded it before such timers were refused.
  await store.append("Neg-i1", [
    {
      type: "WorkflowTimerSet",
      data: { seq: 0, name: "t", due: -1, input: { type: "Wake", data: null }, correlationId: "c" },
    },
    {
      type: "WorkflowSend",
      data: { seq: 1, to: "X-1", type: "Ping", data: null, correlationId: "c", causationId: "g" },
    },
  ], 0);
  const pings: string[] = [];
  const runner = startWorkflow(wf, {
    store,
    clock: manualClock(1_000),
    source: memorySource({ store, categories: workflowCategories(wf) }),
    handlers: { Ping: (send) => void pings.push(send.id) },
  });
  try {
    await runner.awaitIdle({ timeoutMs: 10_000 });
    const instance = await runner.read("i1");
    assert.deepEqual(pings, ["Neg-i1#1"]);
    assert.deepEqual([instance.state, instance.timers, instance.pending], [1, [], []]);
    assert.deepEqual(runner.sink.stats().failing, []);
  } finally {
    await runner.stop();
  }
});

Deno.test("review 6: a caller's id of the runner's own forms is refused, others pass", async () => {
  const store = createMemoryStore();
  const wf = defineWorkflow<Noted, number, Input, Ping>({
    category: "Col",
    codec: createCodec<Noted>({ Noted: {} }),
    initial: 0,
    fold: (n, es) => n + es.length,
    decide: () => ({ events: [{ type: "Noted", data: null }] }),
    routes: [{
      category: "Payment",
      route: () => ({ id: "i1", input: { type: "Go", data: null } }),
    }],
  });
  const client = workflowClient(wf, { store });
  const go = { type: "Go", data: null } as const;
  // A timer's firing is recorded under `{stream}#{index}`; a routed event under `{stream}@{index}`.
  for (const id of ["Col-i1#0", "Col-i1#12"]) {
    await assert.rejects(
      client.handle("i1", go, { id }),
      (e: unknown) =>
        e instanceof InvalidArgumentError && e.field === "options.id" &&
        e.message.includes(id) && e.message.includes("timers"),
    );
  }
  await assert.rejects(
    client.handle("i1", go, { id: "Payment-p1@3" }),
    (e: unknown) => e instanceof InvalidArgumentError && e.message.includes("routed from Payment"),
  );
  assert.equal((await store.readStream("Col-i1")).length, 0);
  // Other ids, also ones that only look alike, are recorded.
  for (const id of ["Col-i2#0", "Col-i1#x", "Col-i1#", "order-17@3", "Payment-p1@x"]) {
    assert.equal((await client.handle("i1", go, { id })).appended, 1, id);
  }
  // The runner refuses the timer form too, and its own routed ids still pass.
  const runner = startWorkflow(wf, {
    store,
    source: memorySource({ store, categories: workflowCategories(wf) }),
    handlers: { Ping: () => {} },
  });
  try {
    await assert.rejects(runner.handle("i1", go, { id: "Col-i1#0" }), InvalidArgumentError);
    await store.append("Payment-p1", [{ type: "Paid", data: {} }], 0);
    await runner.awaitIdle({ timeoutMs: 10_000 });
    assert.equal((await runner.read("i1")).state, 6);
  } finally {
    await runner.stop();
  }
});

/** The timers the shard streams of `category` hold, read back from the store. */
async function heldInShards(store: MemoryStore, category: string, shards: number) {
  const held = new Set<string>();
  for (let k = 0; k < shards; k++) {
    for (const e of await store.readStream(`${category}-${k}`)) {
      const d = e.data as { timers?: DurableTimer[]; ids?: string[] };
      if (e.type === "TimersSnapshot") held.clear();
      if (e.type === "TimersRemoved") { for (const id of d.ids!) held.delete(id); }
      else for (const t of d.timers!) held.add(t.id);
    }
  }
  return held;
}

Deno.test("review 8: a cancelled timer leaves memory and its shard, and does not fire", async () => {
  const store = createMemoryStore();
  const clock = manualClock(0);
  const fired: string[] = [];
  const options = {
    store,
    category: "RT",
    clock,
    shards: 4,
    fire: (t: DurableTimer) => void fired.push(t.id),
  };
  const timers = durableTimers(options);
  const DAY = 86_400_000;
  // An inactivity deadline re-armed on every input: each replaces the one before.
  for (let i = 0; i < 2_000; i++) {
    await timers.schedule({ id: `S-1#${i}`, due: DAY + i, stream: "S-1" });
    if (i > 0) await timers.cancel({ id: `S-1#${i - 1}`, stream: "S-1" });
  }
  await timers.schedule({ id: "other", due: 10, stream: "S-2" });
  assert.equal(timers.stats().pending, 2);
  assert.equal(timers.stats().nextDue, 10);
  assert.deepEqual([...await heldInShards(store, "RT", 4)].sort(), ["S-1#1999", "other"]);
  // Cancelled and scheduled again, it is pending again; an unknown id is nothing.
  await timers.cancel({ id: "other", stream: "S-2" });
  assert.equal(timers.stats().nextDue, DAY + 1_999);
  await timers.schedule({ id: "other", due: 20, stream: "S-2" });
  await timers.cancel({ id: "never", stream: "S-3" });
  clock.advance(2 * DAY);
  await timers.idle();
  assert.deepEqual(fired, ["other", "S-1#1999"]);
  assert.equal(timers.stats().fired, 2);
  await timers.stop();
  assert.deepEqual([...await heldInShards(store, "RT", 4)], []);
  await assert.rejects(timers.cancel({ id: "x", stream: "S-1" }), /after stop/);
});

Deno.test("review 8: a timer cancelled before a restart is not loaded again", async () => {
  const store = createMemoryStore();
  const clock = manualClock(0);
  const fired: string[] = [];
  const options = {
    store,
    category: "RT",
    clock,
    fire: (t: DurableTimer) => void fired.push(t.id),
  };
  const first = durableTimers(options);
  await first.schedule({ id: "a", due: 100, stream: "S-1" });
  await first.schedule({ id: "b", due: 100, stream: "S-1" });
  await first.cancel({ id: "a", stream: "S-1" });
  await first.stop();
  const second = durableTimers(options);
  await second.idle();
  assert.equal(second.stats().pending, 1);
  clock.advance(100);
  await second.idle();
  assert.deepEqual(fired, ["b"]);
  await assert.rejects(second.cancel({ id: "", stream: "S-1" }), InvalidArgumentError);
  await assert.rejects(second.cancel({ id: "a", stream: "nodash" }), InvalidStreamNameError);
  await assert.rejects(second.cancel(null as never), InvalidArgumentError);
  await second.stop();
});

const send = (seq: number, to: string) => ({
  type: "WorkflowSend" as const,
  data: { seq, to, type: "P", data: null, correlationId: "c", causationId: "i" },
});
const of = (type: string, seq: number, more: Record<string, unknown> = {}) =>
  ({ type, data: { seq, ...more } }) as never;
const fold = internalFold<Noted, number>((n, es) => n + es.length);
const fresh: Internal<number> = { state: 0, next: 0, pending: [], timers: [] };

Deno.test("review 8: withdrawn keeps only sends whose handler may still reply", () => {
  // An action withdrawn, its compensation sent after: once that is delivered, the action's
  // handler has returned (the dispatcher held the compensation back until then).
  const compensated = fold(fresh, [
    send(0, "Stock-1"),
    of("WorkflowWithdrawn", 0),
    send(1, "Stock-1"),
    of("WorkflowDelivered", 1),
  ]);
  assert.equal(compensated.withdrawn, undefined);
  // A send recorded before the withdrawal (another target, maybe in flight with it) proves
  // nothing: the withdrawn one stays.
  const concurrent = fold(fresh, [
    send(0, "A-1"),
    send(1, "B-1"),
    of("WorkflowWithdrawn", 0),
    of("WorkflowDelivered", 1),
  ]);
  assert.deepEqual(concurrent.withdrawn, [0]);
  // Delivered later, each event its own fold (as appends arrive), an abandoned one stays.
  let s = fold(fresh, [send(0, "A-1"), send(1, "B-1")]);
  s = fold(s, [of("WorkflowWithdrawn", 0), of("WorkflowWithdrawn", 1, { abandoned: true })]);
  s = fold(s, [send(2, "A-1")]);
  s = fold(s, [of("WorkflowDelivered", 2)]);
  assert.deepEqual([s.withdrawn, s.abandoned, s.pending], [[1], [1], []]);
  // A saga-like instance: 1 000 actions, each withdrawn and compensated, keeps nothing.
  let saga = fresh;
  for (let k = 0; k < 1_000; k++) {
    saga = fold(saga, [send(2 * k, `T-${k}`)]);
    saga = fold(saga, [of("WorkflowWithdrawn", 2 * k), send(2 * k + 1, `T-${k}`)]);
    saga = fold(saga, [of("WorkflowDelivered", 2 * k + 1)]);
  }
  assert.deepEqual([saga.withdrawn, saga.pending.length, saga.next], [undefined, 0, 2_000]);
});

Deno.test("review 8: a stream written before folds as it did, in linear time", () => {
  const codec = storedCodec(createCodec<Noted>({ Noted: {} }));
  // Stored data as earlier versions wrote it (no `abandoned`, no `withdrawnAt`).
  const stored = [
    { type: "Noted", data: null },
    send(0, "A-1"),
    {
      type: "WorkflowTimerSet",
      data: {
        seq: 1,
        name: "t",
        due: 500,
        input: { type: "Wake", data: null },
        correlationId: "c",
      },
    },
    send(2, "B-1"),
    of("WorkflowTimerDue", 1),
    of("WorkflowWithdrawn", 0),
    of("WorkflowDelivered", 2),
    send(3, "C-1"),
    {
      type: "WorkflowTimerSet",
      data: {
        seq: 4,
        name: "u",
        due: 900,
        input: { type: "Wake", data: null },
        correlationId: "c",
      },
    },
    of("WorkflowTimerFired", 1),
    { type: "Noted", data: null },
  ].map((e, index) =>
    codec.decode({ ...e, stream: "Rev-1", index, id: `${index}`, time: new Date(0) } as never)!
  );
  const timerU = {
    seq: 4,
    name: "u",
    due: 900,
    input: { type: "Wake", data: null },
    correlationId: "c",
  };
  const expected = {
    state: 2,
    next: 5,
    pending: [send(3, "C-1").data],
    timers: [timerU],
    correlationId: "c",
    withdrawn: [0],
    withdrawnAt: [3],
  };
  assert.deepEqual(fold(fresh, stored), expected);
  // Event by event, from a state folded before (withdrawn without withdrawnAt), the same.
  let s = fresh;
  for (const e of stored) s = fold(s, [e]);
  assert.deepEqual(s, expected);
  const old = { ...fresh, next: 3, withdrawn: [0], pending: [send(1, "A-1").data] };
  assert.deepEqual(fold(old, [of("WorkflowDelivered", 1)]).withdrawn, [0]);
  assert.equal(fold(old, [send(3, "A-1"), of("WorkflowDelivered", 3)]).withdrawn, undefined);
  // The state passed in is not changed (it may be a cached one).
  const before = structuredClone(s);
  fold(s, [send(5, "D-1"), of("WorkflowDelivered", 3), of("WorkflowTimerCancelled", 4)]);
  assert.deepEqual(s, before);
  // 60 000 outbox events in one fold: a copy per event took seconds; now milliseconds.
  const many = [];
  for (let seq = 0; seq < 30_000; seq++) many.push(send(seq, `X-${seq}`));
  for (let seq = 0; seq < 30_000; seq++) many.push(of("WorkflowDelivered", seq));
  const t0 = performance.now();
  const big = fold(fresh, many);
  const ms = performance.now() - t0;
  assert.deepEqual([big.pending.length, big.next], [0, 30_000]);
  assert.ok(ms < 2_000, `folding 60 000 events took ${ms} ms`);
});

Deno.test("review 11: the hotel workflow's transfers carry its correlation and causation ids", async () => {
  const T = "2026-03-01T12:00:00Z";
  const store = createMemoryStore();
  const stays = guestStayService(store);
  await stays.checkIn("s1", T);
  const wf = groupCheckoutWorkflow;
  const runner = startWorkflow(wf, {
    store,
    source: memorySource({ store, categories: workflowCategories(wf) }),
    handlers: groupCheckoutHandlers(stays),
  });
  try {
    await runner.handle("g1", { type: "SelectStays", data: { stayIds: ["s1"], at: T } }, {
      id: "select-g1",
      correlationId: "req-42",
    });
    await runner.awaitIdle({ timeoutMs: 10_000 });
    const transferred = (await store.readStream("GuestStay-s1")).find((e) =>
      e.type === "TransferredToGroup"
    );
    assert.deepEqual(
      [transferred?.correlationId, transferred?.causationId],
      ["req-42", "GroupCheckoutFlow-g1#0"],
    );
    assert.deepEqual((await runner.read("g1")).state.merged, [{ stayId: "s1", residual: 0 }]);
  } finally {
    await runner.stop();
  }
});
