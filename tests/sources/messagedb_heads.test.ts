// The MessageDB source knows its heads: awaitCompletion({ tail: true }) is exact without a
// hand-written loop, and metrics show lag without being told the head. Real PostgreSQL
// (tools/postgres.sh; IMPEL_PG_URL overrides the database).
import assert from "node:assert/strict";
import { run, streamsSink } from "../../core/sink.ts";
import { memoryCheckpoints } from "../../checkpoints/memory.ts";
import { messageDbStore } from "../../stores/messagedb.ts";
import { messageDbSource } from "../../sources/messagedb.ts";
import { createMetrics } from "../../observability/metrics.ts";
import { poolFixture, seed, unique } from "../support/postgres.ts";

const withPool = poolFixture({ max: 4 });

Deno.test("messagedb source: awaitCompletion({ tail: true }) waits for what was appended before the call", () =>
  withPool(async (pool) => {
    const category = unique("Heads");
    await seed(pool, category, 3, 2);
    let handled = 0;
    const sink = streamsSink({
      group: "g",
      statsIntervalMs: 0,
      handler: (_stream, events) => void (handled += events.length),
    });
    const metrics = createMetrics({ defaultMetrics: false });
    const pipeline = metrics.addPipeline({ group: "g", source: "messagedb", sink });
    const ac = new AbortController();
    // Polled every 2 s at the tail: an append after the first catch-up is not read for a while.
    const source = messageDbSource({
      client: pool,
      categories: [category],
      group: "g",
      checkpoints: memoryCheckpoints(),
      tailSleepMs: 2000,
      signal: ac.signal,
    });
    const running = run(pipeline.observe(source), sink, { signal: ac.signal });
    await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 10_000 });
    assert.equal(handled, 6);

    const store = messageDbStore(pool);
    for (let s = 0; s < 3; s++) {
      await store.append(`${category}-${s}`, [{ type: "Happened", data: {} }], 2);
    }
    const heads = await source.heads();
    const { rows: [{ max }] } = await pool.query(
      "SELECT max(global_position)::text AS max FROM message_store.messages WHERE stream_name LIKE $1",
      [`${category}-%`],
    );
    assert.deepEqual([...heads], [[category, BigInt(max) + 1n]]);
    const lagBefore = (await pipeline.lags(sink.stats())).tranches.get(category);
    assert.ok(lagBefore !== undefined && lagBefore.lag! > 0, "lag known without positions.head");

    const started = performance.now();
    await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 10_000 });
    assert.equal(handled, 9, "the three appends made before the call were handled");
    assert.ok(performance.now() - started < 9000);
    await new Promise((r) => setTimeout(r, 1100)); // past the head cache
    assert.equal((await pipeline.lags(sink.stats())).tranches.get(category)?.lag, 0);
    const text = await metrics.metrics();
    assert.match(
      text,
      new RegExp(`impel_source_lag\\{group="g",source="messagedb",tranche="${category}"\\} 0`),
    );
    ac.abort();
    await running;
  }));

Deno.test("messagedb source: each static member's head is its own share's newest message", () =>
  withPool(async (pool) => {
    const category = unique("Members");
    await seed(pool, category, 8, 1);
    const members = [0, 1].map((member) =>
      messageDbSource({
        client: pool,
        categories: [category],
        group: "g",
        split: { member, size: 2 },
        checkpoints: memoryCheckpoints(),
      })
    );
    const { rows } = await pool.query(
      `SELECT MOD(@message_store.hash_64(message_store.cardinal_id(stream_name)), 2) AS member,
              (max(global_position) + 1)::text AS head
         FROM message_store.messages WHERE stream_name LIKE $1 GROUP BY 1`,
      [`${category}-%`],
    );
    const expected = new Map(rows.map((r) => [Number(r.member), BigInt(r.head)]));
    for (const [member, source] of members.entries()) {
      const heads = await source.heads();
      assert.deepEqual([...heads.values()], [expected.get(member) ?? 1n], `member ${member}`);
      await source.cancel();
    }
    const empty = messageDbSource({
      client: pool,
      categories: [unique("Empty")],
      group: "g",
      checkpoints: memoryCheckpoints(),
    });
    assert.deepEqual(
      [...(await empty.heads()).values()],
      [1n],
      "an empty category's head is the start",
    );
    await empty.cancel();
  }));
