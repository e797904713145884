// Replication through the store writer between real servers, in a real process that is
// SIGKILLed and restarted midway (tests/sinks/support/replicator.ts): MessageDB → DynamoDB
// (DynamoDB Local), MessageDB → Cosmos (the local server, tools/cosmos.sh), and MessageDB →
// MessageDB (another database when IMPEL_PG_TARGET_URL is set, else the same one under another
// category with ids of its own). Each ends with identical streams and no duplicates; the restart
// classifies exactly what the killed process had written past its checkpoint as duplicates; a
// replay from a reset checkpoint writes nothing.
import assert from "node:assert/strict";
// @ts-types="@types/pg"
import pg from "pg";
import type { StreamEvent } from "../../core/event.ts";
import type { EventStore } from "../../core/store.ts";
import { initPostgresCheckpoints, postgresCheckpoints } from "../../checkpoints/postgres.ts";
import { messageDbStore, streamVersion } from "../../stores/messagedb.ts";
import { DeleteTableCommand } from "@aws-sdk/client-dynamodb";
import { dynamoStore, ensureTable } from "../../stores/dynamo.ts";
import { cosmosStore } from "../../stores/cosmos.ts";
import type { StoreWriterStats } from "../../sinks/store-writer.ts";
import { type Child, spawnScript, stopWithin } from "../faults/support/process.ts";
import { unique, url } from "../support/postgres.ts";
import { client, endpoint, freshTables } from "../support/dynamo.ts";
import { endpoint as cosmosEndpoint, freshContainer, testDatabase } from "../support/cosmos.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };
const targetUrl = Deno.env.get("IMPEL_PG_TARGET_URL");

const pool = new pg.Pool({ connectionString: url, max: 6 });
pool.on("error", () => {});
const pgUp = await pool.query("SELECT 1 FROM message_store.messages LIMIT 1").then(
  () => true,
  () => false,
);
if (!pgUp) console.warn(`MessageDB is not reachable at ${url}: the replication tests are ignored`);
if (pgUp) await initPostgresCheckpoints(pool);
const dynamoUp = await freshTables({ events: "events" }, "swriter-probe-").then(
  async (t) => (await t[Symbol.asyncDispose](), true),
  () => false,
);
if (!dynamoUp) console.warn("DynamoDB Local is not reachable: MessageDB → DynamoDB is ignored");
const cosmosUp = await testDatabase().then(() => true, () => false);
if (!cosmosUp) console.warn("no Cosmos server (tools/cosmos.sh): MessageDB → Cosmos is ignored");

const STREAMS = 20, PER_STREAM = 40;

/**
 * Appends `n` events (5 at a time, interleaved) from index `from` to each of the streams
 * numbered `first` to `last - 1`, with meta and correlation ids.
 */
async function seed(
  store: EventStore,
  category: string,
  [first, last]: [number, number],
  from: number,
  n: number,
) {
  for (let at = from; at < from + n; at += 5) {
    await Promise.all(
      Array.from({ length: last - first }, (_, k) => first + k).map((s) =>
        store.append(
          `${category}-${s}`,
          Array.from({ length: 5 }, (_, k) => ({
            type: (at + k) % 3 === 0 ? "Placed" : "Noted",
            data: { s, i: at + k, text: "é".repeat((at + k) % 7) },
            meta: { n: at + k },
            correlationId: `c-${s}-${at + k}`,
          })),
          at,
        )
      ),
    );
  }
}

/** What must match between source and target events. */
const shape = (e: StreamEvent, id = e.id) => [
  e.index,
  e.type,
  e.data,
  e.meta,
  id,
  e.correlationId,
  e.causationId,
];

/** The last `stats` (or `done`) line of a replicator's log. */
async function lastStats(
  path: string,
  kind: "stats" | "done",
): Promise<StoreWriterStats | undefined> {
  const text = await Deno.readTextFile(path).catch(() => "");
  const line = text.split("\n").findLast((l) => l.startsWith(`${kind} `));
  return line === undefined ? undefined : JSON.parse(line.slice(kind.length + 1));
}

// Generous: DynamoDB Local on a loaded 2-core machine was seen at 0.5 s per append.
async function until(what: string, cond: () => Promise<boolean>, ms = 180_000) {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

interface Target {
  /** Environment for the replicator. */
  readonly env: Record<string, string>;
  readonly store: EventStore;
  /** The target stream of a source stream. */
  name(stream: string): string;
  /** The id the target holds for a source id. */
  id(id: string): string;
  version(stream: string): Promise<number>;
  close(): Promise<void>;
}

async function replicate(category: string, target: Target) {
  const source = messageDbStore(pool);
  const group = unique("swr_");
  const dir = await Deno.makeTempDir({ prefix: "impel-swriter-" });
  const children: Child[] = [];
  const spawn = (k: number, hangAfter?: number) => {
    const child = spawnScript("tests/sinks/support/replicator.ts", {
      env: {
        ...(hangAfter === undefined ? {} : { HANG_AFTER: String(hangAfter) }),
        IMPEL_PG_URL: url,
        CATEGORY: category,
        GROUP: group,
        LOG: `${dir}/r${k}.log`,
        COMMIT_MS: "400",
        ...target.env,
      },
      stderrPath: `${dir}/r${k}.err`,
    });
    children.push(child);
    return child;
  };
  const streams = () => Array.from({ length: STREAMS + 2 }, (_, s) => `${category}-${s}`);
  const counts = async () => {
    let source_ = 0, target_ = 0;
    for (const s of streams()) {
      source_ += await streamVersion(pool, s);
      target_ += await target.version(target.name(s));
    }
    return { source: source_, target: target_ };
  };
  const checkpointOf = async () =>
    (await postgresCheckpoints(pool).list("messagedb", group)).find((c) => c.tranche === category)
      ?.position;
  try {
    await seed(source, category, [0, STREAMS], 0, PER_STREAM);
    const total = STREAMS * PER_STREAM;

    // 1. Killed midway: its calls hang once a third is written; it is killed once it has
    // committed a checkpoint (the completed batches before the hanging streams'), so that the
    // restart resumes from one with written events past it.
    const first = spawn(1, Math.ceil(total / 3));
    await until("a third written", async () => {
      const s = await lastStats(`${dir}/r1.log`, "stats");
      return (s?.events.written ?? 0) >= total / 3;
    });
    await until("a checkpoint", async () => (await checkpointOf() ?? 0n) > 1n);
    first.kill("SIGKILL");
    const ended = await first.status;
    assert.equal(ended.signal, "SIGKILL");
    await new Promise((r) => setTimeout(r, 300)); // an append in flight lands or not
    const atKill = (await counts()).target;
    assert.ok(atKill >= total / 3 && atKill < total, `killed midway: ${atKill} of ${total}`);
    const checkpoint = (await checkpointOf())!;
    // What the restart re-reads (global position >= the checkpoint) and finds in the target.
    const reread = await pool.query<{ stream_name: string; position: string }>(
      `SELECT stream_name, position FROM message_store.messages
        WHERE category(stream_name) = $1 AND global_position >= $2`,
      [category, String(checkpoint)],
    );
    const versions = new Map<string, number>();
    for (const s of streams()) versions.set(s, await target.version(target.name(s)));
    const alreadyThere = reread.rows.filter((r) =>
      Number(r.position) < versions.get(r.stream_name)!
    ).length;
    assert.ok(alreadyThere > 0, "the kill left written events past the checkpoint");

    // 2. Restarted, with new events arriving meanwhile (new streams among them).
    const second = spawn(2);
    await seed(source, category, [0, STREAMS], PER_STREAM, 10);
    await seed(source, category, [STREAMS, STREAMS + 2], 0, 10);
    const grown = (await counts()).source;
    // Waiting on the replicator's own count: polling every stream of the target would load the
    // server the replicator writes to (DynamoDB Local most of all).
    await until("the target to catch up", async () => {
      const s = await lastStats(`${dir}/r2.log`, "stats");
      return (s?.events.written ?? 0) >= grown - atKill;
    });
    await stopWithin(second, 20_000, "the restarted replicator");
    const restart = (await lastStats(`${dir}/r2.log`, "done"))!;
    assert.ok(restart, "the restarted replicator stopped cleanly");
    assert.equal(restart.events.duplicate, alreadyThere, "exactly the re-read events it had");
    assert.equal(restart.events.written, grown - atKill, "every other event once");
    assert.equal(restart.spans.behind, 0);

    // 3. Identical streams: same events, order, indexes, types, data, meta and ids.
    const compare = async () => {
      for (const s of streams()) {
        const from = await source.readStream(s);
        const to = await target.store.readStream(target.name(s));
        assert.deepEqual(
          to.map((e) => shape(e)),
          from.map((e) => shape(e, target.id(e.id))),
          `${s} and its copy differ`,
        );
      }
      assert.deepEqual(await counts(), { source: grown, target: grown }, "no duplicates");
    };
    await compare();

    // 4. A replay from a reset checkpoint finds only duplicates.
    await postgresCheckpoints(pool).reset({ source: "messagedb", tranche: category, group }, 0n);
    const third = spawn(3);
    await until("the replay to pass everything", async () => {
      const s = await lastStats(`${dir}/r3.log`, "stats");
      return (s?.events.duplicate ?? 0) >= grown;
    });
    await stopWithin(third, 20_000, "the replaying replicator");
    const replay = (await lastStats(`${dir}/r3.log`, "done"))!;
    assert.deepEqual(replay.spans.written + replay.spans.partial + replay.spans.behind, 0);
    assert.deepEqual(replay.events, { written: 0, duplicate: grown, behind: 0, filtered: 0 });
    assert.ok(replay.spans.duplicate > 0);
    await compare();
  } catch (error) {
    for (let k = 1; k <= children.length; k++) {
      const err = await Deno.readTextFile(`${dir}/r${k}.err`).catch(() => "");
      if (err.trim()) console.error(`replicator ${k} stderr:\n${err}`);
    }
    throw error;
  } finally {
    for (const c of children) c.kill("SIGKILL");
    await Promise.all(children.map((c) => c.status));
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    await target.close();
  }
}

Deno.test({
  name:
    "store writer replication MessageDB → DynamoDB: killed, restarted, identical, no duplicates",
  ignore: !pgUp || !dynamoUp,
  ...opts,
  async fn() {
    // The event table's layout without DynamoDB Streams: nothing indexes the replica here, and
    // DynamoDB Local's stream records made each write about 30 times slower on this machine
    // (0.5 s a transaction; bench/RESULTS.md, Store writer). The store's own tests, and this
    // writer's classification suite, use tables with streams.
    const tableName = `swriter-replica-${crypto.randomUUID()}`;
    await ensureTable(client, { tableName, partitionKey: ["p", "S"], sortKey: ["i", "N"] });
    const store = dynamoStore(client, { tableName });
    await replicate(unique("Repl"), {
      env: { TARGET: "dynamo", TARGET_TABLE: tableName, DYNAMODB_ENDPOINT: endpoint },
      store,
      name: (s) => s,
      id: (id) => id,
      version: (s) => store.version(s),
      close: async () => {
        await client.send(new DeleteTableCommand({ TableName: tableName })).catch(() => {});
      },
    });
  },
});

Deno.test({
  name: "store writer replication MessageDB → Cosmos: killed, restarted, identical, no duplicates",
  ignore: !pgUp || !cosmosUp,
  ...opts,
  async fn() {
    const t = await freshContainer("swriter");
    const store = cosmosStore(t.container);
    await replicate(unique("Repl"), {
      env: {
        TARGET: "cosmos",
        TARGET_CONTAINER: t.id,
        COSMOS_ENDPOINT: cosmosEndpoint,
        COSMOS_DATABASE: (await testDatabase()).id,
      },
      store,
      name: (s) => s,
      id: (id) => id,
      version: (s) => store.version(s),
      close: async () => await t[Symbol.asyncDispose](),
    });
  },
});

Deno.test({
  name: `store writer replication MessageDB → MessageDB (${
    targetUrl ? "another database" : "another category, ids of its own"
  }): killed, restarted, identical, no duplicates`,
  ignore: !pgUp,
  ...opts,
  async fn() {
    const category = unique("Repl");
    const targetPool = targetUrl ? new pg.Pool({ connectionString: targetUrl, max: 4 }) : pool;
    const reversed = (id: string) => {
      const hex = [...id.replaceAll("-", "")].reverse().join("");
      return [
        hex.slice(0, 8),
        hex.slice(8, 12),
        hex.slice(12, 16),
        hex.slice(16, 20),
        hex.slice(20),
      ]
        .join("-");
    };
    await replicate(category, {
      env: targetUrl ? { TARGET: "messagedb", TARGET_PG_URL: targetUrl } : {
        TARGET: "messagedb",
        TARGET_PG_URL: url,
        RENAME: "1",
      },
      store: messageDbStore(targetPool),
      name: (s) => targetUrl ? s : `${category}Copy${s.slice(category.length)}`,
      id: (id) => targetUrl ? id : reversed(id),
      version: (s) => streamVersion(targetPool, s),
      close: async () => {
        if (targetPool !== pool) await targetPool.end();
      },
    });
  },
});

Deno.test({
  name: "store writer replication: cleanup",
  ...opts,
  async fn() {
    await pool.end();
  },
});
