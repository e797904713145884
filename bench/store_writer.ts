// Store-writer replication throughput (results in bench/RESULTS.md): a MessageDB category
// replicated into MessageDB in another database and into a DynamoDB table, through
//   sink:  messageDbSource → streamsSink → storeWriter (16 streams at once), and
//   floor: the same category read with raw `get_category_messages` pages of 1000 (the next
//          page fetched while the current one is written), each page's events appended per
//          stream straight to the target store at the expected version, 16 appends at once,
// alternating round by round, each round into a fresh target category. Events/s = the
// category's events over the time until the target holds all of them.
//   deno run -A bench/store_writer.ts [--events 20000] [--streams 200] [--rounds 3]
//            [--targets messagedb,dynamo]        (or: bun bench/store_writer.ts ...)
// `--targets memory` writes into the memory store: what reading, scheduling and the writer cost
// when the target costs next to nothing; `dynamo-nostream` into a table of the event table's
// layout without DynamoDB Streams.
// IMPEL_PG_URL: the source database (default impel_bench); IMPEL_PG_TARGET_URL: the target
// database (default impel_bench_target, made by tools/postgres.sh); DYNAMODB_ENDPOINT.
// @ts-types="@types/pg"
import pg from "pg";
import os from "node:os";
import process from "node:process";
import { DeleteTableCommand, DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { run, streamsSink } from "../core/sink.ts";
import type { EventData, EventStore } from "../core/store.ts";
import type { StreamEvent } from "../core/event.ts";
import { memoryCheckpoints } from "../checkpoints/memory.ts";
import { messageDbSource } from "../sources/messagedb.ts";
import { MESSAGE_COLUMNS, messageDbStore, messageRowToEvent } from "../stores/messagedb.ts";
import { createEventTable, dynamoStore, ensureTable } from "../stores/dynamo.ts";
import { copyEvent, renameCategory, storeWriter } from "../sinks/store-writer.ts";
import { createMemoryStore } from "../sources/memory.ts";

const args = new Map<string, string>();
const argv = process.argv.slice(2);
for (let k = 0; k < argv.length; k += 2) args.set(argv[k].replace(/^--/, ""), argv[k + 1]);
const totalEvents = Number(args.get("events") ?? 20_000);
const streams = Number(args.get("streams") ?? 200);
const rounds = Number(args.get("rounds") ?? 3);
const targets = (args.get("targets") ?? "messagedb,dynamo").split(",");
const CONCURRENCY = 16;
const sourceUrl = process.env.IMPEL_PG_URL ?? "postgres://postgres@127.0.0.1:5432/impel_bench";
const targetUrl = process.env.IMPEL_PG_TARGET_URL ??
  "postgres://postgres@127.0.0.1:5432/impel_bench_target";
const endpoint = process.env.DYNAMODB_ENDPOINT ?? "http://127.0.0.1:8000";

const source = new pg.Pool({ connectionString: sourceUrl, max: 8 });
const targetPool = new pg.Pool({ connectionString: targetUrl, max: CONCURRENCY + 2 });
const dynamo = new DynamoDBClient({
  endpoint,
  region: "local",
  credentials: { accessKeyId: "local", secretAccessKey: "local" },
});
const fmt = (n: number) => Math.round(n).toLocaleString("en-US");
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const runtime = "Bun" in globalThis ? `Bun ${process.versions.bun}` : `Deno ${Deno.version.deno}`;

/** Seeds the source: every stream gets 10 events per round-robin pass, in one append each. */
async function seed(category: string) {
  const store = messageDbStore(source);
  const per = Math.ceil(totalEvents / streams);
  for (let at = 0; at < per; at += 10) {
    const n = Math.min(10, per - at);
    for (let s = 0; s < streams; s += CONCURRENCY) {
      await Promise.all(
        Array.from({ length: Math.min(CONCURRENCY, streams - s) }, (_, k) =>
          store.append(
            `${category}-${s + k}`,
            Array.from({ length: n }, (_, j) => ({
              type: "Happened",
              data: { s: s + k, i: at + j, note: "a body of about a hundred bytes".repeat(2) },
              meta: { by: "bench" },
            })),
            at,
          )),
      );
    }
  }
  return streams * per;
}

/**
 * The event written: a copy without the id (the target makes one), since every round writes the
 * same source events into one target database, where MessageDB's ids must be unique.
 */
const mapEvent = (e: StreamEvent): EventData => ({ ...copyEvent(e), id: undefined });

/** Runs `tasks` with at most CONCURRENCY of them at once. */
async function pooled(tasks: Array<() => Promise<unknown>>) {
  let next = 0;
  const worker = async () => {
    while (next < tasks.length) await tasks[next++]();
  };
  await Promise.all(Array.from({ length: Math.min(CONCURRENCY, tasks.length) }, worker));
}

/** Appends made, per way, over all rounds of the current target. */
const appends = { sink: 0, floor: 0 };

/** The floor: raw paged reads, each page's spans appended directly. */
async function floor(category: string, to: string, target: EventStore) {
  const rename = renameCategory({ [category]: to });
  const versions = new Map<string, number>();
  const page = (from: bigint) =>
    source.query(
      `SELECT ${MESSAGE_COLUMNS} FROM message_store.get_category_messages($1, $2, 1000)`,
      [category, String(from)],
    );
  let from = 1n;
  let pending = page(from);
  for (;;) {
    const { rows } = await pending;
    if (rows.length === 0) break;
    from = BigInt(rows[rows.length - 1].global_position) + 1n;
    pending = page(from);
    const spans = new Map<string, EventData[]>();
    for (const row of rows) {
      let span = spans.get(row.stream_name);
      if (span === undefined) spans.set(row.stream_name, span = []);
      span.push(mapEvent(messageRowToEvent(row)));
    }
    appends.floor += spans.size;
    await pooled([...spans].map(([stream, events]) => async () => {
      const at = versions.get(stream) ?? 0;
      await target.append(rename(stream)!, events, at);
      versions.set(stream, at + events.length);
    }));
    if (rows.length < 1000) break;
  }
}

/** The sink: the source, the scheduler and the store writer. */
async function sink(category: string, to: string, target: EventStore, expected: number) {
  const writer = storeWriter({
    target,
    stream: renameCategory({ [category]: to }),
    event: mapEvent,
  });
  const s = streamsSink({
    handler: writer.handler,
    maxConcurrentStreams: CONCURRENCY,
    statsIntervalMs: 0,
  });
  const stop = new AbortController();
  const running = run(
    messageDbSource({
      client: source,
      categories: [category],
      group: `bench-${to}`,
      checkpoints: memoryCheckpoints(),
      maxBatchItems: 1000,
    }),
    s,
    { signal: stop.signal },
  );
  await s.monitor.awaitCompletion({ tail: true });
  stop.abort();
  await running;
  appends.sink += writer.stats().appends;
  const written = writer.stats().events.written;
  if (written !== expected) throw new Error(`the sink wrote ${written} of ${expected} events`);
}

const t0 = performance.now();
const category = `SwBench${crypto.randomUUID().slice(0, 8)}`;
const events = await seed(category);
// Fresh statistics: before them, get_category_messages took 170 ms a page here instead of 9.
await source.query("ANALYZE message_store.messages");
if (targets.includes("messagedb")) await targetPool.query("ANALYZE message_store.messages");
console.log(
  `${runtime}, ${os.cpus().length} cores, load ${os.loadavg()[0].toFixed(2)}; ` +
    `seeded ${fmt(events)} events over ${streams} streams in ${
      fmt((performance.now() - t0) / 1000)
    } s`,
);

const table = `swbench-${crypto.randomUUID()}`;
const plainTable = `swbench-plain-${crypto.randomUUID()}`;
const results: Array<Record<string, unknown>> = [];
try {
  if (targets.includes("dynamo")) await createEventTable(dynamo, table);
  // The event table's layout without DynamoDB Streams (nothing could index it): DynamoDB Local
  // keeps stream records, and with them a transaction took 0.5 s here instead of 15 ms.
  if (targets.includes("dynamo-nostream")) {
    await ensureTable(dynamo, {
      tableName: plainTable,
      partitionKey: ["p", "S"],
      sortKey: ["i", "N"],
    });
  }
  for (const kind of targets) {
    const target: EventStore = kind === "dynamo"
      ? dynamoStore(dynamo, { tableName: table })
      : kind === "dynamo-nostream"
      ? dynamoStore(dynamo, { tableName: plainTable })
      : kind === "memory"
      ? createMemoryStore()
      : messageDbStore(targetPool);
    const rates: Record<"sink" | "floor", number[]> = { sink: [], floor: [] };
    appends.sink = appends.floor = 0;
    for (let round = 0; round < rounds; round++) {
      // Alternating which goes first, so that neither always meets a warmer server.
      const order: Array<"sink" | "floor"> = round % 2 === 0
        ? ["floor", "sink"]
        : ["sink", "floor"];
      for (const way of order) {
        const to = `${category}${way === "sink" ? "S" : "F"}${round}`;
        const started = performance.now();
        if (way === "sink") await sink(category, to, target, events);
        else await floor(category, to, target);
        const seconds = (performance.now() - started) / 1000;
        rates[way].push(events / seconds);
        console.log(`${kind} round ${round + 1} ${way}: ${fmt(events / seconds)} events/s`);
      }
    }
    const result = {
      runtime,
      target: kind,
      events,
      sinkMedian: Math.round(median(rates.sink)),
      floorMedian: Math.round(median(rates.floor)),
      ratio: Number((median(rates.sink) / median(rates.floor)).toFixed(2)),
      sink: rates.sink.map(Math.round),
      floor: rates.floor.map(Math.round),
      // Events per append: the sink's spans grow with the backlog (the scheduler hands a stream
      // everything buffered), the floor's are what one page holds of a stream.
      sinkEventsPerAppend: Number((events * rounds / appends.sink).toFixed(1)),
      floorEventsPerAppend: Number((events * rounds / appends.floor).toFixed(1)),
    };
    results.push(result);
    console.log(JSON.stringify(result));
  }
  console.log(`load at the end ${os.loadavg()[0].toFixed(2)}`);
} finally {
  for (const [kind, TableName] of [["dynamo", table], ["dynamo-nostream", plainTable]]) {
    if (targets.includes(kind)) {
      await dynamo.send(new DeleteTableCommand({ TableName })).catch(() => {});
    }
  }
  await source.end();
  await targetPool.end();
  dynamo.destroy();
}
