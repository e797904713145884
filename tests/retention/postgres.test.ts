// The retention job against the real PostgreSQL + MessageDB of tools/postgres.sh (IMPEL_PG_URL):
// policies by age and count, first match wins with a wildcard default, each stream's last event
// kept, bounded batches, the horizon, archives, queue dead letters, windows, metrics, bad rules.
import assert from "node:assert/strict";
// @ts-types="@types/pg"
import type pg from "pg";
import { InvalidArgumentError } from "../../core/errors.ts";
import { createMetrics } from "../../observability/metrics.ts";
import { initPostgresQueues, postgresQueues } from "../../queues/postgres.ts";
import {
  initPostgresRetention,
  postgresRetention,
  retentionHorizon,
  RetentionTablesMissingError,
} from "../../retention/postgres.ts";
import { messageDbStore } from "../../stores/messagedb.ts";
import { streamConfig } from "../../core/streamconfig.ts";
import { unique, withSchema } from "../support/postgres.ts";

/** Appends one event at a time, position by position across the streams (s0 p0, s1 p0, ...). */
async function seed(pool: pg.Pool, category: string, streams: number, perStream: number) {
  const store = messageDbStore(pool);
  for (let p = 0; p < perStream; p++) {
    for (let s = 0; s < streams; s++) {
      await store.append(`${category}-${s}`, [{ type: "Happened", data: { s, p } }], p);
    }
  }
}

/** Makes the events of `category` at stream positions below `below` look `days` old. */
async function age(pool: pg.Pool, category: string, below: number, days = 2) {
  await pool.query(
    `UPDATE message_store.messages SET time = time - $3::integer * interval '1 day'
      WHERE stream_name LIKE $1 AND position < $2`,
    [`${category}-%`, below, days],
  );
}

async function positions(pool: pg.Pool, category: string): Promise<Map<string, number[]>> {
  const { rows } = await pool.query(
    `SELECT stream_name, position::integer AS p FROM message_store.messages
      WHERE stream_name LIKE $1 ORDER BY global_position`,
    [`${category}-%`],
  );
  const out = new Map<string, number[]>();
  for (const r of rows) {
    if (!out.has(r.stream_name)) out.set(r.stream_name, []);
    out.get(r.stream_name)!.push(r.p);
  }
  return out;
}

const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i);
const DAY = 86_400_000;

Deno.test("retention: by age, in batches, keeps every stream's last event and raises the horizon", () =>
  withSchema(async (pool, schema) => {
    await initPostgresRetention(pool, { schema });
    const category = unique("RetAge");
    await seed(pool, category, 4, 10); // 40 events, positions 0..9 per stream
    await age(pool, category, 6); // positions 0..5 are two days old
    // one stream entirely old: its last event (9) must stay
    await pool.query(
      `UPDATE message_store.messages SET time = time - interval '2 days' WHERE stream_name = $1`,
      [`${category}-3`],
    );
    const metrics = createMetrics({ defaultMetrics: false });
    const job = postgresRetention(pool, {
      schema,
      rules: [{ target: "category", match: category, policy: { maxAgeMs: DAY } }],
      batchSize: 3, // many statements
      pauseMs: 0,
      metrics,
    });
    const { rows: [top] } = await pool.query(
      `SELECT max(global_position)::text AS g FROM message_store.messages
        WHERE stream_name LIKE $1 AND position = 5`,
      [`${category}-%`],
    );
    const report = await job.runOnce();
    const left = await positions(pool, category);
    // The pass stops at the first event that is not old (stream 0's position 6): stream 3's
    // old events written after it stay until a later pass finds them in the prefix.
    for (let s = 0; s < 3; s++) assert.deepEqual(left.get(`${category}-${s}`), range(6, 10));
    const s3 = left.get(`${category}-3`)!;
    assert.equal(s3.at(-1), 9, "the stream's last event is kept");
    assert.equal(s3[0], 6);
    assert.equal(report.categories[category].removed, 24);
    assert.equal(report.cut, false);
    assert.equal(await retentionHorizon(pool, category, { schema }), BigInt(top.g) + 1n);
    const text = await metrics.metrics();
    assert.match(
      text,
      new RegExp(
        `impel_retention_removed_total\\{target="category",name="${category}",action="deleted"\\} 24`,
      ),
    );
    assert.match(text, /impel_retention_passes_total\{outcome="completed"\} 1/);

    // Writers carry on at the right positions after a removal.
    const store = messageDbStore(pool);
    await store.append(`${category}-0`, [{ type: "Later", data: {} }], 10);
    assert.deepEqual((await positions(pool, category)).get(`${category}-0`), range(6, 11));
  }));

Deno.test("retention: a stream older than the age limit keeps its last event; writers carry on", () =>
  withSchema(async (pool, schema) => {
    await initPostgresRetention(pool, { schema });
    const category = unique("RetLast");
    await seed(pool, category, 3, 5);
    await age(pool, category, 100); // everything old
    const job = postgresRetention(pool, {
      schema,
      rules: [{ target: "category", match: category, policy: { maxAgeMs: DAY, keepLast: 2 } }],
      pauseMs: 0,
    });
    await job.runOnce();
    const left = await positions(pool, category);
    for (let s = 0; s < 3; s++) assert.deepEqual(left.get(`${category}-${s}`), [3, 4]);
    // the next event of a stream is 5, not 0: its version is intact
    const store = messageDbStore(pool);
    await store.append(`${category}-1`, [{ type: "Next", data: {} }], 5);
    assert.deepEqual((await positions(pool, category)).get(`${category}-1`), [3, 4, 5]);
  }));

Deno.test("retention: by count per category, first match wins, the wildcard is the default, archive", () =>
  withSchema(async (pool, schema) => {
    await initPostgresRetention(pool, { schema });
    const prefix = unique("RetCnt", 6);
    const kept = `${prefix}Audit`, counted = `${prefix}Metric`;
    await seed(pool, kept, 2, 10);
    await seed(pool, counted, 5, 10); // 50 events
    const job = postgresRetention(pool, {
      schema,
      rules: [
        { target: "category", match: kept, policy: {} }, // kept forever, though the wildcard matches
        { target: "category", match: `${prefix}*`, policy: { maxCount: 20 }, archive: true },
      ],
      batchSize: 7,
      pauseMs: 0,
    });
    const report = await job.runOnce();
    assert.equal(report.categories[kept], undefined);
    assert.equal([...(await positions(pool, kept)).values()].flat().length, 20);
    const left = await positions(pool, counted);
    // round robin: the newest 20 of the category are positions 6..9 of each stream
    for (const list of left.values()) assert.deepEqual(list, [6, 7, 8, 9]);
    assert.equal(report.categories[counted].removed, 30);
    assert.equal(report.categories[counted].archived, 30);
    const { rows } = await pool.query(
      `SELECT count(*)::integer AS n, count(DISTINCT stream_name)::integer AS streams
         FROM "${schema}".message_archive WHERE stream_name LIKE $1`,
      [`${counted}-%`],
    );
    assert.deepEqual(rows[0], { n: 30, streams: 5 });
    // a second pass has nothing left to do
    const again = await job.runOnce();
    assert.deepEqual(again.categories, {});
  }));

Deno.test("retention: queue dead letters by age and by count, with archive; live messages untouched", () =>
  withSchema(async (pool, schema) => {
    await initPostgresQueues(pool, { schema });
    await initPostgresRetention(pool, { schema });
    const queues = postgresQueues(pool, { schema, maxDeliveries: 1 });
    try {
      const q = unique("jobs-");
      await queues.enqueue(q, Array.from({ length: 12 }, (_, i) => ({ i })));
      // one delivery each, expired at once, then the next dequeue dead-letters them
      await queues.dequeue(q, { visibilityTimeoutMs: 1, max: 12 });
      await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual(await queues.dequeue(q, { visibilityTimeoutMs: 1000, max: 12 }), []);
      assert.equal((await queues.stats(q)).dead, 12);
      await queues.enqueue(q, [{ live: true }]);
      await pool.query(
        `UPDATE "${schema}".queue_dead_letters SET dead_at = dead_at - interval '3 days'
          WHERE queue = $1 AND (body->>'i')::integer < 4`,
        [q],
      );
      const job = postgresRetention(pool, {
        schema,
        queueSchema: schema,
        rules: [{ target: "queue", match: "jobs-*", policy: { maxAgeMs: DAY }, archive: true }],
        batchSize: 3,
        pauseMs: 0,
      });
      const first = await job.runOnce();
      assert.deepEqual(first.queues[q], { removed: 4, archived: 4 });
      assert.equal((await queues.stats(q)).dead, 8);
      const byCount = postgresRetention(pool, {
        schema,
        queueSchema: schema,
        rules: [{ target: "queue", match: q, policy: { maxCount: 5 } }],
        batchSize: 2,
        pauseMs: 0,
      });
      const second = await byCount.runOnce();
      assert.deepEqual(second.queues[q], { removed: 3, archived: 0 });
      const left = (await queues.deadLetters(q)).map((d) => (d.body as { i: number }).i).sort(
        (a, b) => a - b,
      );
      assert.equal(left.length, 5);
      const { rows } = await pool.query(
        `SELECT count(*)::integer AS n FROM "${schema}".queue_dead_letter_archive WHERE queue = $1`,
        [q],
      );
      assert.equal(rows[0].n, 4);
      assert.equal((await queues.stats(q)).ready, 1, "the live message is not retention's");
    } finally {
      await queues.close();
    }
  }));

Deno.test("retention: run() removes only inside its windows, and stops on its signal", () =>
  withSchema(async (pool, schema) => {
    await initPostgresRetention(pool, { schema });
    const category = unique("RetWin");
    await seed(pool, category, 2, 5);
    await age(pool, category, 3);
    const hhmm = (ms: number) => new Date(ms).toISOString().slice(11, 16);
    const now = Date.now();
    const rule = { target: "category" as const, match: category, policy: { maxAgeMs: DAY } };
    // a window two hours away: nothing happens
    const closed = postgresRetention(pool, {
      schema,
      rules: [rule],
      intervalMs: 20,
      windows: [{ start: hhmm(now + 2 * 3_600_000), end: hhmm(now + 3 * 3_600_000) }],
    });
    const ac = new AbortController();
    const running = closed.run(ac.signal);
    await new Promise((r) => setTimeout(r, 300));
    ac.abort();
    await running;
    assert.equal([...(await positions(pool, category)).values()].flat().length, 10);
    // a window around now: the first pass removes the old events
    const open = postgresRetention(pool, {
      schema,
      rules: [rule],
      intervalMs: 20,
      windows: [{ start: hhmm(now - 3_600_000), end: hhmm(now + 3_600_000) }],
    });
    const ac2 = new AbortController();
    const running2 = open.run(ac2.signal);
    for (let i = 0; i < 100; i++) {
      if ([...(await positions(pool, category)).values()].flat().length === 4) break;
      await new Promise((r) => setTimeout(r, 30));
    }
    ac2.abort();
    await running2;
    assert.equal([...(await positions(pool, category)).values()].flat().length, 4);
  }));

Deno.test("retention: bad rules and options are typed errors naming the field; missing tables too", () =>
  withSchema(async (pool, schema) => {
    const bad: Array<[unknown, string]> = [
      [[{ target: "stream", match: "A", policy: {} }], "rules[0].target"],
      [[{ target: "category", match: "Order-*", policy: {} }], "rules[0].match"],
      [[{ target: "category", match: "*der", policy: {} }], "rules[0].match"],
      [[{ target: "category", match: "A", policy: { maxAgeMs: -1 } }], "rules[0].policy.maxAgeMs"],
      [[{ target: "category", match: "A", policy: { keepLast: 0 } }], "rules[0].policy.keepLast"],
      [[{ target: "queue", match: "q", policy: { keepLast: 2 } }], "rules[0].policy.keepLast"],
      [[{ target: "category", match: "A", policy: { maxage: 1 } }], "rules[0].policy.maxage"],
      [[{ target: "category", match: "A", policy: {}, archive: "yes" }], "rules[0].archive"],
      // A rule an earlier one covers never applies: the wildcard would clean what it keeps.
      [[
        { target: "category", match: "*", policy: { maxAgeMs: DAY } },
        { target: "category", match: "Audit", policy: {} },
      ], "rules[1].match"],
      [[
        { target: "queue", match: "jobs*", policy: { maxAgeMs: DAY } },
        { target: "queue", match: "jobs*", policy: {} },
      ], "rules[1].match"],
    ];
    for (const [rules, field] of bad) {
      assert.throws(
        () => postgresRetention(pool, { rules: rules as never }),
        (e) => e instanceof InvalidArgumentError && e.field === field,
        field,
      );
    }
    assert.throws(
      () => postgresRetention(pool, { rules: [], windows: [{ start: "25:00", end: "01:00" }] }),
      (e) => e instanceof InvalidArgumentError && e.field === "windows[0].start",
    );
    assert.throws(
      () =>
        postgresRetention(pool, { rules: [], windows: { start: "02:00", end: "04:00" } as never }),
      (e) => e instanceof InvalidArgumentError && e.field === "windows",
    );
    assert.throws(
      () => postgresRetention(pool, { rules: [], batchSize: 0 }),
      (e) => e instanceof InvalidArgumentError && e.field === "batchSize",
    );
    const category = unique("RetMissing");
    await seed(pool, category, 1, 2);
    await age(pool, category, 1);
    const job = postgresRetention(pool, {
      schema, // never initialised
      rules: [{ target: "category", match: category, policy: { maxAgeMs: DAY } }],
    });
    await assert.rejects(job.runOnce(), RetentionTablesMissingError);
    // A queue rule over a schema without queue tables names the call that makes them.
    const queues = postgresRetention(pool, {
      queueSchema: schema,
      rules: [{ target: "queue", match: "*", policy: { maxAgeMs: DAY } }],
    });
    await assert.rejects(
      queues.runOnce(),
      (e) => e instanceof RetentionTablesMissingError && /initPostgresQueues/.test(e.message),
    );
  }));

Deno.test("retention: a stream configuration gives the rules (retention, lifecycle archive, delivery)", () =>
  withSchema(async (pool, schema) => {
    await initPostgresRetention(pool, { schema });
    const prefix = unique("RetCfg", 6);
    const audit = `${prefix}Audit`, other = `${prefix}Other`;
    await seed(pool, audit, 2, 4);
    await seed(pool, other, 2, 4);
    await age(pool, audit, 100);
    await age(pool, other, 100);
    const config = streamConfig([
      { match: audit, delivery: "broadcast" }, // no retention: kept
      {
        match: `${prefix}*`,
        delivery: "broadcast",
        retention: { maxAgeMs: DAY },
        lifecycle: { expired: "archive" },
      },
      { match: `${prefix}*`, delivery: "queue", retention: { maxAgeMs: DAY } },
    ]);
    const job = postgresRetention(pool, {
      schema,
      queueSchema: schema,
      streams: config,
      pauseMs: 0,
    });
    await initPostgresQueues(pool, { schema });
    const report = await job.runOnce();
    assert.equal(report.categories[audit], undefined);
    assert.deepEqual(report.categories[other], { removed: 6, archived: 6 });
    assert.equal([...(await positions(pool, audit)).values()].flat().length, 8);
    assert.deepEqual([...(await positions(pool, other)).values()], [[3], [3]]);
    assert.throws(
      () => postgresRetention(pool, { streams: config, rules: [] }),
      (e) => e instanceof InvalidArgumentError && e.field === "streams",
    );
  }));
