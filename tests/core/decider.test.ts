import assert from "node:assert/strict";
import { createCodec } from "../../core/codec.ts";
import {
  createDecider,
  createStateCache,
  type LastEventReader,
  MaxAttemptsExceededError,
  StreamReadGapError,
} from "../../core/decider.ts";
import { InvalidArgumentError } from "../../core/errors.ts";
import type { EventStore } from "../../core/store.ts";
import { WrongExpectedVersionError } from "../../core/store.ts";
import { InvalidStreamNameError } from "../../core/streamName.ts";
import { createMemoryStore, type MemoryStore } from "../../sources/memory.ts";

// A counter aggregate: Added events and a Snapshotted state event.
type Event =
  | { type: "Added"; data: { n: number } }
  | { type: "Snapshotted"; data: { total: number; count: number } };
interface State {
  readonly total: number;
  readonly count: number;
}
const initial: State = { total: 0, count: 0 };
const evolve = (s: State, e: Event): State =>
  e.type === "Added" ? { total: s.total + e.data.n, count: s.count + 1 } : { ...e.data };
const fold = (s: State, events: readonly Event[]) => events.reduce(evolve, s);
const codec = createCodec<Event>({ Added: {}, Snapshotted: {} });
const add = (n: number): Event[] => [{ type: "Added", data: { n } }];

/** The real memory store, with every read recorded (stream, fromIndex). */
function recording(store: MemoryStore = createMemoryStore()) {
  const reads: Array<[string, number]> = [];
  const wrapped: EventStore = {
    readStream(stream, options) {
      reads.push([stream, options?.fromIndex ?? 0]);
      return store.readStream(stream, options);
    },
    append: (stream, events, expected) => store.append(stream, events, expected),
  };
  return { store: wrapped, inner: store, reads };
}

Deno.test("decider: transact appends decided events, query renders the folded state", async () => {
  const store = createMemoryStore();
  const decider = createDecider<Event, State>({ store, codec, initial, fold });
  await decider.transact("Counter-1", () => add(2));
  const outcome = await decider.transactEx("Counter-1", (s, ctx) => {
    assert.equal(ctx.version, 1);
    assert.equal(ctx.attempt, 1);
    return { events: add(s.total + 1), result: `was ${s.total}` };
  });
  assert.deepEqual(outcome, {
    result: "was 2",
    state: { total: 5, count: 2 },
    version: 2,
    appended: 2 - 1,
    attempts: 1,
    duplicate: false,
  });
  assert.deepEqual(await decider.query("Counter-1", (s, ctx) => [s, ctx.version]), [{
    total: 5,
    count: 2,
  }, 2]);

  // Nothing decided: nothing appended, the result still comes back.
  const none = await decider.transactEx("Counter-1", (s) => ({ events: [], result: s.count }));
  assert.deepEqual([none.result, none.version, none.appended], [2, 2, 0]);
  assert.equal((await store.readStream("Counter-1")).length, 2);

  // An absent stream is the initial state at version 0.
  assert.deepEqual(await decider.query("Counter-2", (s, ctx) => [s, ctx.version]), [initial, 0]);
});

Deno.test("decider: the context's metadata and tracing ids are recorded on appended events", async () => {
  const store = createMemoryStore();
  const decider = createDecider<Event, State>({ store, codec, initial, fold });
  await decider.transact("Counter-1", () => [...add(1), ...add(2)], {
    context: { meta: { by: "test" }, correlationId: "corr-1", causationId: "cmd-9" },
  });
  const events = await store.readStream("Counter-1");
  assert.deepEqual(events.map((e) => [e.meta, e.correlationId, e.causationId]), [
    [{ by: "test" }, "corr-1", "cmd-9"],
    [{ by: "test" }, "corr-1", "cmd-9"],
  ]);
});

Deno.test("decider: on a conflict it reads only what it missed and decides again", async () => {
  const { store, reads } = recording();
  // Two store objects over one store stand for two processes: within one, transacts on a
  // stream take turns and cannot conflict.
  const a = createDecider<Event, State>({ store, codec, initial, fold });
  const b = createDecider<Event, State>({ store: { ...store }, codec, initial, fold });
  await a.transact("Counter-1", () => add(1));
  reads.length = 0;

  // Both decide on version 1 before either appends: exactly one of them must re-decide.
  let arrived = 0;
  let release!: () => void;
  const bothDecided = new Promise<void>((resolve) => (release = resolve));
  const decide = (n: number) => async (s: State, ctx: { attempt: number; version: number }) => {
    if (ctx.attempt === 1 && ++arrived === 2) release();
    if (ctx.attempt === 1) await bothDecided;
    return { events: add(n), result: [ctx.attempt, ctx.version, s.total] };
  };
  const [ra, rb] = await Promise.all([
    a.transactEx("Counter-1", decide(10)),
    b.transactEx("Counter-1", decide(100)),
  ]);
  const retried = ra.attempts === 2 ? ra : rb;
  const first = ra.attempts === 2 ? rb : ra;
  assert.equal(first.attempts, 1);
  assert.equal(retried.attempts, 2);
  // The retry saw the winner's event: version 2 and its amount folded in.
  assert.deepEqual((retried.result as number[]).slice(0, 2), [2, 2]);
  assert.equal((retried.result as number[])[2], 1 + (first === ra ? 10 : 100));
  assert.deepEqual(retried.state, { total: 111, count: 3 });
  assert.equal(retried.version, 3);
  // Two initial loads from 0 (no cache), then one reload from the known version 1.
  assert.deepEqual(reads.map(([, from]) => from).sort(), [0, 0, 1]);
  assert.deepEqual(await a.query("Counter-1", (s) => s), { total: 111, count: 3 });
});

Deno.test("decider: a conflict on every attempt ends in MaxAttemptsExceededError", async () => {
  const store = createMemoryStore();
  const decider = createDecider<Event, State>({ store, codec, initial, fold, maxAttempts: 4 });
  let decisions = 0;
  await assert.rejects(
    decider.transact("Counter-1", async () => {
      decisions++;
      // A competing writer lands between every load and append.
      await store.append("Counter-1", [{ type: "Added", data: { n: 1 } }], "any");
      return add(5);
    }),
    (e) =>
      e instanceof MaxAttemptsExceededError && e.code === "MaxAttemptsExceeded" &&
      e.attempts === 4 &&
      e.stream === "Counter-1" && e.cause instanceof WrongExpectedVersionError,
  );
  assert.equal(decisions, 4);
  assert.equal((await store.readStream("Counter-1")).length, 4); // only the competitor's events
});

Deno.test("decider: store errors other than conflicts are not retried", async () => {
  const inner = createMemoryStore();
  let appends = 0;
  const store: EventStore = {
    readStream: (s, o) => inner.readStream(s, o),
    append: () => {
      appends++;
      return Promise.reject(new Error("disk on fire")); // a deliberate fault
    },
  };
  const decider = createDecider<Event, State>({ store, codec, initial, fold });
  await assert.rejects(decider.transact("Counter-1", () => add(1)), /disk on fire/);
  assert.equal(appends, 1);
});

Deno.test("decider: with a cache, loads read only events after the cached version", async () => {
  const { store, inner, reads } = recording();
  const cache = createStateCache();
  const decider = createDecider<Event, State>({ store, codec, initial, fold, cache });
  await decider.transact("Counter-1", () => add(1)); // load from 0, then cached at version 1
  await decider.transact("Counter-1", () => add(2)); // reads from 1 (nothing new)
  await inner.append("Counter-1", [codec.encode(add(4)[0])], 2); // another writer
  assert.deepEqual(await decider.query("Counter-1", (s) => s.total), 7);
  assert.deepEqual(reads.map(([, from]) => from), [0, 1, 2]);
  assert.equal(cache.size, 1);

  // allowStale: no read at all; a stale decision is caught by the expected version.
  await inner.append("Counter-1", [codec.encode(add(8)[0])], 3);
  reads.length = 0;
  assert.equal(await decider.query("Counter-1", (s) => s.total, { load: "allowStale" }), 7);
  const outcome = await decider.transactEx(
    "Counter-1",
    (s) => ({ events: add(16), result: s.total }),
    {
      load: "allowStale",
    },
  );
  assert.deepEqual([outcome.attempts, outcome.result, outcome.state.total, outcome.version], [
    2,
    15,
    31,
    5,
  ]);
  assert.deepEqual(reads.map(([, from]) => from), [3]); // only the reload after the conflict
});

Deno.test("decider: deciders share cached states only when built from the same parts", async () => {
  const { store, reads } = recording();
  const cache = createStateCache({ maxEntries: 2 });
  const a = createDecider<Event, State>({ store, codec, initial, fold, cache });
  const b = createDecider<Event, State>({ store, codec, initial, fold, cache });
  const countOnly = createDecider<Event, number>({
    store,
    codec,
    initial: 0,
    fold: (n, events) => n + events.length,
    cache,
  });
  await a.transact("Counter-1", () => [...add(1), ...add(1)]);
  reads.length = 0;
  assert.equal(await b.query("Counter-1", (s) => s.total), 2);
  assert.deepEqual(reads, [["Counter-1", 2]]); // b used a's entry
  assert.equal(await countOnly.query("Counter-1", (n) => n), 2);
  assert.deepEqual(reads[1], ["Counter-1", 0]); // a different fold reads from the start
  // Least recently used entries go once the cache is full.
  await a.transact("Counter-2", () => add(1));
  await a.transact("Counter-3", () => add(1));
  assert.equal(cache.size, 2);
  assert.deepEqual(cache.entries("Counter-1"), []);
});

Deno.test("decider: rolling snapshots are written in the same append and shorten folds", async () => {
  const inner = createMemoryStore();
  const folded: number[] = [];
  const countingFold = (s: State, events: readonly Event[]) => {
    folded.push(events.length);
    return fold(s, events);
  };
  const snapshot = {
    isOrigin: (e: Event) => e.type === "Snapshotted",
    toSnapshot: (s: State): Event => ({ type: "Snapshotted", data: { ...s } }),
    every: 3,
  };
  const writer = createDecider<Event, State>({ store: inner, codec, initial, fold, snapshot });
  for (let i = 1; i <= 7; i++) await writer.transact("Counter-1", () => add(i));
  const types = (await inner.readStream("Counter-1")).map((e) => e.type[0]).join("");
  // Three events after the last snapshot triggers the next one, appended with the third.
  assert.equal(types, "AAASAAASA");
  const snap = (await inner.readStream("Counter-1", { fromIndex: 7, maxCount: 1 }))[0];
  assert.deepEqual(snap.data, { total: 21, count: 6 });

  // A store without LastEventReader: the whole stream is read, the fold starts at the snapshot.
  const plain = recording(inner);
  const cold = createDecider<Event, State>({
    store: plain.store,
    codec,
    initial,
    fold: countingFold,
    snapshot,
  });
  assert.deepEqual(await cold.query("Counter-1", (s, ctx) => [s, ctx.version]), [{
    total: 28,
    count: 7,
  }, 9]);
  assert.deepEqual(plain.reads, [["Counter-1", 0]]);
  assert.deepEqual(folded, [2]); // the snapshot and the one event after it

  // A store that can find the last snapshot: the read starts right after it.
  const reads: number[] = [];
  const capable: EventStore & LastEventReader = {
    readStream: (s, o) => {
      reads.push(o?.fromIndex ?? 0);
      return inner.readStream(s, o);
    },
    append: (s, e, v) => inner.append(s, e, v),
    async readLastEvent(stream, type) {
      return (await inner.readStream(stream)).findLast((e) =>
        type === undefined || e.type === type
      );
    },
  };
  folded.length = 0;
  const fast = createDecider<Event, State>({
    store: capable,
    codec,
    initial,
    fold: countingFold,
    snapshot,
  });
  assert.deepEqual(await fast.query("Counter-1", (s) => s), { total: 28, count: 7 });
  assert.deepEqual(reads, [8]);
  assert.deepEqual(folded, [1, 1]); // the snapshot, then the event after it

  // Deciding on a snapshot-loaded state keeps counting from it: two more events, then a snapshot.
  await fast.transact("Counter-1", () => add(8));
  await fast.transact("Counter-1", () => add(9));
  const tail = await inner.readStream("Counter-1", { fromIndex: 9 });
  assert.deepEqual(tail.map((e) => e.type), ["Added", "Added", "Snapshotted"]);
  assert.deepEqual(tail[2].data, { total: 45, count: 9 });
});

Deno.test("decider: events the codec skips still count towards the version", async () => {
  const store = createMemoryStore();
  const lenient = createCodec<Event>({ Added: {}, Snapshotted: {} }, { onUnknown: "skip" });
  await store.append("Counter-1", [{ type: "Added", data: { n: 1 } }, {
    type: "Renamed",
    data: {},
  }], 0);
  const decider = createDecider<Event, State>({ store, codec: lenient, initial, fold });
  const outcome = await decider.transactEx("Counter-1", () => add(2));
  assert.deepEqual([outcome.version, outcome.attempts, outcome.state.total], [3, 1, 3]);
  assert.equal(lenient.skipped.unknown, 1);

  // The default codec fails the load instead.
  const strict = createDecider<Event, State>({ store, codec, initial, fold });
  await assert.rejects(
    strict.query("Counter-1", (s) => s),
    (e) => (e as Error & { code: string }).code === "UnknownEventType",
  );
});

Deno.test("decider: a store returning events from the wrong index is reported", async () => {
  const inner = createMemoryStore();
  await inner.append("Counter-1", [codec.encode(add(1)[0]), codec.encode(add(1)[0])], 0);
  const store: EventStore = {
    readStream: (s) => inner.readStream(s), // ignores fromIndex: a deliberate fault
    append: (s, e, v) => inner.append(s, e, v),
  };
  const cache = createStateCache();
  const decider = createDecider<Event, State>({ store, codec, initial, fold, cache });
  assert.equal(await decider.query("Counter-1", (s) => s.total), 2);
  await assert.rejects(decider.query("Counter-1", (s) => s.total), StreamReadGapError);
});

Deno.test("decider: options and arguments are checked", async () => {
  const store = createMemoryStore();
  const bad = (options: Record<string, unknown>, field: string) =>
    assert.throws(
      () => createDecider<Event, State>({ store, codec, initial, fold, ...options } as never),
      (e) => e instanceof InvalidArgumentError && e.field === field,
    );
  bad({ store: {} }, "store");
  bad({ codec: {} }, "codec");
  bad({ fold: 1 }, "fold");
  bad({ maxAttempts: 0 }, "maxAttempts");
  bad(
    { snapshot: { isOrigin: () => false, toSnapshot: () => add(1)[0], every: 0 } },
    "snapshot.every",
  );
  bad({ snapshot: { toSnapshot: () => add(1)[0], every: 2 } }, "snapshot.isOrigin");
  assert.throws(() => createStateCache({ maxEntries: 0 }), InvalidArgumentError);

  const decider = createDecider<Event, State>({ store, codec, initial, fold });
  await assert.rejects(decider.query("nodash", (s) => s), InvalidStreamNameError);
  await assert.rejects(
    decider.transact("Counter-1", () => ({ result: 1 }) as never),
    (e) => e instanceof InvalidArgumentError && e.field === "decide",
  );
  await assert.rejects(
    decider.query("Counter-1", (s) => s, { load: "sometimes" as never }),
    (e) => e instanceof InvalidArgumentError && e.field === "load",
  );
  assert.equal((await store.readStream("Counter-1")).length, 0);
});
