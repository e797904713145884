// The defects a review of the write side reproduced (cache identity, idempotency window, turns,
// cache growth, what encode lets through), each on the stores it concerns: memory, MessageDB
// against the real PostgreSQL server and DynamoDB Local. Stream names and tables are `wsfix…`.
import assert from "node:assert/strict";
import { createCodec, EventEncodeError } from "../../core/codec.ts";
import { createDecider, createStateCache, IDEMPOTENCY_KEY } from "../../core/decider.ts";
import { InvalidArgumentError } from "../../core/errors.ts";
import type { EventStore } from "../../core/store.ts";
import { createMemoryStore } from "../../sources/memory.ts";
import { dynamoStore } from "../../stores/dynamo.ts";
import { messageDbStore } from "../../stores/messagedb.ts";
import { client as dynamoClient, freshTables, opts } from "../support/dynamo.ts";
import { poolFixture, unique } from "../support/postgres.ts";

const withPool = poolFixture({ max: 4 });
const stream = (category = "wsfix") => `${unique(category)}-1`;

type Event =
  | { type: "Added"; data: { n: number } }
  | { type: "Snap"; data: { total: number } };
const codec = createCodec<Event>({ Added: {}, Snap: {} });
const sum = (total: number, events: readonly Event[]) =>
  events.reduce((t, e) => e.type === "Snap" ? e.data.total : t + e.data.n, total);
const add = (n = 1) => (): Event[] => [{ type: "Added", data: { n } }];
const snapshot = {
  isOrigin: (e: Event) => e.type === "Snap",
  toSnapshot: (total: number): Event => ({ type: "Snap", data: { total } }),
  every: 2,
};

/** Runs `fn` with a MessageDB store and a DynamoDB store on a fresh table. */
async function withRealStores(
  fn: (messageDb: EventStore, dynamo: EventStore) => Promise<void>,
): Promise<void> {
  await using t = await freshTables({ tableName: "events" }, "wsfix");
  await withPool((pool) => fn(messageDbStore(pool), dynamoStore(dynamoClient, t)));
}

// 1. The cache is keyed by store too.
async function oneCacheOverTwoStores(a: EventStore, b: EventStore): Promise<void> {
  const s = stream();
  const cache = createStateCache();
  for (let i = 0; i < 3; i++) await b.append(s, [{ type: "Added", data: { n: 1 } }], i);
  const onA = createDecider<Event, number>({ store: a, codec, initial: 0, fold: sum, cache });
  const onB = createDecider<Event, number>({ store: b, codec, initial: 0, fold: sum, cache });
  await onA.transact(s, add(1000));
  // B's decider decides on B's state (3, version 3), not on A's cached 1000 at version 1.
  const outcome = await onB.transactEx(s, (total) => ({ events: add(0)(), result: total }));
  assert.deepEqual([outcome.result, outcome.version, outcome.state], [3, 4, 3]);
  assert.equal(await onA.query(s, (t) => t, { load: "allowStale" }), 1000);
  assert.equal(await onB.query(s, (t) => t, { load: "allowStale" }), 3);
  assert.equal((await a.readStream(s)).length, 1);
  assert.equal(cache.entries(s).length, 2);
}

Deno.test("review: one cache over two memory stores keeps their states apart", () =>
  oneCacheOverTwoStores(createMemoryStore(), createMemoryStore()));
Deno.test({
  name: "review: one cache over MessageDB and DynamoDB keeps their states apart",
  ...opts,
  fn: () => withRealStores((mdb, dyn) => oneCacheOverTwoStores(mdb, dyn)),
});

// 2. Deciders differing only in idempotencyWindow neither trim each other's keys through a
// shared cache nor through snapshots.
async function windowsDoNotTrimEachOther(store: EventStore): Promise<void> {
  const s = stream();
  const cache = createStateCache();
  const make = (idempotencyWindow: number, withCache = true) =>
    createDecider<Event, number>({
      store,
      codec,
      initial: 0,
      fold: sum,
      idempotencyWindow,
      ...(withCache ? { cache } : {}),
    });
  const wide = make(100), narrow = make(1);
  await wide.transact(s, add(10), { idempotencyKey: "cmd-1" });
  await narrow.transact(s, add(10), { idempotencyKey: "cmd-2" });
  const retry = await wide.transactEx(s, add(10), { idempotencyKey: "cmd-1" });
  assert.deepEqual([retry.duplicate, retry.state], [true, 20]);
  assert.deepEqual(
    (await store.readStream(s)).map((e) => (e.meta as Record<string, unknown>)[IDEMPOTENCY_KEY]),
    ["cmd-1", "cmd-2"],
  );

  // Snapshots: the wide decider writes one with 2 keys; a narrow one loading it keeps the wide
  // window, so its own snapshot still carries cmd-1 for a wide reader loading cold from it.
  const t = stream();
  const snapping = (idempotencyWindow: number) =>
    createDecider<Event, number>({
      store,
      codec,
      initial: 0,
      fold: sum,
      snapshot,
      idempotencyWindow,
    });
  await snapping(100).transact(t, add(1), { idempotencyKey: "k1" });
  await snapping(100).transact(t, add(1), { idempotencyKey: "k2" }); // snapshot: [k1, k2]
  await snapping(1).transact(t, add(1), { idempotencyKey: "k3" });
  await snapping(1).transact(t, add(1), { idempotencyKey: "k4" }); // snapshot: [k1..k4]
  const stored = await store.readStream(t);
  assert.deepEqual(
    stored.filter((e) => e.type === "Snap").map((e) => (e.meta as Record<string, unknown>)),
    [
      { idempotencyKeys: ["k1", "k2"], idempotencyWindow: 100 },
      { idempotencyKeys: ["k1", "k2", "k3", "k4"], idempotencyWindow: 100 },
    ],
  );
  const cold = await snapping(100).transactEx(t, add(1), { idempotencyKey: "k1" });
  assert.deepEqual([cold.duplicate, cold.state], [true, 4]);
}

Deno.test("review: idempotency windows do not trim each other (memory)", () =>
  windowsDoNotTrimEachOther(createMemoryStore()));
Deno.test({
  name: "review: idempotency windows do not trim each other (MessageDB, DynamoDB)",
  ...opts,
  fn: () =>
    withRealStores(async (mdb, dyn) => {
      await windowsDoNotTrimEachOther(mdb);
      await windowsDoNotTrimEachOther(dyn);
    }),
});

// 3. Turns never deadlock.
const within = <T>(ms: number, p: Promise<T>): Promise<T> => {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`still pending after ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
};

Deno.test("review: a decide transacting on another stream transacting back does not deadlock", async () => {
  const store = createMemoryStore();
  const d = createDecider<Event, number>({ store, codec, initial: 0, fold: sum, maxTurnMs: 50 });
  const transfer = (from: string, to: string) =>
    d.transact(from, async () => {
      await d.transact(to, add(1));
      return add(1)();
    });
  const started = performance.now();
  await within(
    2_000,
    Promise.all([transfer("wsfixA-1", "wsfixB-1"), transfer("wsfixB-1", "wsfixA-1")]),
  );
  assert.ok(performance.now() - started < 1_000);
  await within(1_000, d.transact("wsfixA-1", add(1)));
  // Each outer decide ran at least once; every append landed at an expected version.
  assert.ok((await store.readStream("wsfixA-1")).length >= 3);
});

Deno.test("review: a decide transacting on its own stream waits at most maxTurnMs (default 1 s)", async () => {
  const store = createMemoryStore();
  const d = createDecider<Event, number>({ store, codec, initial: 0, fold: sum });
  let inner = 0;
  const outcome = await within(
    5_000,
    d.transactEx("wsfixSelf-1", async (total) => {
      if (inner++ === 0) await d.transact("wsfixSelf-1", add(100));
      return { events: add(1)(), result: total };
    }),
  );
  // The inner transact went first; the outer one conflicted and decided again on its state.
  assert.deepEqual([outcome.result, outcome.state, outcome.attempts], [100, 101, 2]);
  assert.throws(
    () => createDecider({ store, codec, initial: 0, fold: sum, maxTurnMs: -1 }),
    InvalidArgumentError,
  );
  // Turns still keep in-process transacts on one stream from conflicting.
  const outcomes = await Promise.all(
    Array.from({ length: 10 }, () => d.transactEx("wsfixTurns-1", add(1))),
  );
  assert.ok(outcomes.every((o) => o.attempts === 1));
});

// 4. A stream's entries are bounded and counted.
Deno.test("review: deciders built per call cannot grow a stream's cache entries without bound", async () => {
  const store = createMemoryStore();
  const cache = createStateCache({ maxEntries: 10 });
  const service = () =>
    createDecider<Event, number>({
      store,
      codec,
      initial: 0,
      fold: sum,
      cache,
      snapshot: { ...snapshot, isOrigin: (e) => e.type === "Snap" }, // a new identity per call
    });
  for (let i = 0; i < 50; i++) await service().transact("wsfixPerCall-1", add(1));
  assert.equal(cache.entries("wsfixPerCall-1").length, 4);
  assert.equal(cache.entryCount, 4);
  // The least recently used entry goes first; maxEntries counts entries, not streams.
  const small = createStateCache({ maxEntries: 3, maxPerStream: 2 });
  const entry = (version: number, owner: object) => ({
    version,
    state: version,
    sinceSnapshot: 0,
    keys: [],
    owner,
  });
  const [o1, o2, o3] = [{}, {}, {}];
  small.set("wsfixX-1", entry(1, o1));
  small.set("wsfixX-1", entry(1, o2));
  small.get("wsfixX-1", o1);
  small.set("wsfixX-1", entry(1, o3));
  assert.deepEqual(small.entries("wsfixX-1").map((e) => e.owner), [o1, o3]);
  small.set("wsfixY-1", entry(1, o1));
  small.set("wsfixZ-1", entry(1, o1));
  assert.deepEqual([small.size, small.entryCount, small.get("wsfixX-1", o1)], [2, 2, undefined]);
  small.delete("wsfixY-1");
  assert.deepEqual([small.size, small.entryCount], [1, 1]);
  assert.throws(() => createStateCache({ maxPerStream: 0 }), InvalidArgumentError);
});

// 5-8. What encode lets through, on the stores that would have kept it differently.
Deno.test({
  name: "review: MessageDB: NUL and lone surrogates are refused at encode, nothing appended",
  ...opts,
  fn: () =>
    withPool(async (pool) => {
      const store = messageDbStore(pool);
      type Note = { type: "Noted"; data: { text: string } };
      const d = createDecider<Note, number>({
        store,
        codec: createCodec<Note>({ Noted: {} }),
        initial: 0,
        fold: (n, es) => n + es.length,
      });
      for (const text of ["a\u0000b", "x\ud800y"]) {
        const s = stream();
        await assert.rejects(
          d.transact(s, () => [{ type: "Noted", data: { text } }]),
          (e) => e instanceof EventEncodeError && e.type === "Noted",
        );
        assert.deepEqual(await store.readStream(s), []);
      }
    }),
});

Deno.test({
  name: "review: DynamoDB: a byte-array body is refused at encode (the codec is JSON)",
  ...opts,
  fn: async () => {
    await using t = await freshTables({ tableName: "events" }, "wsfix");
    const store = dynamoStore(dynamoClient, t);
    type Blob = { type: "Blob"; data: Uint8Array };
    const d = createDecider<Blob, number>({
      store,
      codec: createCodec<Blob>({ Blob: {} }),
      initial: 0,
      fold: (n, es) => n + es.length,
      cache: createStateCache(),
    });
    const s = stream();
    await assert.rejects(
      d.transact(s, () => [{ type: "Blob", data: new Uint8Array([1, 2, 3]) }]),
      (e) => e instanceof EventEncodeError && /byte array/.test(e.message),
    );
    assert.deepEqual(await store.readStream(s), []);
  },
});

Deno.test("review: a metadata toJSON cannot smuggle a reserved key in; its JSON is stored", async () => {
  const store = createMemoryStore();
  const d = createDecider<Event, number>({ store, codec, initial: 0, fold: sum });
  const s = stream();
  await assert.rejects(
    d.transact(s, add(1), { context: { meta: { toJSON: () => ({ schemaVersion: 2 }) } } }),
    (e) => e instanceof EventEncodeError && /schemaVersion is reserved/.test(e.message),
  );
  assert.deepEqual(await store.readStream(s), []);
  await d.transact(s, add(1), { context: { meta: { toJSON: () => ({ user: "ann" }) } } });
  assert.deepEqual((await store.readStream(s))[0].meta, { user: "ann" });
  assert.equal(await d.query(s, (t) => t), 1);
});

Deno.test({
  name: "review: MessageDB: the cached state has the values readers fold; key order may differ",
  ...opts,
  fn: () =>
    withPool(async (pool) => {
      const store = messageDbStore(pool);
      type Seated = { type: "Seated"; data: { seats: Record<string, string> } };
      type Seats = Record<string, string>;
      const make = (cache?: ReturnType<typeof createStateCache>) =>
        createDecider<Seated, Seats>({
          store,
          codec: createCodec<Seated>({ Seated: {} }),
          initial: {},
          fold: (seats, es) => es.reduce((acc, e) => ({ ...acc, ...e.data.seats }), seats),
          ...(cache ? { cache } : {}),
        });
      const s = stream();
      const seats = { zoe: "1A", al: "1B", bob: "1C" };
      const out = await make(createStateCache()).transactEx(s, () => [{
        type: "Seated",
        data: { seats },
      }]);
      const fresh = await make().query(s, (x) => x);
      assert.deepEqual(out.state, fresh);
      // jsonb orders keys by length, then bytewise: documented, not matched.
      assert.deepEqual([Object.keys(out.state), Object.keys(fresh)], [
        ["zoe", "al", "bob"],
        ["al", "bob", "zoe"],
      ]);
    }),
});

// Also: bad arguments reject, and a small maxDelayMs alone is accepted.
Deno.test("review: transactEx rejects on bad arguments; retry: { maxDelayMs: 20 } is accepted", async () => {
  const d = createDecider<Event, number>({
    store: createMemoryStore(),
    codec,
    initial: 0,
    fold: sum,
    retry: { maxDelayMs: 20 },
  });
  let promise: Promise<unknown> | undefined;
  assert.doesNotThrow(() => promise = d.transactEx("bad name", add(1)));
  await assert.rejects(promise!, (e) => (e as Error).name === "InvalidStreamNameError");
  await assert.rejects(d.transactEx("wsfixArgs-1", 5 as never), InvalidArgumentError);
  await assert.rejects(
    d.transactEx("wsfixArgs-1", add(1), { idempotencyKey: "" }),
    InvalidArgumentError,
  );
  // A larger initialDelayMs alone raises the default maximum instead of being refused.
  createDecider({
    store: createMemoryStore(),
    codec,
    initial: 0,
    fold: sum,
    retry: { initialDelayMs: 2_000 },
  });
  assert.throws(
    () =>
      createDecider({
        store: createMemoryStore(),
        codec,
        initial: 0,
        fold: sum,
        retry: { initialDelayMs: 30, maxDelayMs: 20 },
      }),
    InvalidArgumentError,
  );
});
