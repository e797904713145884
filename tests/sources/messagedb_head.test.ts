// The MessageDB source's past-tail check against a store whose newest messages were deleted
// (retention, erasure): the head is the sequence's, which never goes back. Real PostgreSQL
// (tools/postgres.sh; IMPEL_PG_URL overrides the database).
import assert from "node:assert/strict";
import { memoryCheckpoints } from "../../checkpoints/memory.ts";
import {
  CheckpointPastTailError,
  messageDbCheckpointKey,
  messageDbSource,
} from "../../sources/messagedb.ts";
import { poolFixture, unique } from "../support/postgres.ts";

const withPool = poolFixture({ max: 2 });

Deno.test("messagedb source: a checkpoint just past the deleted newest message is not past the tail", () =>
  withPool(async (pool) => {
    const category = unique("Erased");
    for (let i = 0; i < 3; i++) {
      await pool.query("SELECT message_store.write_message($1, $2, 'T', '{}')", [
        crypto.randomUUID(),
        `${category}-${i}`,
      ]);
    }
    const { rows: [{ last }] } = await pool.query(
      "SELECT max(global_position)::text AS last FROM message_store.messages WHERE stream_name = $1",
      [`${category}-2`],
    );
    const checkpoints = memoryCheckpoints();
    const key = messageDbCheckpointKey(category, { group: "g" });
    await checkpoints.commit(key, BigInt(last) + 1n); // all handled
    await pool.query("DELETE FROM message_store.messages WHERE stream_name = $1", [
      `${category}-2`,
    ]);
    const options = {
      client: pool,
      categories: [category],
      group: "g",
      checkpoints,
      tailSleepMs: 20,
    };
    const reader = messageDbSource(options).getReader();
    try {
      const first = await reader.read();
      const second = await reader.read();
      assert.deepEqual(
        [first.value?.position, second.value?.position, second.value?.isTail],
        [BigInt(last) + 1n, BigInt(last) + 1n, true],
      );
    } finally {
      await reader.cancel();
    }
    // Beyond the sequence's head it is still refused.
    const { rows: [{ seq }] } = await pool.query(
      `SELECT pg_sequence_last_value(pg_get_serial_sequence('message_store.messages',
         'global_position')::regclass)::text AS seq`,
    );
    await checkpoints.reset(key, BigInt(seq) + 100n);
    const refused = messageDbSource(options).getReader();
    await assert.rejects(async () => {
      for (;;) await refused.read();
    }, (e) => e instanceof CheckpointPastTailError && e.tail >= BigInt(seq) + 1n);
  }));
