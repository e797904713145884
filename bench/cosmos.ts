// Cosmos benchmarks against the local server (tools/cosmos.sh start; results in bench/RESULTS.md):
//   1. append throughput of the store (`cosmosStore.append`, appends of --per-append events to
//      --streams streams, --concurrency at a time) next to its floor: the same two documents (tip
//      and batch document) written by a raw `@azure/cosmos` transactional batch, no checks;
//   2. catch-up events/s of the change-feed source through the scheduler (a counting handler),
//      and of the source alone, next to the floor: raw `getChangeFeedIterator` reads of the same
//      documents from the beginning until the feed answers 304 (the source too reads until then
//      to know it is at the tail), and a raw query of them.
// Rounds alternate between the measured and the floor; medians are reported.
// deno run --allow-all bench/cosmos.ts (or bun bench/cosmos.ts) [--appends 1000] [--per-append 5] [--streams 100]
//   [--concurrency 16] [--events 20000] [--rounds 5]
import {
  BulkOperationType,
  ChangeFeedStartFrom,
  type Container,
  CosmosClient,
} from "@azure/cosmos";
import { loadavg } from "node:os";
import process from "node:process";
import { run, streamsSink } from "../core/sink.ts";
import { cosmosSource } from "../sources/cosmos.ts";
import { cosmosStore, ensureCosmosContainer } from "../stores/cosmos.ts";

// Node's process and os, so that the same file runs under Deno and Bun.
const argv = process.argv.slice(2);
const args = new Map<string, string>();
for (let k = 0; k < argv.length; k += 2) args.set(argv[k].replace(/^--/, ""), argv[k + 1]);
const appends = Number(args.get("appends") ?? 1000);
const perAppend = Number(args.get("per-append") ?? 5);
const streams = Number(args.get("streams") ?? 100);
const concurrency = Number(args.get("concurrency") ?? 16);
const totalEvents = Number(args.get("events") ?? 20_000);
const rounds = Number(args.get("rounds") ?? 5);

const endpoint = process.env.COSMOS_ENDPOINT ?? "http://127.0.0.1:8081";
const client = new CosmosClient({
  endpoint,
  key: "bG9jYWw=",
  connectionPolicy: { enableEndpointDiscovery: false },
});
const { database } = await client.databases.createIfNotExists({ id: "impel_bench" });
const containers: Container[] = [];
async function fresh(prefix: string): Promise<Container> {
  const id = `${prefix}-${crypto.randomUUID()}`;
  await ensureCosmosContainer(database, id);
  const container = database.container(id);
  containers.push(container);
  return container;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const fmt = (n: number) => Math.round(n).toLocaleString("en-US");
const body = (k: number) => ({ type: "Step", data: { n: k, note: "some text of an event" } });

/** Runs `work(k)` for k in [0, n), `concurrency` at a time. */
async function pool(n: number, work: (k: number) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < n) await work(next++);
  }));
}

/** Appends through the store: appends/s. Streams advance one append at a time. */
async function storeAppends(container: Container): Promise<number> {
  const store = cosmosStore(container);
  const versions = new Array(streams).fill(0);
  const started = performance.now();
  await pool(appends, async (k) => {
    const s = k % streams;
    const at = versions[s];
    versions[s] += perAppend;
    // Streams are written round-robin: a stream's next append waits for its last.
    await store.append(`Order-${s}`, Array.from({ length: perAppend }, (_, j) => body(at + j)), at);
  });
  return appends / ((performance.now() - started) / 1000);
}

/** The same documents by a raw transactional batch, with the etag remembered: appends/s. */
async function rawAppends(container: Container): Promise<number> {
  const etags = new Array<string | undefined>(streams).fill(undefined);
  const versions = new Array(streams).fill(0);
  const started = performance.now();
  await pool(appends, async (k) => {
    const s = k % streams;
    const p = `Order-${s}`;
    const at = versions[s];
    versions[s] += perAppend;
    const tip = { id: "-1", p, i: -1, n: at + perAppend, ts: Date.now() };
    const doc = {
      id: String(at),
      p,
      i: at,
      n: at + perAppend,
      ts: Date.now(),
      ty: ["Step"],
      e: Array.from({ length: perAppend }, (_, j) => ({
        c: "Step",
        d: body(at + j).data,
        id: crypto.randomUUID(),
        s: 40,
      })),
    };
    const { result } = await container.items.batch([
      etags[s] === undefined
        ? { operationType: BulkOperationType.Create, partitionKey: p, resourceBody: tip }
        : {
          operationType: BulkOperationType.Replace,
          partitionKey: p,
          id: "-1",
          resourceBody: tip,
          ifMatch: etags[s],
        },
      { operationType: BulkOperationType.Create, partitionKey: p, resourceBody: doc },
    ], p);
    etags[s] = result?.[0]?.eTag;
  });
  return appends / ((performance.now() - started) / 1000);
}

/** Seeds `totalEvents` events in appends of `perAppend` over `streams` streams. */
async function seed(container: Container): Promise<number> {
  const store = cosmosStore(container);
  const count = Math.ceil(totalEvents / perAppend);
  const versions = new Array(streams).fill(0);
  await pool(count, async (k) => {
    const s = k % streams;
    const at = versions[s];
    versions[s] += perAppend;
    await store.append(`Order-${s}`, Array.from({ length: perAppend }, (_, j) => body(at + j)), at);
  });
  return count * perAppend;
}

/** The source through the scheduler, a counting handler, to the tail: events/s. */
async function sourceToTail(container: Container, expected: number): Promise<number> {
  let handled = 0;
  const sink = streamsSink({
    statsIntervalMs: 0,
    maxConcurrentStreams: 64,
    handler: (_stream, events) => void (handled += events.length),
  });
  const ac = new AbortController();
  const started = performance.now();
  const running = run(
    cosmosSource({ container, group: "bench", pageSize: 1_000_000, signal: ac.signal }),
    sink,
    { signal: ac.signal },
  );
  await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 300_000 });
  const ms = performance.now() - started;
  ac.abort();
  await running;
  if (handled !== expected) throw new Error(`handled ${handled} of ${expected}`);
  return expected / (ms / 1000);
}

/** The source alone: batches read to the tail, events counted: events/s. */
async function sourceAlone(container: Container, expected: number): Promise<number> {
  const ac = new AbortController();
  let read = 0;
  const started = performance.now();
  for await (
    const batch of cosmosSource({
      container,
      group: "bench",
      pageSize: 1_000_000,
      signal: ac.signal,
    })
  ) {
    read += batch.items.length;
    if (batch.isTail && read >= expected) break;
  }
  const ms = performance.now() - started;
  ac.abort();
  if (read !== expected) throw new Error(`read ${read} of ${expected}`);
  return expected / (ms / 1000);
}

/**
 * The floor: raw change-feed reads from the beginning until the feed answers 304 (what the source
 * must see to know it is at the tail): events/s.
 */
async function rawFeed(container: Container, expected: number): Promise<number> {
  const started = performance.now();
  const [range] = await container.getFeedRanges();
  const iterator = container.items.getChangeFeedIterator<{ e?: unknown[] }>({
    changeFeedStartFrom: ChangeFeedStartFrom.Beginning(range),
    maxItemCount: 1_000_000,
  });
  let events = 0;
  for (;;) {
    const { result, statusCode } = await iterator.readNext();
    if (statusCode === 304) break;
    for (const doc of result) events += Array.isArray(doc.e) ? doc.e.length : 0;
  }
  const ms = performance.now() - started;
  if (events !== expected) throw new Error(`raw feed read ${events} of ${expected}`);
  return expected / (ms / 1000);
}

/** Another floor: a raw query of the batch documents: events/s. */
async function rawQuery(container: Container, expected: number): Promise<number> {
  const started = performance.now();
  const { resources } = await container.items.query<{ e: unknown[] }>(
    "SELECT * FROM c WHERE c.i >= 0",
    { maxItemCount: 1_000_000 },
  ).fetchAll();
  let events = 0;
  for (const doc of resources) events += doc.e.length;
  const ms = performance.now() - started;
  if (events !== expected) throw new Error(`raw query read ${events} of ${expected}`);
  return expected / (ms / 1000);
}

try {
  const runtime = "Bun" in globalThis ? "bun" : "deno";
  console.log(
    `runtime ${runtime}, ${rounds} rounds; load ${loadavg().map((l) => l.toFixed(1)).join(" ")}`,
  );
  const appendFigures = { store: [] as number[], raw: [] as number[] };
  for (let r = 0; r < rounds; r++) {
    // Alternating which goes first.
    const order = r % 2 === 0 ? ["store", "raw"] as const : ["raw", "store"] as const;
    for (const which of order) {
      const c = await fresh("bench-append");
      appendFigures[which].push(which === "store" ? await storeAppends(c) : await rawAppends(c));
      await c.delete();
    }
  }
  console.log(
    `appends of ${perAppend} events, ${concurrency} at a time over ${streams} streams: store ${
      fmt(median(appendFigures.store))
    }/s (${appendFigures.store.map(fmt).join(", ")}), raw batch ${
      fmt(median(appendFigures.raw))
    }/s (${appendFigures.raw.map(fmt).join(", ")}); ratio ${
      (median(appendFigures.store) / median(appendFigures.raw)).toFixed(2)
    }`,
  );

  const feed = await fresh("bench-feed");
  const seedStarted = performance.now();
  const events = await seed(feed);
  console.log(
    `seeded ${fmt(events)} events in ${fmt(events / perAppend)} appends in ${
      ((performance.now() - seedStarted) / 1000).toFixed(1)
    } s`,
  );
  const figures = {
    sink: [] as number[],
    alone: [] as number[],
    feed: [] as number[],
    query: [] as number[],
  };
  for (let r = 0; r < rounds; r++) {
    const steps = [
      ["sink", () => sourceToTail(feed, events)],
      ["feed", () => rawFeed(feed, events)],
      ["alone", () => sourceAlone(feed, events)],
      ["query", () => rawQuery(feed, events)],
    ] as const;
    const order = r % 2 === 0 ? steps : [...steps].reverse();
    for (const [name, f] of order) figures[name].push(await f());
  }
  for (const [name, xs] of Object.entries(figures)) {
    console.log(`catch-up ${name}: ${fmt(median(xs))} events/s (${xs.map(fmt).join(", ")})`);
  }
  console.log(
    `source→scheduler / raw feed: ${(median(figures.sink) / median(figures.feed)).toFixed(2)}; ` +
      `source alone / raw feed: ${(median(figures.alone) / median(figures.feed)).toFixed(2)}`,
  );
} finally {
  for (const c of containers) await c.delete().catch(() => {});
}
