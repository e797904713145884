// DynamoDB benchmarks against DynamoDB Local (tools/dynamodb.sh start; results in bench/RESULTS.md):
//   1. index-only read throughput of 100k indexed events, the source alone and through the
//      scheduler (after building the index with the indexer, which is timed too);
//   2. end-to-end latency from append to handler with the streams indexer running.
// deno run --allow-all bench/dynamo.ts [--events 100000] [--per-append 5] [--seconds 20] [--rate 50]
//
//   3. with --read-stream: `readStream(stream, { fromIndex, maxCount })` of the store, as the
//      source calls it for an index entry, from an append's start (> 0), from inside an append
//      and from 0: requests per call, sequential latency and throughput at 16 at a time. With
//      --baseline PATH[,PATH] (a stores/dynamo.ts of other code, e.g. extracted with
//      `git archive REV | tar -x -C DIR`) the same reads go through each, alternating rounds.
// deno run --allow-all bench/dynamo.ts --read-stream [--rounds 5] [--baseline DIR/stores/dynamo.ts]
import { DeleteTableCommand, DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { DynamoDBStreamsClient } from "@aws-sdk/client-dynamodb-streams";
import type { Batch } from "../core/batch.ts";
import { run, streamsSink } from "../core/sink.ts";
import { memoryCheckpoints } from "../checkpoints/memory.ts";
import { type AppendSummary, createEventTable, dynamoStore } from "../stores/dynamo.ts";
import { createIndexTable, dynamoIndexer } from "../stores/dynamo-indexer.ts";
import { runStreamsIndexer } from "../stores/dynamo-streams.ts";
import { dynamoSource } from "../sources/dynamo.ts";

const args = new Map<string, string>();
for (let k = 0; k < Deno.args.length; k++) {
  const name = Deno.args[k].replace(/^--/, "");
  // A flag without a value (--read-stream) is followed by another flag or nothing.
  const value = Deno.args[k + 1];
  if (value === undefined || value.startsWith("--")) args.set(name, "");
  else {
    args.set(name, value);
    k++;
  }
}
const totalEvents = Number(args.get("events") ?? 100_000);
const latencySeconds = Number(args.get("seconds") ?? 20);
const appendRate = Number(args.get("rate") ?? 50);
const perAppend = Number(args.get("per-append") ?? 5);

const endpoint = Deno.env.get("DYNAMODB_ENDPOINT") ?? "http://127.0.0.1:8000";
const config = {
  endpoint,
  region: "local",
  credentials: { accessKeyId: "local", secretAccessKey: "local" },
};
const client = new DynamoDBClient(config);
const streamsClient = new DynamoDBStreamsClient(config);
const dropTables: string[] = [];

const fmt = (n: number) => Math.round(n).toLocaleString("en-US");
const pct = (xs: number[], p: number) => {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
};

async function indexOnlyThroughput() {
  const indexTable = `bench-index-${crypto.randomUUID()}`;
  dropTables.push(indexTable);
  await createIndexTable(client, indexTable);
  const indexer = dynamoIndexer(client, { indexTable });
  const streams = 1000;
  const appendsPerStream = Math.ceil(totalEvents / streams / perAppend);
  const t0 = performance.now();
  for (let round = 0; round < appendsPerStream; round++) {
    const appends: AppendSummary[] = [];
    for (let s = 0; s < streams; s++) {
      appends.push({
        stream: `Bench-${s}`,
        index: round * perAppend,
        next: (round + 1) * perAppend,
        types: Array.from({ length: perAppend }, () => "Happened"),
        sizes: Array.from({ length: perAppend }, () => 100),
        time: Date.now(),
      });
    }
    await indexer.ingestAppends(appends);
  }
  const indexMs = performance.now() - t0;
  const events = streams * perAppend * appendsPerStream;
  console.log(
    `indexer: ${fmt(events)} events in ${fmt(streams * appendsPerStream)} appends indexed in ${
      fmt(indexMs)
    } ms ` +
      `(${fmt(events / (indexMs / 1000))} events/s, ${
        fmt((streams * appendsPerStream) / (indexMs / 1000))
      } appends/s)`,
  );

  // Raw: the source alone, a reader counting items.
  for (const chunksPerRead of [20, 100]) {
    const t1 = performance.now();
    const reader = dynamoSource({
      client,
      indexTable,
      group: "raw",
      checkpoints: memoryCheckpoints(),
      chunksPerRead,
    })
      .getReader();
    let seen = 0, batches = 0;
    while (seen < events) {
      const { value } = await reader.read();
      seen += (value as Batch).items.length;
      batches++;
    }
    await reader.cancel();
    const ms = performance.now() - t1;
    console.log(
      `source (index-only, raw, chunksPerRead ${chunksPerRead}): ${fmt(seen)} events in ${
        fmt(ms)
      } ms ` +
        `(${fmt(seen / (ms / 1000))} events/s, ${batches} batches)`,
    );
  }

  // Through the scheduler: the streams sink with a handler that only counts.
  for (let rep = 0; rep < 2; rep++) {
    let handled = 0;
    const sink = streamsSink({
      handler: (_stream, events) => void (handled += events.length),
      maxConcurrentStreams: 64,
      statsIntervalMs: 0,
    });
    const stop = new AbortController();
    const t2 = performance.now();
    const running = run(
      dynamoSource({
        client,
        indexTable,
        group: `sched-${rep}`,
        checkpoints: memoryCheckpoints(),
        chunksPerRead: 20,
      }),
      sink,
      { signal: stop.signal },
    );
    await sink.monitor.awaitCompletion({ tail: true });
    const ms = performance.now() - t2;
    stop.abort();
    await running;
    console.log(
      `source (index-only) -> scheduler, run ${rep + 1}: ${fmt(handled)} events in ${fmt(ms)} ms ` +
        `(${fmt(handled / (ms / 1000))} events/s)`,
    );
  }
}

async function endToEndLatency(pollIntervalMs: number, tailSleepMs: number) {
  const id = crypto.randomUUID();
  const eventTable = `bench-events-${id}`, indexTable = `bench-index-${id}`;
  dropTables.push(eventTable, indexTable);
  await createEventTable(client, eventTable);
  await createIndexTable(client, indexTable);
  const store = dynamoStore(client, { tableName: eventTable });
  const indexer = dynamoIndexer(client, { indexTable });
  const stop = new AbortController();
  const indexing = runStreamsIndexer({
    client,
    streamsClient,
    eventTable,
    indexer,
    signal: stop.signal,
    pollIntervalMs,
  });
  const latencies: number[] = [];
  const total = Math.round(latencySeconds * appendRate);
  const sink = streamsSink({
    handler: (_stream, events) => {
      const now = Date.now();
      for (const e of events) latencies.push(now - (e.data as { at: number }).at);
    },
    statsIntervalMs: 0,
  });
  const running = run(
    dynamoSource({
      client,
      indexTable,
      eventTable,
      group: "latency",
      checkpoints: memoryCheckpoints(),
      tailSleepMs,
      partitionRefreshMs: 100,
      signal: stop.signal,
    }),
    sink,
    { signal: stop.signal },
  );
  const t0 = performance.now();
  for (let k = 0; k < total; k++) {
    const due = t0 + (k * 1000) / appendRate;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    await store.append(`Lat-${k % 50}`, [{ type: "Ping", data: { at: Date.now() } }], "any");
  }
  while (latencies.length < total) await new Promise((r) => setTimeout(r, 50));
  stop.abort();
  await running;
  await indexing;
  console.log(
    `end-to-end (append -> streams -> indexer -> index -> source with bodies -> handler): ${latencies.length} events at ` +
      `${appendRate}/s; latency ms p50 ${pct(latencies, 50)}, p95 ${pct(latencies, 95)}, p99 ${
        pct(latencies, 99)
      }, ` +
      `max ${
        Math.max(...latencies)
      } (streams poll ${pollIntervalMs} ms, tail sleep ${tailSleepMs} ms)`,
  );
}

type StoreModule = { dynamoStore: typeof dynamoStore };

async function readStreamLatency() {
  const rounds = Number(args.get("rounds") ?? 5);
  const modules: [string, StoreModule][] = [["this code", { dynamoStore }]];
  for (const path of (args.get("baseline") ?? "").split(",").filter((p) => p !== "")) {
    modules.push([path, await import(new URL(path, `file://${Deno.cwd()}/`).href)]);
  }
  const eventTable = `dyn-bench-events-${crypto.randomUUID()}`;
  dropTables.push(eventTable);
  await createEventTable(client, eventTable);
  const streams = 50, appends = 10, per = 5;
  const writer = dynamoStore(client, { tableName: eventTable });
  // Seeded 8 streams at a time: DynamoDB Local times out transactions waiting on its lock beyond.
  let seeded = 0;
  await Promise.all(Array.from({ length: 8 }, async () => {
    for (let s = seeded++; s < streams; s = seeded++) {
      for (let a = 0; a < appends; a++) {
        const events = Array.from({ length: per }, (_, k) => ({
          type: "Happened",
          data: { a, k, pad: "x".repeat(80) },
        }));
        await writer.append(`Read-${s}`, events, a * per);
      }
    }
  }));
  // Counts requests by command, so that a call's round trips show.
  let requests = 0;
  const counting = {
    send: (command: object, options?: object) => {
      requests++;
      return client.send(command as never, options);
    },
  };
  console.log(`seeded ${streams} streams × ${appends} appends of ${per} events`);
  const cases: [string, (a: number) => number][] = [
    ["from an append's start", (a) => a * per],
    ["from inside an append", (a) => a * per + 2],
    ["from 0", () => 0],
  ];
  let seed = 1;
  const random = () => (seed = (seed * 48271) % 2147483647) / 2147483647;
  const pick = () => ({
    stream: `Read-${Math.floor(random() * streams)}`,
    a: 1 + Math.floor(random() * (appends - 1)),
  });
  const results = new Map<
    string,
    { perCall: number[]; p50: number[]; p95: number[]; rate: number[] }
  >();
  // A warm-up pass through every version, not recorded (the JIT, DynamoDB Local's caches).
  for (const [, module] of modules) {
    const store = module.dynamoStore(client, { tableName: eventTable });
    for (let k = 0; k < 100; k++) {
      const { stream, a } = pick();
      await store.readStream(stream, { fromIndex: a * per, maxCount: per });
    }
  }
  for (let round = 0; round < rounds; round++) {
    // Alternating: this round's order of the versions is rotated.
    const order = modules.map((_, k) => modules[(k + round) % modules.length]);
    for (const [name, module] of order) {
      const store = module.dynamoStore(counting, { tableName: eventTable });
      for (const [label, from] of cases) {
        const key = `${label}\u0000${name}`;
        const r = results.get(key) ?? { perCall: [], p50: [], p95: [], rate: [] };
        results.set(key, r);
        const sequential = 100;
        const times: number[] = [];
        const before = requests;
        for (let k = 0; k < sequential; k++) {
          const { stream, a } = pick();
          const t0 = performance.now();
          const events = await store.readStream(stream, { fromIndex: from(a), maxCount: per });
          times.push(performance.now() - t0);
          const want = Math.min(per, appends * per - from(a));
          if (events.length !== want) throw new Error(`read ${events.length} of ${want} events`);
        }
        r.perCall.push((requests - before) / sequential);
        r.p50.push(pct(times, 50));
        r.p95.push(pct(times, 95));
        const concurrent = 800;
        let next = 0;
        const t1 = performance.now();
        await Promise.all(Array.from({ length: 16 }, async () => {
          while (next++ < concurrent) {
            const { stream, a } = pick();
            await store.readStream(stream, { fromIndex: from(a), maxCount: per });
          }
        }));
        r.rate.push(concurrent / ((performance.now() - t1) / 1000));
        console.log(
          `  round ${round + 1}, ${label}, ${name}: p50 ${pct(times, 50).toFixed(2)} ms, ${
            fmt(r.rate[r.rate.length - 1])
          } reads/s`,
        );
      }
    }
  }
  const med = (xs: number[]) => pct(xs, 50);
  console.log(`readStream, ${rounds} alternating rounds (medians; ranges over rounds):`);
  for (const [label] of cases) {
    for (const [name] of modules) {
      const r = results.get(`${label}\u0000${name}`)!;
      console.log(
        `  ${label}, ${name}: ${med(r.perCall).toFixed(2)} requests/call; ` +
          `p50 ${med(r.p50).toFixed(2)} ms (${Math.min(...r.p50).toFixed(2)}–${
            Math.max(...r.p50).toFixed(2)
          }), p95 ${med(r.p95).toFixed(2)} ms; ${fmt(med(r.rate))} reads/s at 16 at a time (${
            fmt(Math.min(...r.rate))
          }–${fmt(Math.max(...r.rate))})`,
      );
    }
  }
}

try {
  if (args.has("read-stream")) await readStreamLatency();
  else {
    await indexOnlyThroughput();
    await endToEndLatency(50, 50);
    // The defaults: streams poll 200 ms, source tail sleep 500 ms.
    await endToEndLatency(200, 500);
  }
} finally {
  for (const TableName of dropTables) {
    await client.send(new DeleteTableCommand({ TableName })).catch(() => {});
  }
}
