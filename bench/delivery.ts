// Delivery over loopback (results in bench/RESULTS.md), the server and its clients in this one
// process over the memory store:
//   1 client:   events/s for one subscribe() client reading --events events from the start;
//   50 clients: events/s delivered in all while --clients clients read them at once;
//   floor:      the same events read in-process through the feed, pages of the handler's size,
//               encoded as the handler does (what HTTP and parsing add on top);
//   latency:    append→client, one event every 2 ms with its append time, the time each client
//               hands it on; p50/p99 over every (event, client), with 1 and with --clients.
// Alternating rounds; medians. deno run -A bench/delivery.ts [--events 20000] [--clients 50]
// [--rounds 3]   (or: bun bench/delivery.ts ...)
import os from "node:os";
import process from "node:process";
import { createMemoryStore, type MemoryStore } from "../sources/memory.ts";
import { createDeliveryHandler, deliveredEvent, memoryFeed } from "../delivery/server.ts";
import { subscribe } from "../delivery/client.ts";

const arg = (name: string, fallback: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? fallback : Number(process.argv[i + 1]);
};
const EVENTS = arg("events", 20_000);
const CLIENTS = arg("clients", 50);
const ROUNDS = arg("rounds", 3);
const TOKEN = "bench-token-0123456789";
const runtime = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined" ? "Bun" : "Deno";

type Serve = { url: string; stop: () => Promise<void> };
function serve(store: MemoryStore): Serve {
  const handler = createDeliveryHandler({
    feed: memoryFeed(store),
    tokens: { [TOKEN]: ["read:Order"] },
  });
  const g = globalThis as unknown as {
    Deno?: {
      serve(o: unknown, h: unknown): { addr: { port: number }; shutdown(): Promise<void> };
    };
    Bun?: { serve(o: unknown): { port: number; stop(force: boolean): Promise<void> } };
  };
  if (g.Deno) {
    const s = g.Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, handler);
    return { url: `http://127.0.0.1:${s.addr.port}/streams/Order`, stop: () => s.shutdown() };
  }
  const s = g.Bun!.serve({ hostname: "127.0.0.1", port: 0, idleTimeout: 255, fetch: handler });
  return { url: `http://127.0.0.1:${s.port}/streams/Order`, stop: () => s.stop(true) };
}

async function filled(n: number): Promise<MemoryStore> {
  const store = createMemoryStore();
  for (let i = 0; i < n; i++) {
    await store.append(`Order-${i % 100}`, [{ type: "Placed", data: { n: i, total: 42 } }], "any");
  }
  return store;
}

async function readAll(
  url: string,
  n: number,
  from: "start" | "now" = "start",
  onEvent?: (d: unknown) => void,
) {
  const ac = new AbortController();
  let got = 0;
  for await (const e of subscribe(url, { token: TOKEN, from, signal: ac.signal })) {
    onEvent?.(e.data);
    if (++got === n) break;
  }
  ac.abort();
}

async function throughput(store: MemoryStore, clients: number): Promise<number> {
  const s = serve(store);
  const started = performance.now();
  await Promise.all(Array.from({ length: clients }, () => readAll(s.url, EVENTS)));
  const seconds = (performance.now() - started) / 1000;
  await s.stop();
  return (EVENTS * clients) / seconds;
}

async function floor(store: MemoryStore): Promise<number> {
  const feed = memoryFeed(store);
  const encoder = new TextEncoder();
  const started = performance.now();
  let next = 0n;
  let got = 0;
  while (got < EVENTS) {
    const page = await feed.read({ kind: "category", name: "Order" }, next, 500);
    next = page.next;
    let text = "";
    for (const e of page.events) text += JSON.stringify(deliveredEvent(e)) + "\n";
    const bytes = encoder.encode(text);
    for (const line of new TextDecoder().decode(bytes).split("\n")) if (line) JSON.parse(line);
    got += page.events.length;
  }
  return EVENTS / ((performance.now() - started) / 1000);
}

async function latency(clients: number, samples = 1_000): Promise<number[]> {
  const store = createMemoryStore();
  const s = serve(store);
  const times: number[] = [];
  const readers = Array.from(
    { length: clients },
    () =>
      readAll(
        s.url,
        samples,
        "start",
        (d) => times.push(performance.now() - (d as { t: number }).t),
      ),
  );
  await new Promise((r) => setTimeout(r, 300)); // from the start of an empty store: a late client misses no sample
  for (let i = 0; i < samples; i++) {
    await store.append(
      `Order-${i % 10}`,
      [{ type: "Placed", data: { t: performance.now() } }],
      "any",
    );
    await new Promise((r) => setTimeout(r, 2));
  }
  await Promise.all(readers);
  await s.stop();
  return times.sort((a, b) => a - b);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const q = (sorted: number[], p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];

const store = await filled(EVENTS);
const rows: Record<string, number[]> = { floor: [], one: [], many: [] };
for (let round = 0; round < ROUNDS; round++) {
  rows.floor.push(await floor(store));
  rows.one.push(await throughput(store, 1));
  rows.many.push(await throughput(store, CLIENTS));
  console.error(
    `round ${round + 1}: floor ${rows.floor.at(-1)!.toFixed(0)}, 1 client ${
      rows.one.at(-1)!.toFixed(0)
    }, ${CLIENTS} clients ${rows.many.at(-1)!.toFixed(0)} events/s`,
  );
}
const lat1 = await latency(1);
const latN = await latency(CLIENTS);
console.log(
  `${runtime} ${os.cpus().length} cores, load ${os.loadavg().map((l) => l.toFixed(1)).join(" ")}, ${
    new Date().toISOString()
  }`,
);
console.log(`events ${EVENTS}, rounds ${ROUNDS} (medians)`);
console.log(`floor (in-process feed + encode/parse): ${median(rows.floor).toFixed(0)} events/s`);
console.log(
  `1 client:  ${median(rows.one).toFixed(0)} events/s (${
    (median(rows.one) / median(rows.floor)).toFixed(2)
  }x floor)`,
);
console.log(`${CLIENTS} clients: ${median(rows.many).toFixed(0)} events/s delivered in all`);
console.log(
  `append->client latency, 1 client: p50 ${q(lat1, 0.5).toFixed(2)} ms, p99 ${
    q(lat1, 0.99).toFixed(2)
  } ms`,
);
console.log(
  `append->client latency, ${CLIENTS} clients: p50 ${q(latN, 0.5).toFixed(2)} ms, p99 ${
    q(latN, 0.99).toFixed(2)
  } ms`,
);
