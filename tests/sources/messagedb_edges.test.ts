// MessageDB edge cases (issue 11, section 4) against the PostgreSQL server prepared by
// tools/postgres.sh; IMPEL_PG_URL overrides the default postgres://postgres@127.0.0.1:5432/impel_test.
// Consumer-group checkpoint keys that a category cannot share, a checkpoint past the store's head,
// stream names without an id written around the store, and pages cut into small batches.
import assert from "node:assert/strict";
import type { Batch } from "../../core/batch.ts";
import type { StreamFailure } from "../../core/failure.ts";
import { InvalidStreamNameError } from "../../core/streamName.ts";
import { run, streamsSink } from "../../core/sink.ts";
import { memoryCheckpoints } from "../../checkpoints/memory.ts";
import type { SqlClient } from "../../stores/messagedb.ts";
import {
  CheckpointPastTailError,
  LegacyCheckpointKeyError,
  messageDbCheckpointKey,
  messageDbSource,
  type MessageDbSourceOptions,
} from "../../sources/messagedb.ts";
import { poolFixture, seed, unique } from "../support/postgres.ts";
import { atTail, readBatches } from "./read_batches.ts";

const withPool = poolFixture({ max: 4 });

const streamsOf = (batches: Batch[]) =>
  new Set(batches.flatMap((b) => b.items.map((i) => i.stream)));

function source(client: SqlClient, category: string, extra: Partial<MessageDbSourceOptions>) {
  return messageDbSource({
    client,
    categories: [category],
    group: "g",
    checkpoints: memoryCheckpoints(),
    tailSleepMs: 20,
    ...extra,
  });
}

Deno.test("messagedb edges: a category named like a member's old key cannot take its checkpoint", () =>
  withPool(async (pool) => {
    const base = unique("Grp");
    const lookalike = `${base}:0/2`; // a legal category: only '-' is not allowed
    await seed(pool, base, 40, 2);
    await seed(pool, lookalike, 5, 2); // written after base: its checkpoint lies beyond base's events
    const checkpoints = memoryCheckpoints();
    // The look-alike category is read to its tail and committed first.
    await readBatches(source(pool, lookalike, { checkpoints }), atTail, { commit: true });
    const lookalikeKey = messageDbCheckpointKey(lookalike, { group: "g" });
    const memberKey = messageDbCheckpointKey(base, {
      group: "g",
      split: { member: 0, size: 2 },
    });
    assert.notEqual(memberKey.tranche, lookalikeKey.tranche);
    assert.equal(memberKey.tranche, `${base}-0/2`);
    // That checkpoint sits where impel 0.1 kept member 0/2's: not taken over silently.
    const member = (m: number, extra: Partial<MessageDbSourceOptions> = {}) =>
      source(pool, base, { checkpoints, split: { member: m, size: 2 }, ...extra });
    await assert.rejects(readBatches(member(0), atTail, { commit: true }), (e: unknown) => {
      assert.ok(e instanceof LegacyCheckpointKeyError, String(e));
      assert.equal(e.legacy.tranche, lookalike);
      return true;
    });
    // Told to, the member starts afresh under its own key, and the two members see every stream.
    const [a, b] = await Promise.all([
      readBatches(member(0, { checkpointPastTail: "warn" }), atTail, { commit: true }),
      readBatches(member(1), atTail, { commit: true }),
    ]);
    const seen = [...streamsOf(a), ...streamsOf(b)].sort();
    assert.deepEqual(seen, Array.from({ length: 40 }, (_, s) => `${base}-${s}`).sort());
    assert.equal(streamsOf(a).size + streamsOf(b).size, 40, "each stream to exactly one member");
    assert.ok((await checkpoints.load(memberKey))! > 0n);
  }));

Deno.test("messagedb edges: a checkpoint past the store's head is refused at start, or warned about", () =>
  withPool(async (pool) => {
    const category = unique("Past");
    await seed(pool, category, 3, 2);
    const { rows } = await pool.query(
      "SELECT (max(global_position) + 1)::text AS head FROM message_store.messages",
    );
    const head = BigInt(rows[0].head);
    const checkpoints = memoryCheckpoints();
    await checkpoints.reset(messageDbCheckpointKey(category, { group: "g" }), head + 50n);
    const sink = streamsSink({ handler: () => {}, statsIntervalMs: 0 });
    await assert.rejects(run(source(pool, category, { checkpoints }), sink), (e: unknown) => {
      assert.ok(e instanceof CheckpointPastTailError, String(e));
      assert.equal(e.checkpoint, head + 50n);
      assert.ok(e.tail >= head && e.tail < head + 50n);
      return true;
    });
    const warned = await readBatches(
      source(pool, category, { checkpoints, checkpointPastTail: "warn" }),
      (bs) => bs.length >= 1,
    );
    assert.equal(warned[0].position, head + 50n);
    // A checkpoint at the head itself is fine.
    await checkpoints.reset(messageDbCheckpointKey(category, { group: "g" }), head);
    const ok = await readBatches(source(pool, category, { checkpoints }), atTail, { commit: true });
    assert.equal(ok.flatMap((b) => b.items).length, 0);
  }));

Deno.test("messagedb edges: streams without an id go to the failure policy, other streams carry on", () =>
  withPool(async (pool) => {
    const category = unique("NoId");
    // write_message accepts these names; the store of stores/messagedb.ts refuses to write them.
    for (const stream of [category, `${category}-`, `${category}-1`, `${category}-1`]) {
      await pool.query(
        "SELECT message_store.write_message(gen_random_uuid()::text, $1, 'T', '{}'::jsonb)",
        [stream],
      );
    }
    const batches = await readBatches(source(pool, category, {}), atTail, { commit: true });
    const items = batches.flatMap((b) => b.items);
    assert.deepEqual(items.map((i) => [i.stream, i.invalid?.constructor.name]), [
      [category, "InvalidStreamNameError"],
      [`${category}-`, "InvalidStreamNameError"],
      [`${category}-1`, undefined],
      [`${category}-1`, undefined],
    ]);
    assert.match(items[0].invalid!.message, /missing '-'/);
    assert.match(items[1].invalid!.message, /empty id/);
    assert.ok(batches.every((b) => b.gapsAreFinal === true), "an ordered log: gaps are final");

    // Through the scheduler: the two bad records are dead-lettered with the error, the handler
    // sees only the good stream.
    const parked: StreamFailure[] = [];
    const handled: string[] = [];
    const sink = streamsSink({
      handler: (stream, events) => void handled.push(...events.map((e) => `${stream}@${e.index}`)),
      failure: { kind: "deadLetter", maxAttempts: 1, deadLetter: (f) => void parked.push(f) },
      retry: { initialDelayMs: 1 },
      statsIntervalMs: 0,
    });
    const ac = new AbortController();
    const running = run(source(pool, category, {}), sink, { signal: ac.signal });
    try {
      await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 10_000 });
    } finally {
      ac.abort();
      await running;
    }
    assert.deepEqual(handled, [`${category}-1@0`, `${category}-1@1`]);
    assert.deepEqual(parked.map((f) => f.stream).sort(), [category, `${category}-`].sort());
    assert.ok(parked.every((f) => f.error instanceof InvalidStreamNameError));
  }));

Deno.test("messagedb edges: a page of 1000 goes out as batches of 100, each checkpointing after its last message", () =>
  withPool(async (pool) => {
    const category = unique("Cut");
    await seed(pool, category, 50, 20); // 1000 messages, one page
    const batches = (await readBatches(source(pool, category, {}), atTail, { commit: true })).slice(
      1,
    );
    const { rows } = await pool.query(
      `SELECT global_position::text AS g FROM message_store.messages
        WHERE message_store.category(stream_name) = $1 ORDER BY global_position`,
      [category],
    );
    assert.equal(rows.length, 1000);
    // A full page does not know it is the last: an empty batch says "at the tail" after it.
    assert.deepEqual(batches.map((b) => b.items.length), [...Array(10).fill(100), 0]);
    assert.deepEqual(
      batches.slice(0, 10).map((b) => b.position),
      Array.from({ length: 10 }, (_, k) => BigInt(rows[k * 100 + 99].g) + 1n),
    );
    assert.deepEqual(batches.map((b) => b.isTail), [...Array(10).fill(false), true]);
    const whole =
      (await readBatches(source(pool, category, { maxBatchItems: 1000 }), atTail, { commit: true }))
        .slice(
          1,
        );
    assert.deepEqual(whole.map((b) => b.items.length), [1000, 0]);
  }));
