// A re-send to a hot target searches the target stream for its key once the recent keys are full:
// stores that can find a key themselves (IdempotencyKeyFinder: memory, MessageDB in one query) are
// asked, not read page by page; a store without it is still searched through readStream. The
// MessageDB cases run on the real server (IMPEL_PG_URL).
// @ts-types="@types/pg"
import pg from "pg";
import assert from "node:assert/strict";
import { createCodec } from "../../core/codec.ts";
import { createDecider, IDEMPOTENCY_KEY } from "../../core/decider.ts";
import { InvalidArgumentError } from "../../core/errors.ts";
import type { EventStore } from "../../core/store.ts";
import { InvalidStreamNameError } from "../../core/streamName.ts";
import { createMemoryStore } from "../../sources/memory.ts";
import { messageDbStore } from "../../stores/messagedb.ts";
import { unique, url } from "../support/postgres.ts";

type Counted = { type: "Incremented"; data: { n: number } };
const counterOf = (store: EventStore) =>
  createDecider<Counted, number>({
    store,
    codec: createCodec<Counted>({ Incremented: {} }),
    initial: 0,
    fold: (t, events) => events.reduce((s, e) => s + e.data.n, t),
    idempotencyWindow: 3,
  });
const add = () => [{ type: "Incremented" as const, data: { n: 1 } }];

/** Counts the store's reads and key searches. */
function counted<S extends EventStore>(store: S) {
  const calls = { reads: 0, finds: 0 };
  const readStream = store.readStream.bind(store);
  store.readStream = (stream, options) => {
    calls.reads++;
    return readStream(stream, options);
  };
  const finder = store as S & { findIdempotencyKey?: (...a: never[]) => unknown };
  if (typeof finder.findIdempotencyKey === "function") {
    const find = (finder.findIdempotencyKey as (...a: unknown[]) => unknown).bind(store);
    (finder as unknown as Record<string, unknown>).findIdempotencyKey = (...a: unknown[]) => {
      calls.finds++;
      return find(...a);
    };
  }
  return calls;
}

/** "mine" first, then `others` keyed appends: "mine" is far beyond the window of 3. */
async function seedBeyondWindow(store: EventStore, stream: string, others: number) {
  const counter = counterOf(store);
  await counter.transact(stream, add, { idempotencyKey: "mine" });
  for (let i = 0; i < others; i++) {
    await counter.transact(stream, add, { idempotencyKey: `other-${i}` });
  }
}

async function findsBeyondWindow(store: EventStore, stream: string, others: number) {
  await seedBeyondWindow(store, stream, others);
  const calls = counted(store);
  const counter = counterOf(store); // a fresh decider: as after a restart
  const again = await counter.transactEx(stream, add, { idempotencyKey: "mine", mayRepeat: true });
  assert.equal(again.duplicate, true, "re-send beyond the window applied twice");
  assert.deepEqual(calls, { reads: 1, finds: 1 }, "the load, then one search by the store");
  const fresh = await counter.transactEx(stream, add, { idempotencyKey: "new", mayRepeat: true });
  assert.equal(fresh.duplicate, false);
  assert.equal(fresh.appended, 1);
  // The re-send of the new key is found among the recent keys: no search.
  const repeat = await counter.transactEx(stream, add, { idempotencyKey: "new", mayRepeat: true });
  assert.equal(repeat.duplicate, true);
  assert.equal(calls.finds, 2);
  assert.equal(await counter.query(stream, (t) => t), others + 2);
}

Deno.test("mayRepeat on the memory store: the store finds a key beyond the window", async () => {
  await findsBeyondWindow(createMemoryStore(), "HotCounter-1", 50);
});

Deno.test("mayRepeat on a store without findIdempotencyKey: searched through readStream", async () => {
  const memory = createMemoryStore();
  // Only the EventStore contract: no capability beyond readStream and append.
  const plain: EventStore = {
    readStream: (stream, options) => memory.readStream(stream, options),
    append: (stream, events, expected) => memory.append(stream, events, expected),
  };
  await seedBeyondWindow(plain, "HotCounter-1", 1_100);
  const calls = counted(plain);
  const counter = counterOf(plain);
  const again = await counter.transactEx("HotCounter-1", add, {
    idempotencyKey: "mine",
    mayRepeat: true,
  });
  assert.equal(again.duplicate, true);
  const fresh = await counter.transactEx("HotCounter-1", add, {
    idempotencyKey: "new",
    mayRepeat: true,
  });
  assert.equal(fresh.duplicate, false);
  // Each load reads once; the first search stops at its first page, the second pages through
  // the stream (1 000 + 101 events).
  assert.deepEqual(calls, { reads: 1 + 1 + 1 + 2, finds: 0 });
  assert.equal(await counter.query("HotCounter-1", (t) => t), 1_102);
});

Deno.test("memory findIdempotencyKey: range, string keys only, bad input typed", async () => {
  const store = createMemoryStore();
  await store.append("K-1", [
    { type: "T", data: {}, meta: { [IDEMPOTENCY_KEY]: 7 } },
    { type: "T", data: {}, meta: [IDEMPOTENCY_KEY, 'a\n"b'] },
    { type: "T", data: {}, meta: { [IDEMPOTENCY_KEY]: 'a\n"b' } },
    { type: "T", data: {}, meta: { [IDEMPOTENCY_KEY]: "7" } },
  ], 0);
  assert.equal(await store.findIdempotencyKey("K-1", 'a\n"b'), 2);
  assert.equal(await store.findIdempotencyKey("K-1", "7"), 3);
  assert.equal(await store.findIdempotencyKey("K-1", "7", { toIndex: 3 }), undefined);
  assert.equal(await store.findIdempotencyKey("K-1", 'a\n"b', { fromIndex: 3 }), undefined);
  assert.equal(await store.findIdempotencyKey("Absent-1", "7"), undefined);
  await assert.rejects(store.findIdempotencyKey("K-1", ""), InvalidArgumentError);
  await assert.rejects(
    store.findIdempotencyKey("K-1", "7", { fromIndex: -1 }),
    (e: unknown) => e instanceof InvalidArgumentError && e.field === "fromIndex",
  );
  await assert.rejects(
    store.findIdempotencyKey("K-1", "7", { toIndex: 1.5 }),
    (e: unknown) => e instanceof InvalidArgumentError && e.field === "toIndex",
  );
  await assert.rejects(store.findIdempotencyKey("", "7"), InvalidStreamNameError);
});

// pg keeps sockets and timers of its pool until `end`, which each test awaits.
const pgTest = (name: string, fn: (pool: pg.Pool) => Promise<void>) =>
  Deno.test({
    name,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async () => {
      const pool = new pg.Pool({
        connectionString: url,
        max: 4,
        options: "-c search_path=message_store,public",
      });
      pool.on("error", () => {});
      try {
        await fn(pool);
      } finally {
        await pool.end();
      }
    },
  });

pgTest("mayRepeat on MessageDB: one query finds a key beyond the window", async (pool) => {
  await findsBeyondWindow(messageDbStore(pool), unique("HotCounter-"), 50);
});

pgTest("MessageDB findIdempotencyKey: range, string keys only, bad input typed", async (pool) => {
  const store = messageDbStore(pool);
  const stream = unique("K-");
  await store.append(stream, [
    { type: "T", data: {}, meta: { [IDEMPOTENCY_KEY]: 7 } },
    { type: "T", data: {}, meta: [IDEMPOTENCY_KEY, 'a\n"b'] },
    { type: "T", data: {}, meta: { [IDEMPOTENCY_KEY]: 'a\n"b' }, correlationId: "c-1" },
    { type: "T", data: {}, meta: { [IDEMPOTENCY_KEY]: "7" } },
  ], 0);
  assert.equal(await store.findIdempotencyKey(stream, 'a\n"b'), 2);
  assert.equal(await store.findIdempotencyKey(stream, "7"), 3);
  assert.equal(await store.findIdempotencyKey(stream, "7", { toIndex: 3 }), undefined);
  assert.equal(await store.findIdempotencyKey(stream, 'a\n"b', { fromIndex: 3 }), undefined);
  assert.equal(await store.findIdempotencyKey(unique("Absent-"), "7"), undefined);
  await assert.rejects(store.findIdempotencyKey(stream, ""), InvalidArgumentError);
  await assert.rejects(
    store.findIdempotencyKey(stream, "7", { fromIndex: -1 }),
    (e: unknown) => e instanceof InvalidArgumentError && e.field === "fromIndex",
  );
});
