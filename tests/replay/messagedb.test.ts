// Replays of MessageDB categories against the PostgreSQL server prepared by tools/postgres.sh
// (IMPEL_PG_URL overrides the default database): from a time, rate limited, progress, pause,
// cancel, groups and their checkpoints.
import assert from "node:assert/strict";
// @ts-types="@types/pg"
import type pg from "pg";
import { PipelineRunningError } from "../../core/checkpoints.ts";
import type { StreamEvent } from "../../core/event.ts";
import type { InvalidArgumentError } from "../../core/errors.ts";
import { initPostgresCheckpoints, postgresCheckpoints } from "../../checkpoints/postgres.ts";
import { messageDbCheckpointKey, messageDbSource } from "../../sources/messagedb.ts";
import { run, streamsSink } from "../../core/sink.ts";
import { positionAtTime, replayMessageDb } from "../../replay/messagedb.ts";
import { seed, unique, withSchema } from "../support/postgres.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The database's clock, so that times compare with MessageDB's `now()` stamps. */
async function dbNow(pool: pg.Pool): Promise<Date> {
  const { rows } = await pool.query("SELECT now() AS now");
  return new Date(rows[0].now);
}

function recorder() {
  const seen: Array<{ stream: string; index: number }> = [];
  return {
    seen,
    handler: (stream: string, events: readonly StreamEvent[]) => {
      for (const e of events) seen.push({ stream, index: e.index });
    },
  };
}

Deno.test("replay from a time: only what was written at or after it, with progress", async () => {
  await withSchema(async (pool) => {
    const category = unique("Replay");
    await seed(pool, category, 4, 5); // 20 before
    await sleep(20);
    const time = await dbNow(pool);
    await sleep(20);
    await seed(pool, category, 4, 5, 5); // 20 after: indexes 5..9
    const found = await positionAtTime(pool, time);
    // A binary search: a handful of lookups, not a scan.
    assert.ok(found.lookups < 70, `lookups ${found.lookups}`);
    const r = recorder();
    const replay = replayMessageDb({
      client: pool,
      categories: [category],
      from: { time },
      handler: r.handler,
      statsIntervalMs: 0,
    });
    const result = await replay.done;
    assert.equal(result.state, "completed");
    assert.equal(result.checkpoints, "none");
    assert.equal(r.seen.length, 20);
    assert.ok(r.seen.every((s) => s.index >= 5), JSON.stringify(r.seen.slice(0, 3)));
    const progress = replay.progress();
    assert.equal(progress.total, 20);
    assert.equal(progress.done, 20);
    assert.equal(progress.fraction, 1);
    assert.equal(progress.from, found.position);
  });
});

Deno.test("positionAtTime: before the oldest message is the oldest's, after the newest the next", async () => {
  await withSchema(async (pool) => {
    await seed(pool, unique("Replay"), 2, 3);
    const { rows } = await pool.query(
      "SELECT min(global_position)::text AS lo, max(global_position)::text AS hi FROM message_store.messages",
    );
    const early = await positionAtTime(pool, new Date("2000-01-01T00:00:00Z"));
    assert.equal(early.position, BigInt(rows[0].lo));
    const late = await positionAtTime(pool, new Date(Date.now() + 86_400_000));
    assert.equal(late.position, BigInt(rows[0].hi) + 1n);
  });
});

Deno.test("replay rate limit: within 10% of the rate asked", async () => {
  await withSchema(async (pool) => {
    const category = unique("Replay");
    await seed(pool, category, 20, 30); // 600 events
    const rate = 300;
    const started = performance.now();
    const replay = replayMessageDb({
      client: pool,
      categories: [category],
      from: { position: 0n },
      rate,
      handler: () => {},
      statsIntervalMs: 0,
    });
    let mid: ReturnType<typeof replay.progress> | undefined;
    const probe = setTimeout(() => (mid = replay.progress()), 1000);
    const result = await replay.done;
    clearTimeout(probe);
    const seconds = (performance.now() - started) / 1000;
    assert.equal(result.done, 600);
    const measured = replay.progress().eventsPerSecond;
    assert.ok(Math.abs(measured - rate) / rate <= 0.1, `measured ${measured.toFixed(1)}/s`);
    // Wall time includes finding the start and end: still within 10% plus that.
    assert.ok(seconds >= 600 / rate * 0.9, `took ${seconds.toFixed(2)} s`);
    // Midway progress: a fraction, a rate, an ETA.
    assert.ok(mid !== undefined && mid.state === "running", JSON.stringify(mid?.state));
    assert.ok(mid!.fraction > 0.2 && mid!.fraction < 0.8, `fraction ${mid!.fraction}`);
    assert.ok(
      mid!.etaMs !== undefined && mid!.etaMs > 300 && mid!.etaMs < 2000,
      `eta ${mid!.etaMs}`,
    );
  });
});

Deno.test("replay pause and resume: nothing is handled while paused", async () => {
  await withSchema(async (pool) => {
    const category = unique("Replay");
    await seed(pool, category, 10, 20); // 200
    const replay = replayMessageDb({
      client: pool,
      categories: [category],
      from: { position: 0n },
      rate: 400,
      handler: () => {},
      statsIntervalMs: 0,
    });
    await sleep(200);
    replay.pause();
    await sleep(100); // batches let through before the pause finish
    const before = replay.progress();
    assert.equal(before.state, "paused");
    await sleep(400);
    const after = replay.progress();
    assert.equal(after.done, before.done, "handled while paused");
    assert.ok(after.elapsedMs - before.elapsedMs < 5, "paused time counted as running");
    assert.ok(before.done < 200);
    replay.resume();
    const result = await replay.done;
    assert.equal(result.state, "completed");
    assert.equal(result.done, 200);
  });
});

// Unthrottled, the sink has read up to maxReadAhead batches of 100 past the gate when the pause
// comes: those calls wait too (1 700 of 2 000 were handled 300 ms after a pause before).
Deno.test("replay pause without a rate: batches already past the gate wait too; cancel while paused", async () => {
  await withSchema(async (pool) => {
    const category = unique("Replay");
    await seed(pool, category, 20, 100); // 2 000
    let handled = 0;
    const stop = new AbortController();
    const replay = replayMessageDb({
      client: pool,
      categories: [category],
      from: { position: 0n },
      signal: stop.signal,
      handler: async (_stream, events) => {
        await sleep(10);
        handled += events.length;
      },
      statsIntervalMs: 0,
    });
    while (handled < 200) await sleep(5);
    replay.pause();
    await sleep(100); // calls already inside the handler end
    const before = handled;
    await sleep(300);
    assert.equal(handled, before, "handled while paused");
    assert.ok(before < 2_000, `${before} handled before the pause took hold`);
    replay.resume();
    while (handled < before + 100) await sleep(5);
    replay.pause();
    await sleep(100);
    const paused = handled;
    stop.abort();
    const result = await replay.done;
    assert.equal(result.state, "cancelled");
    assert.equal(handled, paused, "nothing handled after a cancel while paused");
  });
});

Deno.test("replay into a group: cancel leaves its checkpoint unchanged, completion resets it when asked", async () => {
  await withSchema(async (pool, schema) => {
    await initPostgresCheckpoints(pool, { schema });
    const checkpoints = postgresCheckpoints(pool, { schema });
    const category = unique("Replay");
    await seed(pool, category, 10, 20); // 200
    const group = unique("projector");
    const key = messageDbCheckpointKey(category, { group });
    await checkpoints.commit(key, 3n);
    const cancel = new AbortController();
    const slow = replayMessageDb({
      client: pool,
      categories: [category],
      from: { position: 0n },
      group,
      checkpoints,
      resetCheckpoint: true,
      rate: 200,
      handler: () => {},
      signal: cancel.signal,
      statsIntervalMs: 0,
      commitIntervalMs: 10,
    });
    await sleep(400);
    assert.ok(slow.progress().done > 0, "nothing replayed before the cancel");
    cancel.abort();
    const cancelled = await slow.done;
    assert.equal(cancelled.state, "cancelled");
    assert.equal(cancelled.checkpoints, "unchanged");
    assert.ok(cancelled.done > 0 && cancelled.done < 200, `done ${cancelled.done}`);
    assert.equal(await checkpoints.load(key), 3n);

    // Without resetCheckpoint an existing group keeps its checkpoint, completed or not.
    const kept = await replayMessageDb({
      client: pool,
      categories: [category],
      from: { position: 0n },
      group,
      checkpoints,
      handler: () => {},
      statsIntervalMs: 0,
    }).done;
    assert.equal(kept.state, "completed");
    assert.equal(kept.checkpoints, "unchanged");
    assert.equal(await checkpoints.load(key), 3n);

    const reset = await replayMessageDb({
      client: pool,
      categories: [category],
      from: { position: 0n },
      group,
      checkpoints,
      resetCheckpoint: true,
      handler: () => {},
      statsIntervalMs: 0,
    }).done;
    assert.equal(reset.checkpoints, "reset");
    const { rows } = await pool.query(
      "SELECT max(global_position)::text AS hi FROM message_store.messages WHERE stream_name LIKE $1",
      [`${category}-%`],
    );
    assert.equal(await checkpoints.load(key), BigInt(rows[0].hi) + 1n);
    assert.equal(reset.positions.get(category), BigInt(rows[0].hi) + 1n);

    // A new group is created where the replay ended.
    const fresh = unique("fresh");
    const created = await replayMessageDb({
      client: pool,
      categories: [category],
      from: { position: 0n },
      group: fresh,
      checkpoints,
      handler: () => {},
      statsIntervalMs: 0,
    }).done;
    assert.equal(created.checkpoints, "created");
    assert.equal(
      await checkpoints.load(messageDbCheckpointKey(category, { group: fresh })),
      BigInt(rows[0].hi) + 1n,
    );
  });
});

Deno.test("replay into a group is refused while a pipeline of the group runs", async () => {
  await withSchema(async (pool, schema) => {
    await initPostgresCheckpoints(pool, { schema });
    const checkpoints = postgresCheckpoints(pool, { schema });
    const category = unique("Replay");
    await seed(pool, category, 2, 2);
    const group = unique("projector");
    const key = messageDbCheckpointKey(category, { group });
    await checkpoints.commit(key, 2n);
    // A real pipeline of the group runs: its MessageDB source holds the group's running mark.
    const stop = new AbortController();
    const sink = streamsSink({ group, handler: () => {}, statsIntervalMs: 0 });
    const running = run(
      messageDbSource({
        client: pool,
        categories: [category],
        group,
        checkpoints,
        signal: stop.signal,
      }),
      sink,
      { signal: stop.signal },
    );
    await sink.monitor.awaitCompletion({ tail: true });
    const during = await checkpoints.load(key);
    try {
      const replay = replayMessageDb({
        client: pool,
        categories: [category],
        from: { position: 0n },
        group,
        checkpoints,
        resetCheckpoint: true,
        handler: () => {},
        statsIntervalMs: 0,
      });
      await assert.rejects(replay.done, PipelineRunningError);
      assert.equal(replay.progress().state, "failed");
      assert.equal(await checkpoints.load(key), during, "the replay wrote nothing");
    } finally {
      stop.abort();
      await running;
    }
    // Once it stopped, the replay runs and resets.
    const after = await replayMessageDb({
      client: pool,
      categories: [category],
      from: { position: 0n },
      group,
      checkpoints,
      resetCheckpoint: true,
      handler: () => {},
      statsIntervalMs: 0,
    }).done;
    assert.equal(after.checkpoints, "reset");
  });
});

Deno.test("replay of a set of streams: only theirs, counted as such", async () => {
  await withSchema(async (pool) => {
    const category = unique("Replay");
    await seed(pool, category, 5, 4);
    const r = recorder();
    const replay = replayMessageDb({
      client: pool,
      streams: [`${category}-1`, `${category}-3`],
      from: { position: 0n },
      handler: r.handler,
      statsIntervalMs: 0,
    });
    const result = await replay.done;
    assert.equal(result.done, 8);
    assert.equal(replay.progress().total, 8);
    assert.deepEqual(
      [...new Set(r.seen.map((s) => s.stream))].sort(),
      [`${category}-1`, `${category}-3`],
    );
  });
});

Deno.test("replay of two categories: what is written to the one done first, while the other goes on, is not replayed", async () => {
  await withSchema(async (pool) => {
    const small = unique("ReplayA"), large = unique("ReplayB");
    await seed(pool, small, 1, 5);
    // 2,000 at 1,000/s: two seconds, of which the batches waiting at the gate hold 0.8 s
    await seed(pool, large, 20, 100);
    const r = recorder();
    const replay = replayMessageDb({
      client: pool,
      categories: [small, large],
      from: { position: 0n },
      rate: 1_000,
      handler: r.handler,
      statsIntervalMs: 0,
    });
    while (r.seen.filter((s) => s.stream.startsWith(small)).length < 5) await sleep(10);
    await seed(pool, small, 1, 20, 5); // past its end, while the large one is replayed
    const result = await replay.done;
    assert.equal(result.state, "completed");
    assert.equal(r.seen.filter((s) => s.stream.startsWith(large)).length, 2_000);
    assert.equal(r.seen.filter((s) => s.stream.startsWith(small)).length, 5);
    assert.equal(result.done, replay.progress().total);
  });
});

Deno.test("replay of an empty range completes at once", async () => {
  await withSchema(async (pool) => {
    const category = unique("Replay");
    await seed(pool, category, 1, 2);
    const result = await replayMessageDb({
      client: pool,
      categories: [category],
      from: { time: new Date(Date.now() + 86_400_000) },
      handler: () => assert.fail("nothing to replay"),
      statsIntervalMs: 0,
    }).done;
    assert.equal(result.state, "completed");
    assert.equal(result.done, 0);
  });
});

Deno.test("replay options: bad input is a typed error naming the option", async () => {
  await withSchema((pool) => {
    const base = { client: pool, handler: () => {}, statsIntervalMs: 0 };
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ categories: ["A"] }, "from"],
      [{ categories: ["A"], from: { position: 1 } }, "from.position"],
      [{ categories: ["A"], from: { time: new Date("nope") } }, "from.time"],
      [{ categories: ["A-b"], from: { position: 1n } }, "categories"],
      [{ streams: ["nodash"], from: { position: 1n } }, "streams"],
      [{ categories: ["A"], from: { position: 1n }, group: "g" }, "checkpoints"],
      [{ categories: ["A"], from: { position: 1n }, resetCheckpoint: true }, "resetCheckpoint"],
      [{ categories: ["A"], from: { position: 1n }, rate: 0 }, "rate"],
    ];
    for (const [options, field] of cases) {
      assert.throws(
        () => replayMessageDb({ ...base, ...options } as never),
        (e: unknown) =>
          e instanceof Error && (e as InvalidArgumentError).code === "InvalidArgument" &&
          e.message.includes(field),
        field,
      );
    }
    return Promise.resolve();
  });
});
