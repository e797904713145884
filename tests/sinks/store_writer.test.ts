// The store writer's classification (written, duplicate, partial, behind, filtered) and its
// idempotency, against the memory store and the real stores: MessageDB (IMPEL_PG_URL), DynamoDB
// Local (`tools/dynamodb.sh start`) and the local Cosmos server (`tools/cosmos.sh start`). Each
// case runs on every store.
import assert from "node:assert/strict";
// @ts-types="@types/pg"
import pg from "pg";
import type { StreamEvent } from "../../core/event.ts";
import { type EventData, type EventStore, WrongExpectedVersionError } from "../../core/store.ts";
import { InvalidArgumentError } from "../../core/errors.ts";
import { createMemoryStore } from "../../sources/memory.ts";
import { messageDbStore } from "../../stores/messagedb.ts";
import { dynamoStore } from "../../stores/dynamo.ts";
import { cosmosStore } from "../../stores/cosmos.ts";
import {
  PrefixMissingError,
  renameCategory,
  type StoreWriteOutcome,
  storeWriter,
  TargetDivergedError,
} from "../../sinks/store-writer.ts";
import { unique, url } from "../support/postgres.ts";
import { client, freshTables } from "../support/dynamo.ts";
import { freshContainer } from "../support/cosmos.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };

const pool = new pg.Pool({ connectionString: url, max: 8 });
pool.on("error", () => {});
const pgUp = await pool.query("SELECT 1 FROM message_store.messages LIMIT 1").then(
  () => true,
  () => false,
);
if (!pgUp) console.warn(`MessageDB is not reachable at ${url}: its store-writer cases are ignored`);
const tables = await freshTables({ events: "events" }, "swriter-").catch(() => undefined);
if (!tables) console.warn("DynamoDB Local is not reachable: its store-writer cases are ignored");
const container = await freshContainer("swriter").catch(() => undefined);
if (!container) {
  console.warn("no Cosmos server (tools/cosmos.sh): its store-writer cases are ignored");
}

/** Each store under test: a store, and whether it can run here. */
const stores: Array<{ name: string; up: boolean; store: () => EventStore }> = [
  { name: "memory", up: true, store: () => createMemoryStore() },
  { name: "messagedb", up: pgUp, store: () => messageDbStore(pool) },
  {
    name: "dynamo",
    up: tables !== undefined,
    store: () => dynamoStore(client, { tableName: tables!.events }),
  },
  { name: "cosmos", up: container !== undefined, store: () => cosmosStore(container!.container) },
];

/** `n` source events of a stream from `from`, with UUID ids (MessageDB takes only those). */
function span(from: number, n: number, type = "Happened"): StreamEvent[] {
  return Array.from({ length: n }, (_, k) => ({
    index: from + k,
    type: `${type}${from + k}`,
    data: { k: from + k },
    meta: { by: "test" },
    id: crypto.randomUUID(),
    time: new Date(),
    size: 40,
  }));
}

const copy = (e: StreamEvent): EventData => ({
  type: e.type,
  data: e.data,
  id: e.id,
  meta: e.meta,
});

/** The target's events as comparable rows. */
async function rows(store: EventStore, stream: string) {
  return (await store.readStream(stream)).map((e) => [e.index, e.type, e.id, e.data]);
}
const expected = (events: readonly StreamEvent[]) =>
  events.map((e) => [e.index, e.type, e.id, e.data]);

/** A store that counts appends and reads, to see what the writer asked for. */
function counting(store: EventStore) {
  const calls = { appends: 0, reads: 0 };
  const wrapped: EventStore = {
    append: (s, e, v) => {
      calls.appends++;
      return store.append(s, e, v);
    },
    readStream: (s, o) => {
      calls.reads++;
      return store.readStream(s, o);
    },
  };
  return { calls, store: wrapped };
}

for (const { name, up, store: make } of stores) {
  const test = (what: string, fn: (store: EventStore, stream: string) => Promise<void>) =>
    Deno.test({
      name: `store writer (${name}): ${what}`,
      ignore: !up,
      ...opts,
      fn: () => fn(make(), `${unique("Sw")}-${crypto.randomUUID().slice(0, 8)}`),
    });

  test("written: an empty target gets the span", async (store, stream) => {
    const events = span(0, 3);
    const outcomes: StoreWriteOutcome[] = [];
    const writer = storeWriter({ target: store, onOutcome: (o) => outcomes.push(o) });
    assert.equal(await writer.handler(stream, events), 3);
    assert.equal(outcomes.length, 1);
    assert.equal(outcomes[0].kind, "written");
    assert.deepEqual(
      [outcomes[0].written, outcomes[0].skipped, outcomes[0].version, outcomes[0].conflicts],
      [3, 0, 3, 0],
    );
    assert.deepEqual(await rows(store, stream), expected(events));
    // The next span follows at the cached version: one append, no conflict.
    const more = span(3, 2);
    assert.equal((await writer.write(stream, more)).kind, "written");
    assert.deepEqual(await rows(store, stream), expected([...events, ...more]));
    assert.deepEqual(writer.stats().spans, {
      written: 2,
      duplicate: 0,
      partial: 0,
      behind: 0,
      filtered: 0,
    });
    assert.equal(writer.stats().appends, 2);
    assert.equal(writer.stats().conflicts, 0);
  });

  test("duplicate: the target has the span already, nothing is written", async (store, stream) => {
    const events = span(0, 5);
    await store.append(stream, events.map(copy), 0);
    // A new writer (a restart: nothing cached) finds out through the append's conflict.
    const c = counting(store);
    const writer = storeWriter({ target: c.store });
    const o = await writer.write(stream, events.slice(1, 4));
    assert.deepEqual([o.kind, o.written, o.skipped, o.version, o.conflicts], [
      "duplicate",
      0,
      3,
      5,
      1,
    ]);
    assert.equal(await writer.handler(stream, events.slice(0, 2)), 2, "handled: the next index");
    assert.equal(c.calls.appends, 1, "the second duplicate is known from the cached version");
    assert.deepEqual(await rows(store, stream), expected(events));
    assert.deepEqual(writer.stats().events, { written: 0, duplicate: 5, behind: 0, filtered: 0 });
  });

  test("partial duplicate: only the missing suffix is written", async (store, stream) => {
    const events = span(0, 6);
    await store.append(stream, events.slice(0, 3).map(copy), 0);
    const writer = storeWriter({ target: store });
    const o = await writer.write(stream, events.slice(1));
    assert.deepEqual([o.kind, o.written, o.skipped, o.version], ["partial", 3, 2, 6]);
    assert.deepEqual(await rows(store, stream), expected(events));
  });

  test("behind: a span past the target's version is refused, typed", async (store, stream) => {
    const events = span(0, 6);
    await store.append(stream, events.slice(0, 2).map(copy), 0);
    const writer = storeWriter({ target: store });
    const o = await writer.write(stream, events.slice(4));
    assert.deepEqual([o.kind, o.written, o.version, o.index], ["behind", 0, 2, 4]);
    const error = await writer.handler(stream, events.slice(4)).catch((e) => e);
    assert.ok(error instanceof PrefixMissingError);
    assert.equal(error.code, "PrefixMissing");
    assert.deepEqual([error.stream, error.target, error.version, error.index], [
      stream,
      stream,
      2,
      4,
    ]);
    assert.match(error.message, /events 2 to 3 are missing/);
    assert.equal((await store.readStream(stream)).length, 2, "nothing written out of order");
    // Once the prefix is there (another writer), the same span goes through.
    await store.append(stream, events.slice(2, 4).map(copy), 2);
    assert.equal(await writer.handler(stream, events.slice(4)), 6);
    assert.deepEqual(await rows(store, stream), expected(events));
    assert.equal(writer.stats().spans.behind, 2);
    assert.equal(writer.stats().events.behind, 4);
  });

  test(
    "two writers racing on one span: written once, the other classifies",
    async (store, stream) => {
      const events = span(0, 8);
      const a = storeWriter({ target: store }), b = storeWriter({ target: store });
      const [x, y] = await Promise.all([
        a.write(stream, events.slice(0, 5)),
        b.write(stream, events.slice(0, 8)),
      ]);
      assert.deepEqual(await rows(store, stream), expected(events));
      const kinds = [x.kind, y.kind].sort();
      assert.ok(
        ["duplicate,written", "partial,written", "written,written"].includes(kinds.join()),
        `got ${kinds}`,
      );
      assert.equal(x.written + y.written, 8, "every event written exactly once");
    },
  );

  test("a span longer than maxEventsPerAppend goes in several appends", async (store, stream) => {
    const events = span(0, 5);
    const c = counting(store);
    const writer = storeWriter({ target: c.store, maxEventsPerAppend: 2 });
    assert.equal((await writer.write(stream, events)).kind, "written");
    assert.equal(c.calls.appends, 3);
    assert.deepEqual(await rows(store, stream), expected(events));
    // By bytes: 40 each, 100 per append, so two per append.
    const byBytes = counting(store);
    const other = `${stream}b`;
    await storeWriter({ target: byBytes.store, maxBytesPerAppend: 100 }).write(other, span(0, 5));
    assert.equal(byBytes.calls.appends, 3);
  });

  test(
    "a crash between appends of one span resumes as a partial duplicate",
    async (store, stream) => {
      const events = span(0, 5);
      let appends = 0;
      const crashing: EventStore = {
        readStream: (s, o) => store.readStream(s, o),
        append: (s, e, v) => {
          if (++appends === 2) return Promise.reject(new Error("connection lost"));
          return store.append(s, e, v);
        },
      };
      const writer = storeWriter({ target: crashing, maxEventsPerAppend: 2 });
      await assert.rejects(writer.handler(stream, events), /connection lost/);
      // The retry (a new process: nothing cached) skips what landed and writes the rest.
      const o = await storeWriter({ target: store }).write(stream, events);
      assert.deepEqual([o.kind, o.skipped, o.written], ["partial", 2, 3]);
      assert.deepEqual(await rows(store, stream), expected(events));
    },
  );

  test(
    "verify: a duplicate whose events differ is a TargetDivergedError",
    async (store, stream) => {
      const events = span(0, 3);
      await store.append(stream, events.map(copy), 0);
      const writer = storeWriter({ target: store, verify: true });
      assert.equal((await writer.write(stream, events)).kind, "duplicate", "same ids: fine");
      const other = span(0, 3); // same types, other ids
      const error = await storeWriter({ target: store, verify: true }).write(stream, other).catch(
        (e) => e,
      );
      assert.ok(error instanceof TargetDivergedError, String(error));
      assert.equal(error.index, 0);
      assert.match(error.message, /has id .* expected id/);
      const renamed = span(0, 3, "Other");
      const typed = await storeWriter({ target: store, verify: true }).write(stream, renamed)
        .catch((e) => e);
      assert.ok(typed instanceof TargetDivergedError);
      assert.match(typed.message, /has type Happened0, expected type Other0/);
    },
  );

  test("mapping: renamed category, streams left out, transformed events", async (store, stream) => {
    const [category, id] = [stream.split("-")[0], stream.slice(stream.indexOf("-") + 1)];
    const events = span(0, 2);
    const writer = storeWriter({
      target: store,
      stream: renameCategory({ [category]: `${category}Copy` }, { others: "drop" }),
      event: (e, from) => ({
        type: e.type,
        data: { ...(e.data as object), from },
        id: e.id,
        meta: { copied: true },
      }),
    });
    const o = await writer.write(stream, events);
    assert.equal(o.target, `${category}Copy-${id}`);
    const copied = await store.readStream(`${category}Copy-${id}`);
    assert.deepEqual(copied.map((e) => [e.index, e.type, e.data, e.meta]), [
      [0, "Happened0", { k: 0, from: stream }, { copied: true }],
      [1, "Happened1", { k: 1, from: stream }, { copied: true }],
    ]);
    assert.deepEqual(await store.readStream(stream), [], "the source name is not written");
    const left = await writer.write(`Elsewhere-${id}`, events);
    assert.deepEqual([left.kind, left.target, left.written], ["filtered", undefined, 0]);
    assert.equal(await writer.handler(`Elsewhere-${id}`, events), 2, "left out counts as handled");
    assert.deepEqual(await store.readStream(`Elsewhere-${id}`), []);
    assert.deepEqual(writer.stats().events.filtered, 4);
  });
}

Deno.test("store writer: bad spans and options are refused with the field named", async () => {
  const writer = storeWriter({ target: createMemoryStore() });
  await assert.rejects(
    writer.write("Order-1", []),
    (e: unknown) => e instanceof InvalidArgumentError && e.field === "events",
  );
  const gap = [...span(0, 2), ...span(3, 1)];
  await assert.rejects(
    writer.handler("Order-1", gap),
    (e: unknown) =>
      e instanceof InvalidArgumentError && e.field === "events[2].index" &&
      /must be 2 .*got 3/.test(e.message),
  );
  await assert.rejects(writer.write("Order-1", span(-1, 1)), /events\[0\]\.index/);
  await assert.rejects(writer.write("nodash", span(0, 1)), /nodash/);
  const badName = storeWriter({ target: createMemoryStore(), stream: () => "no dash" });
  await assert.rejects(badName.write("Order-1", span(0, 1)), /no dash/);
  assert.throws(
    () => storeWriter({} as never),
    (e: unknown) => e instanceof InvalidArgumentError && e.field === "target",
  );
  assert.throws(
    () => storeWriter({ target: createMemoryStore(), maxEventsPerAppend: 0 }),
    /maxEventsPerAppend/,
  );
  assert.throws(
    () => storeWriter({ target: createMemoryStore(), maxConflicts: 0 }),
    /maxConflicts must be an integer >= 1/,
  );
  assert.throws(
    () => storeWriter({ target: createMemoryStore(), stream: "Copy" as never }),
    /stream must be a function/,
  );
  assert.throws(() => renameCategory({ "Or-der": "X" }), /Or-der/);
});

Deno.test("store writer: a conflict that does not say the version is followed by a read of it", async () => {
  const store = createMemoryStore();
  const events = span(0, 4);
  await store.append("Order-1", events.slice(0, 3).map(copy), 0);
  let probes = 0;
  // A store whose conflicts carry no version (the contract allows it).
  const silent: EventStore = {
    readStream: (s, o) => store.readStream(s, o),
    append: async (s, e, v) => {
      if (e.length === 0) probes++;
      try {
        return await store.append(s, e, v);
      } catch (error) {
        if (error instanceof WrongExpectedVersionError) {
          throw new WrongExpectedVersionError(s, error.expected, undefined);
        }
        throw error;
      }
    },
  };
  const o = await storeWriter({ target: silent }).write("Order-1", events);
  assert.deepEqual([o.kind, o.skipped, o.written, o.conflicts], ["partial", 3, 1, 1]);
  assert.equal(probes, 1);
});

Deno.test("store writer: a call that keeps meeting conflicts gives up after maxConflicts", async () => {
  const store = createMemoryStore();
  let appends = 0;
  // Each append meets another writer that got there first and moved on by one event.
  const busy: EventStore = {
    readStream: (s, o) => store.readStream(s, o),
    append: async (s, e, v) => {
      if (e.length > 0) {
        appends++;
        await store.append(s, [{ type: "Other", data: {} }], "any");
      }
      return store.append(s, e, v);
    },
  };
  const writer = storeWriter({ target: busy, maxConflicts: 2 });
  // Two events: the other writer fills 0, then 1 - a duplicate by version after two conflicts
  // (verify would refuse it: the events are not these).
  const o = await writer.write("Order-1", span(0, 2));
  assert.deepEqual([o.kind, o.conflicts, appends], ["duplicate", 2, 2]);
  // Five events: a third conflict is thrown for the sink's backoff.
  await assert.rejects(writer.write("Order-2", span(0, 5)), WrongExpectedVersionError);
  assert.equal(writer.stats().conflicts, 5);
});

Deno.test({
  name: "store writer: cleanup",
  ...opts,
  async fn() {
    await pool.end();
    await tables?.[Symbol.asyncDispose]();
    await container?.[Symbol.asyncDispose]();
  },
});
