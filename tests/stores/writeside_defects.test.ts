// The four write-side defects of issue 22, each on the memory store (which round-trips through
// JSON as the real stores do), on MessageDB against the real PostgreSQL server and on DynamoDB
// Local. Every stream name is fresh, prefixed `ws`.
import assert from "node:assert/strict";
import { createCodec, EventDecodeError, EventEncodeError } from "../../core/codec.ts";
import { createDecider, createStateCache } from "../../core/decider.ts";
import type { EventStore } from "../../core/store.ts";
import { guestStayCodec, guestStayService } from "../../examples/hotel/guestStay.ts";
import { createMemoryStore } from "../../sources/memory.ts";
import { dynamoStore } from "../../stores/dynamo.ts";
import { messageDbStore } from "../../stores/messagedb.ts";
import { client as dynamoClient, freshTables, opts } from "../support/dynamo.ts";
import { poolFixture, unique } from "../support/postgres.ts";

const withPool = poolFixture({ max: 4 });
const stream = (category: string) => `${unique(category)}-1`;

type Event = { type: "Added"; data: { n: number | null; at?: unknown } };
const codec = createCodec<Event>({ Added: {} });
const sum = (total: number, events: readonly Event[]) =>
  events.reduce((t, e) => t + (e.data.n ?? 0), total);

async function unreadableDecisionsAreRefused(store: EventStore): Promise<void> {
  const stays = guestStayService(store);
  const stayId = unique("ws");
  await assert.rejects(
    stays.checkIn(stayId, ""),
    (e) => e instanceof EventEncodeError && e.type === "CheckedIn" && /\bat\b/.test(e.message),
  );
  assert.deepEqual(await store.readStream(`GuestStay-${stayId}`), []);
  await stays.checkIn(stayId, "t");
  for (const amount of [12.5, NaN]) {
    await assert.rejects(
      stays.charge(stayId, "c1", amount, "t"),
      (e) => e instanceof EventEncodeError && e.type === "Charged" && /amount/.test(e.message),
    );
  }
  // The stream is still readable and the refused charges are not in it.
  assert.deepEqual(await stays.charge(stayId, "c1", 1250, "t"), { ok: true });
  assert.equal((await stays.read(stayId)).balance, 1250);

  // A lenient codec would skip what it cannot read: refused all the same, never appended.
  const lenient = createCodec<Event>({
    Added: {
      parse: (d) => {
        if (typeof (d as { n?: unknown }).n !== "number") throw new Error("n must be a number");
        return d as Event["data"];
      },
    },
  }, { onMalformed: "skip" });
  const decider = createDecider<Event, number>({ store, codec: lenient, initial: 0, fold: sum });
  const s = stream("wsLenient");
  await assert.rejects(
    decider.transact(s, () => [{ type: "Added", data: { n: NaN } }]),
    EventEncodeError,
  );
  assert.deepEqual(await store.readStream(s), []);
  assert.equal(lenient.skipped.malformed, 0);
}

async function theCacheHoldsWhatReadersFold(store: EventStore): Promise<void> {
  const s = stream("wsCache");
  const writer = createDecider<Event, number>({
    store,
    codec,
    initial: 0,
    fold: sum,
    cache: createStateCache(),
  });
  const reader = createDecider<Event, number>({ store, codec, initial: 0, fold: sum });
  await writer.transact(s, () => [{ type: "Added", data: { n: 5 } }]);
  const outcome = await writer.transactEx(s, () => [{ type: "Added", data: { n: NaN } }]);
  assert.equal(outcome.state, 5); // NaN is stored as null, which adds nothing
  assert.equal(await writer.query(s, (t) => t, { load: "allowStale" }), 5);
  assert.equal(await reader.query(s, (t) => t), 5);

  // A Date is kept as its ISO string, an undefined field disappears: the folded events say so.
  const at = new Date(0);
  const seen: Event[][] = [];
  const recorder = createDecider<Event, number>({
    store,
    codec,
    initial: 0,
    fold: (t, events) => (seen.push([...events]), sum(t, events)),
  });
  await recorder.transact(stream("wsDates"), () => [{
    type: "Added",
    data: { n: 1, at, extra: undefined } as Event["data"],
  }]);
  assert.deepEqual(seen.at(-1), [{ type: "Added", data: { n: 1, at: at.toISOString() } }]);
}

async function reservedMetaKeysAreRefused(store: EventStore): Promise<void> {
  const s = stream("wsMeta");
  const decider = createDecider<Event, number>({ store, codec, initial: 0, fold: sum });
  for (const key of ["schemaVersion", "correlationId", "idempotencyKey"]) {
    await assert.rejects(
      decider.transact(s, () => [{ type: "Added", data: { n: 1 } }], {
        context: { meta: { [key]: 2 } },
      }),
      (e) => e instanceof EventEncodeError && e.message.includes(`context.meta.${key}`),
    );
  }
  assert.deepEqual(await store.readStream(s), []);
  await decider.transact(s, () => [{ type: "Added", data: { n: 1 } }], {
    context: { meta: { by: "ann" } },
  });
  assert.equal(await decider.query(s, (t) => t), 1);
}

async function cacheEntriesBelongToOneDeciderIdentity(store: EventStore): Promise<void> {
  type Mixed = Event | { type: "Audited"; data: Record<string, never> };
  const s = stream("wsShared");
  await store.append(s, [
    { type: "Added", data: { n: 2 } },
    { type: "Audited", data: {} },
    { type: "Added", data: { n: 3 } },
  ], 0);
  const cache = createStateCache();
  const fold = sum as (t: number, events: readonly Mixed[]) => number;
  const lenientCodec = createCodec<Event>({ Added: {} }, { onUnknown: "skip" });
  const strictCodec = createCodec<Event>({ Added: {} });
  const lenient = createDecider<Event, number>({
    store,
    codec: lenientCodec,
    initial: 0,
    fold,
    cache,
  });
  const strict = createDecider<Event, number>({
    store,
    codec: strictCodec,
    initial: 0,
    fold,
    cache,
  });
  assert.equal(await lenient.query(s, (t) => t), 5);
  // The strict decider does not take the lenient one's entry: it reads and refuses "Audited".
  await assert.rejects(
    strict.transact(s, () => [{ type: "Added", data: { n: 1 } }]),
    (e) => e instanceof EventDecodeError && e.type === "Audited" && e.index === 1,
  );
  await assert.rejects(
    strict.query(s, (t) => t, { load: "allowStale" }),
    EventDecodeError,
  );

  // Another initial state is another identity too.
  const from100 = createDecider<Event, number>({
    store,
    codec: lenientCodec,
    initial: 100,
    fold,
    cache,
  });
  assert.equal(await from100.query(s, (t) => t, { load: "allowStale" }), 105);
  // Deciders of the same parts still share: a second lenient one reads nothing.
  const twin = createDecider<Event, number>({
    store,
    codec: lenientCodec,
    initial: 0,
    fold,
    cache,
  });
  assert.equal(await twin.query(s, (t) => t, { load: "allowStale" }), 5);
  assert.equal(cache.entries(s).length, 2);
}

const scenarios: Array<[string, (store: EventStore) => Promise<void>]> = [
  [
    "a decision no reader could decode is refused before it is appended",
    unreadableDecisionsAreRefused,
  ],
  ["the cached state is folded from what the store returns", theCacheHoldsWhatReadersFold],
  ["reserved metadata keys are refused", reservedMetaKeysAreRefused],
  ["cache entries belong to one decider identity", cacheEntriesBelongToOneDeciderIdentity],
];

for (const [name, scenario] of scenarios) {
  Deno.test(`write side on memory: ${name}`, () => scenario(createMemoryStore()));
  Deno.test({
    name: `write side on MessageDB: ${name}`,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: () => withPool((pool) => scenario(messageDbStore(pool))),
  });
  Deno.test(`write side on DynamoDB: ${name}`, opts, async () => {
    await using t = await freshTables({ tableName: "events" });
    await scenario(dynamoStore(dynamoClient, { tableName: t.tableName }));
  });
}

Deno.test("the hotel codec refuses an empty check-in time when encoding", () => {
  assert.throws(
    () => guestStayCodec.encode({ type: "CheckedIn", data: { at: "" } }),
    (e) => e instanceof EventEncodeError && /at must be a non-empty string/.test(e.message),
  );
});
