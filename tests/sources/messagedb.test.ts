// Runs against the PostgreSQL server prepared by tools/postgres.sh (database with the MessageDB
// schema); IMPEL_PG_URL overrides the default postgres://postgres@127.0.0.1:5432/impel_test.
// These tests consume the source's ReadableStream directly; messagedb_pipeline.test.ts runs it
// through the scheduler.
import assert from "node:assert/strict";
// @ts-types="@types/pg"
import pg from "pg";
import type { Batch } from "../../core/batch.ts";
import { ImpelError, InvalidArgumentError } from "../../core/errors.ts";
import { InvalidStreamNameError } from "../../core/streamName.ts";
import { memoryCheckpoints } from "../../checkpoints/memory.ts";
import { initPostgresCheckpoints, postgresCheckpoints } from "../../checkpoints/postgres.ts";
import { messageDbStore, type SqlClient } from "../../stores/messagedb.ts";
import {
  installNotifyTrigger,
  messageDbCheckpointKey,
  messageDbSource,
  type MessageDbSourceOptions,
  poolNotifications,
} from "../../sources/messagedb.ts";
import { poolFixture, seed, unique, url } from "../support/postgres.ts";

const withPool = poolFixture({ max: 6 });

interface Seen {
  /** indexes per stream, in the order read */
  readonly byStream: Map<string, number[]>;
  readonly batches: Batch[];
  count: number;
}

/**
 * Reads batches until `done` holds, committing each batch's position in order (what a sink does
 * once a batch is handled), then cancels the stream.
 */
async function readUntil(
  source: ReadableStream<Batch>,
  done: (seen: Seen) => boolean,
  options: { commit?: boolean; timeoutMs?: number } = {},
): Promise<Seen> {
  const seen: Seen = { byStream: new Map(), batches: [], count: 0 };
  const reader = source.getReader();
  const timer = setTimeout(
    () => reader.cancel(new Error("timed out")),
    options.timeoutMs ?? 20_000,
  );
  try {
    while (!done(seen)) {
      const r = await reader.read();
      if (r.done) break;
      seen.batches.push(r.value);
      for (const { stream, event } of r.value.items) {
        let list = seen.byStream.get(stream);
        if (list === undefined) seen.byStream.set(stream, list = []);
        list.push(event.index);
        seen.count++;
      }
      if (options.commit !== false) await r.value.commit?.(r.value.position);
    }
  } finally {
    clearTimeout(timer);
    await reader.cancel();
  }
  return seen;
}

function assertComplete(seen: Seen, category: string, streams: number, perStream: number) {
  assert.equal(seen.byStream.size, streams);
  for (let s = 0; s < streams; s++) {
    assert.deepEqual(
      seen.byStream.get(`${category}-${s}`),
      Array.from({ length: perStream }, (_, i) => i),
    );
  }
}

function source(pool: SqlClient, category: string, extra: Partial<MessageDbSourceOptions> = {}) {
  return messageDbSource({
    client: pool,
    categories: [category],
    group: "test",
    checkpoints: memoryCheckpoints(),
    tailSleepMs: 50,
    ...extra,
  });
}

Deno.test("messagedb source: 2000 events over 100 streams arrive completely, in order per stream", () =>
  withPool(async (pool) => {
    const category = unique("Complete");
    await seed(pool, category, 100, 20);
    const checkpoints = memoryCheckpoints();
    const seen = await readUntil(
      source(pool, category, { batchSize: 300, checkpoints }),
      (s) => s.count >= 2000,
    );
    assertComplete(seen, category, 100, 20);
    assert.equal(seen.count, 2000);
    assert.ok(seen.batches.every((b) => b.tranche === category && b.items.length <= 300));
    // positions grow batch by batch; the last one is the last global position + 1
    const positions = seen.batches.map((b) => b.position);
    assert.deepEqual([...positions].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)), positions);
    const { rows } = await pool.query(
      "SELECT max(global_position)::text AS max FROM message_store.messages WHERE stream_name LIKE $1",
      [`${category}-%`],
    );
    assert.equal(seen.batches.at(-1)!.position, BigInt(rows[0].max) + 1n);
    assert.equal(
      await checkpoints.load({ source: "messagedb", tranche: category, group: "test" }),
      BigInt(rows[0].max) + 1n,
    );
    assert.equal(seen.batches.at(-1)!.isTail, true);
  }));

Deno.test("messagedb source: the tail is not re-read needlessly", () =>
  withPool(async (pool) => {
    const category = unique("Tail");
    await seed(pool, category, 10, 250); // 2500 events: pages of 1000, 1000, 500
    let reads = 0;
    const counting: SqlClient = {
      query(text, params) {
        if (text.includes("get_category_messages")) reads++;
        return pool.query(text, params);
      },
    };
    const src = source(counting, category, { batchSize: 1000, tailSleepMs: 300 });
    const reader = src.getReader();
    let count = 0;
    while (count < 2500) count += (await reader.read()).value!.items.length;
    // the third page was short, so the reader knows it is at the tail without another read
    assert.equal(reads, 3);
    await new Promise((r) => setTimeout(r, 1000));
    // then one read per tail sleep, not a busy loop: about 1000 / 300 more
    assert.ok(reads >= 4 && reads <= 8, `reads while idle: ${reads}`);
    // idle polls do not flood the consumer with empty batches
    const extra: Batch[] = [];
    const drain = (async () => {
      for (;;) {
        const r = await reader.read();
        if (r.done) return;
        extra.push(r.value);
      }
    })();
    await new Promise((r) => setTimeout(r, 700));
    await reader.cancel();
    await drain;
    assert.ok(extra.length <= 1, `empty batches while idle: ${extra.length}`);
  }));

Deno.test("messagedb source: stop and resume from the Postgres checkpoint loses and skips nothing", () =>
  withPool(async (pool) => {
    const category = unique("Resume");
    const schema = unique("cp_");
    await initPostgresCheckpoints(pool, { schema });
    try {
      const checkpoints = postgresCheckpoints(pool, { schema });
      await seed(pool, category, 50, 20); // 1000 events
      const key = messageDbCheckpointKey(category, { group: "resume" });
      const options = { checkpoints, group: "resume", batchSize: 70 };

      // first run: commits each batch as it is read and stops part way
      const first = await readUntil(source(pool, category, options), (s) => s.count >= 420);
      const committed = await checkpoints.load(key);
      assert.equal(committed, first.batches.at(-1)!.position);
      assert.ok(first.count < 1000);

      await seed(pool, category, 50, 10, 20); // 500 more while stopped

      // second run resumes exactly at the checkpoint
      const second = await readUntil(
        source(pool, category, options),
        (s) => s.count >= 1500 - first.count,
      );
      assert.equal(first.count + second.count, 1500, "no event read twice or skipped");
      for (let s = 0; s < 50; s++) {
        const stream = `${category}-${s}`;
        const all = [...(first.byStream.get(stream) ?? []), ...(second.byStream.get(stream) ?? [])];
        assert.deepEqual(all, Array.from({ length: 30 }, (_, i) => i), stream);
      }
      assert.ok((await checkpoints.load(key))! > committed!);

      // startFrom "start" ignores the checkpoint
      const again = await readUntil(
        source(pool, category, { ...options, startFrom: "start" }),
        (s) => s.count >= 1500,
      );
      assertComplete(again, category, 50, 30);
    } finally {
      await pool.query(`DROP SCHEMA "${schema}" CASCADE`);
    }
  }));

Deno.test("messagedb source: two consumer-group members split a category, each stream to exactly one", () =>
  withPool(async (pool) => {
    const category = unique("Group");
    await seed(pool, category, 100, 5);
    const checkpoints = memoryCheckpoints();
    const member = (m: number) =>
      source(pool, category, {
        split: { member: m, size: 2 },
        checkpoints,
        group: "g",
        batchSize: 64,
      });
    const untilTail = (s: Seen) => s.batches.at(-1)?.isTail === true;
    const [a, b] = await Promise.all([
      readUntil(member(0), untilTail),
      readUntil(member(1), untilTail),
    ]);
    assert.ok(
      a.byStream.size > 10 && b.byStream.size > 10,
      `split ${a.byStream.size}/${b.byStream.size}`,
    );
    assert.equal(a.byStream.size + b.byStream.size, 100);
    for (let s = 0; s < 100; s++) {
      const stream = `${category}-${s}`;
      const inA = a.byStream.get(stream), inB = b.byStream.get(stream);
      assert.ok(
        (inA === undefined) !== (inB === undefined),
        `${stream} must go to exactly one member`,
      );
      assert.deepEqual(inA ?? inB, [0, 1, 2, 3, 4]);
    }
    // each member keeps its own checkpoint
    const listed = await checkpoints.list("messagedb", "g");
    assert.deepEqual(listed.map((c) => c.tranche).sort(), [`${category}-0/2`, `${category}-1/2`]);
  }));

Deno.test("messagedb source: start from the tail sees only new events and records the tail", () =>
  withPool(async (pool) => {
    const category = unique("FromTail");
    await seed(pool, category, 3, 4);
    const checkpoints = memoryCheckpoints();
    const src = source(pool, category, { whenNoCheckpoint: "tail", checkpoints });
    const reader = src.getReader();
    const first = (await reader.read()).value!;
    assert.equal(first.items.length, 0);
    assert.equal(first.isTail, true);
    await first.commit!(first.position);
    assert.equal(
      await checkpoints.load(messageDbCheckpointKey(category, { group: "test" })),
      first.position,
    );
    await messageDbStore(pool).append(`${category}-new`, [{ type: "New", data: {} }], 0);
    let next: Batch;
    do next = (await reader.read()).value!; while (next.items.length === 0);
    assert.deepEqual(next.items.map((i) => [i.stream, i.event.index, i.event.type]), [[
      `${category}-new`,
      0,
      "New",
    ]]);
    await reader.cancel();
  }));

Deno.test("messagedb source: NOTIFY wakes the reader at the tail within milliseconds", () =>
  withPool(async (pool) => {
    await installNotifyTrigger(pool);
    const category = unique("Wake");
    const store = messageDbStore(pool);
    const notifications = poolNotifications(pool);
    const arrival = async (withNotify: boolean) => {
      const src = source(pool, category, {
        tailSleepMs: 30_000,
        startFrom: "tail",
        notifications: withNotify ? notifications : undefined,
      });
      const reader = src.getReader();
      await reader.read(); // the tail marker: the reader is now sleeping
      await new Promise((r) => setTimeout(r, 100));
      const t0 = performance.now();
      await store.append(`${category}-${crypto.randomUUID()}`, [{ type: "Ping", data: {} }], 0);
      const got = await Promise.race([
        reader.read().then(() => performance.now() - t0),
        new Promise<undefined>((r) => setTimeout(() => r(undefined), 1500)),
      ]);
      await reader.cancel();
      return got;
    };
    try {
      const fast = await arrival(true);
      assert.ok(
        fast !== undefined && fast < 500,
        `with NOTIFY the append arrived after ${fast} ms`,
      );
      // without notifications the 30 s tail sleep holds: the wake-up really comes from NOTIFY
      assert.equal(await arrival(false), undefined);
    } finally {
      await notifications.close();
    }
  }));

Deno.test("messagedb source: invalid options are rejected with clear errors", () =>
  withPool(async (pool) => {
    const base = { client: pool, group: "g", checkpoints: memoryCheckpoints() };
    const fails = (extra: Partial<MessageDbSourceOptions>, check: (e: unknown) => boolean) =>
      assert.throws(() => messageDbSource({ ...base, categories: ["Ok"], ...extra }), check);
    fails(
      { categories: ["Guest-Stay"] },
      (e) => e instanceof InvalidStreamNameError && /contains '-'/.test(e.message),
    );
    fails({ categories: [""] }, (e) => e instanceof InvalidStreamNameError);
    fails({ categories: [] }, (e) => e instanceof InvalidArgumentError && e.field === "categories");
    fails(
      { categories: ["A", "A"] },
      (e) => e instanceof InvalidArgumentError && e.field === "categories",
    );
    fails(
      { split: { member: 2, size: 2 } },
      (e) => e instanceof InvalidArgumentError && e.field === "split.member",
    );
    fails(
      { split: { member: 0, size: 0 } },
      (e) => e instanceof InvalidArgumentError && e.field === "split.size",
    );
    fails(
      { consumerGroup: { member: 0, size: 2 } } as never, // the 0.1 name, easy to mistake for group
      (e) =>
        e instanceof InvalidArgumentError && e.field === "consumerGroup" && /split/.test(e.message),
    );
    fails({ batchSize: 0 }, (e) => e instanceof InvalidArgumentError && e.field === "batchSize");
    fails(
      { notifyChannel: "bad-channel" },
      (e) => e instanceof InvalidArgumentError && e.field === "notifyChannel",
    );
    fails(
      { notifyChannel: "x; LISTEN y" },
      (e) => e instanceof ImpelError && e.code === "InvalidArgument",
    );
    fails({ group: "" }, (e) => e instanceof InvalidArgumentError && e.field === "group");
    fails(
      { startFrom: "middle" as "start" },
      (e) => e instanceof InvalidArgumentError && e.field === "startFrom",
    );
    await assert.rejects(installNotifyTrigger(pool, { channel: "no way" }), InvalidArgumentError);
  }));

Deno.test("messagedb source: a connection without message_store on its search path errors the stream", async () => {
  const pool = new pg.Pool({ connectionString: url, max: 2, options: "-c search_path=public" });
  pool.on("error", () => {});
  try {
    const reader = source(pool, unique("NoPath")).getReader();
    // The first batch only announces the category; the read after it fails.
    const readAll = async () => {
      while (!(await reader.read()).done);
    };
    await assert.rejects(readAll(), (e) => e instanceof ImpelError && e.code === "MessageDbSetup");
  } finally {
    await pool.end();
  }
});
