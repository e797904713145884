// The MessageDB source through the scheduler (streamsSink + run) against the PostgreSQL server
// prepared by tools/postgres.sh; IMPEL_PG_URL overrides the default
// postgres://postgres@127.0.0.1:5432/impel_test.
import assert from "node:assert/strict";
// @ts-types="@types/pg"
import type pg from "pg";
import type { StreamEvent } from "../../core/event.ts";
import { run, streamsSink } from "../../core/sink.ts";
import { initPostgresCheckpoints, postgresCheckpoints } from "../../checkpoints/postgres.ts";
import {
  installNotifyTrigger,
  messageDbCheckpointKey,
  messageDbSource,
  type MessageDbSourceOptions,
  poolNotifications,
} from "../../sources/messagedb.ts";
import { seed, unique, withSchema } from "../support/postgres.ts";

interface Fixture {
  readonly pool: pg.Pool;
  readonly schema: string;
  readonly options: Pick<MessageDbSourceOptions, "client" | "checkpoints">;
}

async function withFixture(fn: (f: Fixture) => Promise<void>) {
  await withSchema(async (pool, schema) => {
    await initPostgresCheckpoints(pool, { schema });
    await fn({
      pool,
      schema,
      options: { client: pool, checkpoints: postgresCheckpoints(pool, { schema }) },
    });
  });
}

async function lastPosition(pool: pg.Pool, category: string): Promise<bigint> {
  const { rows } = await pool.query(
    "SELECT max(global_position)::text AS max FROM message_store.messages WHERE stream_name LIKE $1",
    [`${category}-%`],
  );
  return BigInt(rows[0].max);
}

/** A handler that records what it saw and checks the scheduler's per-stream guarantees. */
function recorder() {
  const byStream = new Map<string, number[]>();
  const busy = new Set<string>();
  let overlaps = 0, handled = 0;
  const handler = async (stream: string, events: readonly StreamEvent[]) => {
    if (busy.has(stream)) overlaps++;
    busy.add(stream);
    await new Promise((r) => setTimeout(r, 0));
    let list = byStream.get(stream);
    if (list === undefined) byStream.set(stream, list = []);
    for (const e of events) list.push(e.index);
    handled += events.length;
    busy.delete(stream);
  };
  return {
    handler,
    byStream,
    get overlaps() {
      return overlaps;
    },
    get handled() {
      return handled;
    },
  };
}

const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i);

Deno.test("messagedb pipeline: 2000 events over 100 streams handled completely and in order", () =>
  withFixture(async ({ pool, options }) => {
    const category = unique("Pipe");
    await seed(pool, category, 100, 20);
    const seen = recorder();
    const sink = streamsSink({
      handler: seen.handler,
      maxConcurrentStreams: 16,
      statsIntervalMs: 0,
    });
    const controller = new AbortController();
    const running = run(
      messageDbSource({ ...options, categories: [category], group: "pipe", batchSize: 128 }),
      sink,
      { signal: controller.signal },
    );
    await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 20_000 });
    controller.abort();
    await running;

    assert.equal(seen.handled, 2000);
    assert.equal(seen.overlaps, 0, "a stream's handler ran twice at once");
    assert.equal(seen.byStream.size, 100);
    for (let s = 0; s < 100; s++) {
      assert.deepEqual(seen.byStream.get(`${category}-${s}`), range(0, 20));
    }
    // the final commit on stop recorded the position after the last event
    const key = messageDbCheckpointKey(category, { group: "pipe" });
    assert.equal(await options.checkpoints.load(key), (await lastPosition(pool, category)) + 1n);
  }));

Deno.test("messagedb pipeline: stop and resume from the Postgres checkpoint, nothing lost or skipped", () =>
  withFixture(async ({ pool, options }) => {
    const category = unique("Resume");
    await seed(pool, category, 50, 20); // 1000
    const key = messageDbCheckpointKey(category, { group: "resume" });
    const source = (signal: AbortSignal) =>
      messageDbSource({
        ...options,
        categories: [category],
        group: "resume",
        batchSize: 50,
        signal,
      });

    // first run: stop part way through
    const first = recorder();
    const c1 = new AbortController();
    const sink1 = streamsSink({
      handler: async (stream, events) => {
        await first.handler(stream, events);
        if (first.handled >= 400) c1.abort();
      },
      maxConcurrentStreams: 4,
      statsIntervalMs: 0,
    });
    await run(source(c1.signal), sink1, { signal: c1.signal });
    const stoppedAt = await options.checkpoints.load(key);
    assert.ok(stoppedAt !== undefined && stoppedAt > 1n, "the final flush committed progress");
    assert.ok(stoppedAt < (await lastPosition(pool, category)) + 1n, "stopped before the end");

    await seed(pool, category, 50, 10, 20); // 500 more while stopped

    const second = recorder();
    const sink2 = streamsSink({ handler: second.handler, statsIntervalMs: 0 });
    const c2 = new AbortController();
    const running = run(source(c2.signal), sink2, { signal: c2.signal });
    await sink2.monitor.awaitCompletion({ tail: true, timeoutMs: 20_000 });
    c2.abort();
    await running;

    for (let s = 0; s < 50; s++) {
      const stream = `${category}-${s}`;
      const a = first.byStream.get(stream) ?? [];
      const b = second.byStream.get(stream) ?? [];
      assert.deepEqual(a, range(0, a.length), `${stream} first run in order`);
      const resumeAt = b[0] ?? 30;
      // at-least-once: the second run may repeat what the first did after its last commit, but
      // it never starts beyond where the first run stopped
      assert.ok(
        resumeAt <= a.length,
        `${stream}: resumed at ${resumeAt} after handling ${a.length}`,
      );
      assert.deepEqual(b, range(resumeAt, 30), `${stream} second run in order to the end`);
    }
    // the second run did not start from scratch
    assert.ok(second.handled < 1500, `second run handled ${second.handled}`);
    assert.equal(await options.checkpoints.load(key), (await lastPosition(pool, category)) + 1n);
  }));

Deno.test("messagedb pipeline: two consumer-group members handle every stream, exactly one member each", () =>
  withFixture(async ({ pool, options }) => {
    const category = unique("Members");
    await seed(pool, category, 100, 6);
    await installNotifyTrigger(pool);
    const notifications = poolNotifications(pool);
    const controller = new AbortController();
    const members = [0, 1].map((member) => {
      const seen = recorder();
      const sink = streamsSink({
        handler: seen.handler,
        statsIntervalMs: 0,
        group: "members",
      });
      const running = run(
        messageDbSource({
          ...options,
          categories: [category],
          group: "members",
          split: { member, size: 2 },
          notifications,
          tailSleepMs: 10_000,
          batchSize: 100,
        }),
        sink,
        { signal: controller.signal },
      );
      return { seen, sink, running };
    });
    try {
      await Promise.all(
        members.map((m) => m.sink.monitor.awaitCompletion({ tail: true, timeoutMs: 20_000 })),
      );
      // live appends to every stream are routed to the member that owns the stream
      await seed(pool, category, 100, 1, 6);
      const deadline = Date.now() + 10_000;
      while (members[0].seen.handled + members[1].seen.handled < 700 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 20));
      }
    } finally {
      controller.abort();
      await Promise.all(members.map((m) => m.running));
      await notifications.close();
    }
    const [a, b] = members.map((m) => m.seen.byStream);
    assert.ok(a.size > 10 && b.size > 10, `split ${a.size}/${b.size}`);
    for (let s = 0; s < 100; s++) {
      const stream = `${category}-${s}`;
      assert.ok(a.has(stream) !== b.has(stream), `${stream} must be handled by exactly one member`);
      assert.deepEqual(a.get(stream) ?? b.get(stream), range(0, 7));
    }
    const listed = await options.checkpoints.list("messagedb", "members");
    assert.deepEqual(listed.map((c) => c.tranche), [`${category}-0/2`, `${category}-1/2`]);
  }));
