// Smoke test for Bun against a real backend: MessageDB on the PostgreSQL server prepared by
// tools/postgres.sh (IMPEL_PG_URL overrides postgres://postgres@127.0.0.1:5432/impel_test):
// store → source with NOTIFY wake-up → scheduler → Postgres checkpoints, then a resume.
import { test } from "bun:test";
import assert from "node:assert/strict";
import pg from "pg";
import { initPostgresCheckpoints, postgresCheckpoints } from "../../checkpoints/postgres.ts";
import { run, streamsSink } from "../../mod.ts";
import {
  installNotifyTrigger,
  messageDbCheckpointKey,
  messageDbSource,
  poolNotifications,
} from "../../sources/messagedb.ts";
import { messageDbStore } from "../../stores/messagedb.ts";

const url = process.env.IMPEL_PG_URL ?? "postgres://postgres@127.0.0.1:5432/impel_test";
const unique = (prefix: string) => prefix + crypto.randomUUID().replaceAll("-", "").slice(0, 12);

test("messagedb under Bun: append, handle in order, checkpoint, resume", async () => {
  const pool = new pg.Pool({ connectionString: url, max: 4 });
  const schema = unique("bun_");
  const category = unique("BunSmoke");
  const notifications = poolNotifications(pool);
  try {
    await initPostgresCheckpoints(pool, { schema });
    await installNotifyTrigger(pool);
    const checkpoints = postgresCheckpoints(pool, { schema });
    const store = messageDbStore(pool);
    const append = (s: number, index: number) =>
      store.append(`${category}-${s}`, [{ type: "Happened", data: { s, index } }], index);

    /** Runs until caught up, appends while running, and stops once the handler has seen them. */
    const runOnce = async (appendWhileRunning: () => Promise<unknown>) => {
      const seen = new Map<string, number[]>();
      let handled = 0;
      let target = Infinity;
      let reached!: () => void;
      const reachedTarget = new Promise<void>((resolve) => (reached = resolve));
      const sink = streamsSink({
        statsIntervalMs: 0,
        handler: (stream, events) => {
          seen.set(stream, [...(seen.get(stream) ?? []), ...events.map((e) => e.index)]);
          if ((handled += events.length) >= target) reached();
        },
      });
      const ac = new AbortController();
      const source = messageDbSource({
        client: pool,
        checkpoints,
        notifications,
        categories: [category],
        group: "bun",
        tailSleepMs: 60_000, // within the timeout below, only a NOTIFY can wake the reader
        signal: ac.signal,
      });
      const running = run(source, sink, { signal: ac.signal });
      await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 5_000 });
      target = handled + 3;
      await appendWhileRunning();
      const timeout = setTimeout(() => reached(), 5_000);
      await reachedTarget;
      clearTimeout(timeout);
      ac.abort();
      await running;
      return seen;
    };

    for (let s = 0; s < 3; s++) for (let i = 0; i < 4; i++) await append(s, i);
    const first = await runOnce(() => Promise.all([0, 1, 2].map((s) => append(s, 4))));
    for (let s = 0; s < 3; s++) assert.deepEqual(first.get(`${category}-${s}`), [0, 1, 2, 3, 4]);

    const { rows } = await pool.query(
      "SELECT max(global_position)::text AS max FROM message_store.messages WHERE stream_name LIKE $1",
      [`${category}-%`],
    );
    const key = messageDbCheckpointKey(category, { group: "bun" });
    assert.equal(await checkpoints.load(key), BigInt(rows[0].max) + 1n);

    const second = await runOnce(() => Promise.all([0, 1, 2].map((s) => append(s, 5))));
    for (let s = 0; s < 3; s++) {
      assert.deepEqual(second.get(`${category}-${s}`), [5], "resumed after 4");
    }
  } finally {
    await notifications.close();
    await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await pool.end();
  }
});
