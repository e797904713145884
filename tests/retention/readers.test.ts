// Readers below the retention horizon, through a real reactor (messageDbSource + streamsSink +
// run) on the PostgreSQL + MessageDB of tools/postgres.sh (IMPEL_PG_URL): a checkpoint below the
// horizon fails with a typed error or, by option, reads on from the oldest retained event with a
// warning; a stream whose first retained event has version 6 is handled, not stalled as a gap;
// a running reader the cleanup job overtakes gets the same outcome.
import assert from "node:assert/strict";
import { configure, type LogRecord, reset } from "@logtape/logtape";
// @ts-types="@types/pg"
import type pg from "pg";
import { initPostgresCheckpoints, postgresCheckpoints } from "../../checkpoints/postgres.ts";
import type { StreamEvent } from "../../core/event.ts";
import { run, streamsSink } from "../../core/sink.ts";
import { initPostgresRetention, postgresRetention } from "../../retention/postgres.ts";
import {
  BelowRetentionHorizonError,
  messageDbCheckpointKey,
  messageDbSource,
  type MessageDbSourceOptions,
} from "../../sources/messagedb.ts";
import { InvalidArgumentError } from "../../core/errors.ts";
import { messageDbStore } from "../../stores/messagedb.ts";
import { unique, withSchema } from "../support/postgres.ts";

const DAY = 86_400_000;
const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i);

/** `streams` streams of `perStream` events, written position by position across the streams. */
async function seed(pool: pg.Pool, category: string, streams: number, perStream: number) {
  const store = messageDbStore(pool);
  for (let p = 0; p < perStream; p++) {
    for (let s = 0; s < streams; s++) {
      await store.append(`${category}-${s}`, [{ type: "Happened", data: { s, p } }], p);
    }
  }
}

/** Ages the events below stream position `below` and runs one retention pass (maxAgeMs a day). */
async function expire(pool: pg.Pool, schema: string, category: string, below: number) {
  await pool.query(
    `UPDATE message_store.messages SET time = time - interval '2 days'
      WHERE stream_name LIKE $1 AND position < $2`,
    [`${category}-%`, below],
  );
  const job = postgresRetention(pool, {
    schema,
    rules: [{ target: "category", match: category, policy: { maxAgeMs: DAY } }],
    pauseMs: 0,
  });
  return await job.runOnce();
}

async function firstPosition(pool: pg.Pool, category: string): Promise<bigint> {
  const { rows } = await pool.query(
    `SELECT min(global_position)::text AS g FROM message_store.messages WHERE stream_name LIKE $1`,
    [`${category}-%`],
  );
  return BigInt(rows[0].g);
}

interface Fixture {
  pool: pg.Pool;
  schema: string;
  options: Pick<MessageDbSourceOptions, "client" | "checkpoints">;
}

const withFixture = (fn: (f: Fixture) => Promise<void>) =>
  withSchema(async (pool, schema) => {
    await initPostgresCheckpoints(pool, { schema });
    await initPostgresRetention(pool, { schema });
    await fn({
      pool,
      schema,
      options: { client: pool, checkpoints: postgresCheckpoints(pool, { schema }) },
    });
  });

function recorder() {
  const byStream = new Map<string, number[]>();
  return {
    byStream,
    handler: (stream: string, events: readonly StreamEvent[]) => {
      if (!byStream.has(stream)) byStream.set(stream, []);
      for (const e of events) byStream.get(stream)!.push(e.index);
    },
  };
}

Deno.test("readers below the horizon: a checkpoint below it fails with BelowRetentionHorizonError by default", () =>
  withFixture(async ({ pool, schema, options }) => {
    const category = unique("HorFail");
    await seed(pool, category, 3, 10);
    const key = messageDbCheckpointKey(category, { group: "g" });
    // handled the first event only, then stopped for longer than the retention
    await options.checkpoints.commit(key, (await firstPosition(pool, category)) + 1n);
    const report = await expire(pool, schema, category, 6);
    assert.equal(report.categories[category].removed, 18);
    const seen = recorder();
    const sink = streamsSink({ handler: seen.handler, statsIntervalMs: 0 });
    const error = await run(
      messageDbSource({ ...options, categories: [category], group: "g", retention: { schema } }),
      sink,
    ).then(() => undefined, (e) => e);
    assert.ok(error instanceof BelowRetentionHorizonError, `got ${error}`);
    assert.equal(error.tranche, category);
    assert.ok(error.horizon > error.position);
    assert.equal(seen.byStream.size, 0, "nothing was handled past the missing events");
    assert.equal(
      await options.checkpoints.load(key),
      error.position,
      "the checkpoint is unchanged",
    );
  }));

Deno.test("readers below the horizon: warn reads on from the oldest retained event; streams that start at version 6 are handled", () =>
  withFixture(async ({ pool, schema, options }) => {
    const category = unique("HorWarn");
    await seed(pool, category, 3, 10);
    const key = messageDbCheckpointKey(category, { group: "g" });
    await options.checkpoints.commit(key, (await firstPosition(pool, category)) + 1n);
    await expire(pool, schema, category, 6);
    const seen = recorder();
    const sink = streamsSink({ handler: seen.handler, statsIntervalMs: 0 });
    const ac = new AbortController();
    const records: LogRecord[] = [];
    await configure({
      reset: true,
      sinks: { buffer: (r) => void records.push(r) },
      loggers: [
        { category: ["impel", "messagedb"], lowestLevel: "warning", sinks: ["buffer"] },
        { category: ["logtape", "meta"], lowestLevel: "warning", sinks: [] },
      ],
    });
    try {
      const running = run(
        messageDbSource({
          ...options,
          categories: [category],
          group: "g",
          retention: { schema, belowHorizon: "warn" },
          signal: ac.signal,
        }),
        sink,
        { signal: ac.signal },
      );
      await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 10_000 });
      ac.abort();
      await running;
    } finally {
      await reset();
    }
    const warnings = records.filter((r) =>
      r.message.join("").includes("below the retention horizon")
    );
    assert.equal(warnings.length, 1, "one warning for the one crossing");
    for (let s = 0; s < 3; s++) {
      assert.deepEqual(seen.byStream.get(`${category}-${s}`), range(6, 10));
    }
  }));

Deno.test("readers below the horizon: a new group reads from the oldest retained event, no warning, no gap stall", () =>
  withFixture(async ({ pool, schema, options }) => {
    const category = unique("HorNew");
    await seed(pool, category, 4, 10);
    // stream 3 is old throughout: the pass stops at the first young event (stream 0's 6), so it
    // keeps 6..9 too; then a second pass after stream 3 has become the oldest part
    await expire(pool, schema, category, 6);
    const seen = recorder();
    // the default gap policy faults: a stream whose first event is 6 must not count as a gap
    const sink = streamsSink({ handler: seen.handler, statsIntervalMs: 0 });
    const ac = new AbortController();
    const running = run(
      messageDbSource({
        ...options,
        categories: [category],
        group: "fresh",
        retention: { schema }, // belowHorizon "fail": a reader without a checkpoint is not below
        signal: ac.signal,
      }),
      sink,
      { signal: ac.signal },
    );
    await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 10_000 });
    ac.abort();
    await running;
    for (let s = 0; s < 4; s++) {
      assert.deepEqual(seen.byStream.get(`${category}-${s}`), range(6, 10));
    }
  }));

Deno.test("readers below the horizon: a running reader the cleanup job overtakes gets the outcome", () =>
  withFixture(async ({ pool, schema, options }) => {
    const category = unique("HorRun");
    await seed(pool, category, 2, 30); // 60 events
    let release!: () => void;
    const gate = new Promise<void>((r) => release = r);
    let calls = 0;
    const sink = streamsSink({
      handler: async () => {
        if (calls++ === 0) await gate;
      },
      maxConcurrentStreams: 1,
      maxReadAhead: 1,
      statsIntervalMs: 0,
    });
    const source = messageDbSource({
      ...options,
      categories: [category],
      group: "g",
      batchSize: 4,
      maxBatchItems: 4,
      retention: { schema },
    });
    const running = run(source, sink).then(() => undefined, (e) => e);
    while (calls === 0) await new Promise((r) => setTimeout(r, 10));
    // the reader is held near the start; the job removes most of the category ahead of it
    const report = await expire(pool, schema, category, 25);
    assert.equal(report.categories[category].removed, 50);
    release();
    const error = await running;
    assert.ok(error instanceof BelowRetentionHorizonError, `got ${error}`);
  }));

Deno.test("readers below the horizon: bad retention options are typed errors", () => {
  const client = { query: () => Promise.resolve({ rows: [] }) };
  const checkpoints = { load: () => Promise.resolve(undefined) } as never;
  for (
    const [retention, field] of [
      [{ belowHorizon: "skip" }, "retention.belowHorizon"],
      [{ schema: "no such" }, "retention.schema"],
      ["fail", "retention"],
    ] as const
  ) {
    assert.throws(
      () =>
        messageDbSource({
          client,
          checkpoints,
          categories: ["A"],
          group: "g",
          retention: retention as never,
        }),
      (e) => e instanceof InvalidArgumentError && e.field === field,
      field,
    );
  }
});

Deno.test("readers below the horizon: overtaken while running under warn, a known stream's gap goes to the gaps policy (skip carries on)", () =>
  withFixture(async ({ pool, schema, options }) => {
    for (const gaps of ["skip"] as const) {
      const category = unique("HorGap");
      await seed(pool, category, 2, 30);
      let release!: () => void;
      const gate = new Promise<void>((r) => release = r);
      let calls = 0;
      const seen = recorder();
      const sink = streamsSink({
        handler: async (stream, events) => {
          if (calls++ === 0) await gate;
          seen.handler(stream, events);
        },
        gaps,
        maxConcurrentStreams: 1,
        maxReadAhead: 1,
        statsIntervalMs: 0,
      });
      const ac = new AbortController();
      const source = messageDbSource({
        ...options,
        categories: [category],
        group: "g",
        batchSize: 4,
        maxBatchItems: 4,
        retention: { schema, belowHorizon: "warn" },
        signal: ac.signal,
      });
      const running = run(source, sink, { signal: ac.signal }).then(() => undefined, (e) => e);
      while (calls === 0) await new Promise((r) => setTimeout(r, 10));
      await expire(pool, schema, category, 25);
      release();
      await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 10_000 });
      ac.abort();
      assert.equal(await running, undefined);
      for (const list of seen.byStream.values()) {
        assert.deepEqual(list.slice(-5), range(25, 30), "carried on to the end past the gap");
      }
      const jumped = [...seen.byStream.values()].some((l) =>
        l.some((v, i) => i > 0 && v !== l[i - 1] + 1)
      );
      assert.ok(jumped, "a known stream met removed events (a gap) and skipped it");
    }
  }));
