/**
 * The status page's cost to the process that serves it: two running pipelines (the status page
 * tests' world: billing with a stream failing for ever, shipping with a parked stream, a
 * producer appending `--rate` events/s) behind the HTTP handler on 127.0.0.1, and clients in a
 * child process of their own, so that the CPU measured is the server's.
 *
 * 1. Requests/s: `--seconds` of GET with 8 requests in flight, for `/status` (the snapshot
 *    JSON with the full history: `--warmup` s of samples every 100 ms, 600 by default, as ten
 *    minutes at the default 1 s), `/status?since=` 10 s ago (what a polling page asks), next to
 *    `/health` and `/metrics` (the named baselines), in an order that turns by round.
 * 2. Fan-out: 20 pages on `/status/events` at `intervalMs` 1 000 and 100: snapshots delivered
 *    per second and the server's CPU against no page, alternating; measured once every page is
 *    connected and has its first (full-history) snapshot, so it is the steady state.
 * 3. The pipeline with and without 5 pages attached (default interval 1 s): the server
 *    process's CPU per second of the same workload, alternating by round; medians.
 *
 *   deno run -A bench/status.ts [--rounds 5] [--seconds 5] [--rate 1000] [--warmup 60]
 *   bun bench/status.ts [--rounds 5] ...
 *
 * JSON per round on stdout, a summary (medians) on stderr.
 */
import process from "node:process";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { createHttpHandler } from "../observability/http.ts";
import { createStatusFeed } from "../observability/status.ts";
import { serve, sseEvents, statusWorld } from "../tests/observability/status_fixture.ts";

const args = process.argv.slice(2);
const arg = (name: string, fallback: number) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : fallback;
};
const isBun = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined";
const runtime = isBun ? "bun" : "deno";
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

// ---- the client process: `--client load URL SECONDS` or `--client pages URL N SECONDS`
if (args[0] === "--client") {
  const [, kind, url, a, b] = args;
  if (kind === "load") {
    const until = Date.now() + Number(a) * 1000;
    let done = 0, bytes = 0;
    await Promise.all(Array.from({ length: 8 }, async () => {
      while (Date.now() < until) {
        const r = await fetch(url);
        bytes += (await r.arrayBuffer()).byteLength;
        if (r.ok) done++;
      }
    }));
    console.log(JSON.stringify({ requests: done, bytes }));
  } else {
    // Every page connected and past its first (full) snapshot, then "ready", then SECONDS of
    // steady state counted.
    let events = 0, bytes = 0;
    const readers = await Promise.all(Array.from({ length: Number(a) }, async () => {
      const res = await fetch(url);
      const reader = res.body!.getReader();
      let seen = "";
      while (!seen.includes("event: snapshot")) {
        seen += new TextDecoder().decode((await reader.read()).value);
      }
      return reader;
    }));
    console.log("ready");
    const until = Date.now() + Number(b) * 1000;
    await Promise.all(readers.map(async (reader) => {
      while (Date.now() < until) {
        const { done, value } = await reader.read();
        if (done) break;
        bytes += value.byteLength;
        events += new TextDecoder().decode(value).split("event: snapshot").length - 1;
      }
      await reader.cancel();
    }));
    console.log(JSON.stringify({ events, bytes }));
  }
  process.exit(0);
}

/**
 * Runs the client process and answers what it printed last; `onReady` runs when it prints
 * "ready" (its pages connected).
 */
function client(rest: string[], onReady?: () => void): Promise<Record<string, number>> {
  const self = new URL(import.meta.url).pathname;
  const argv = isBun ? [self, "--client", ...rest] : ["run", "-A", self, "--client", ...rest];
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, argv, { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout!.on("data", (d) => {
      const before = out.includes("ready\n");
      out += d;
      if (!before && out.includes("ready\n")) onReady?.();
    });
    child.on("exit", (code) => {
      if (code === 0) resolve(JSON.parse(out.trim().split("\n").pop()!));
      else reject(new Error(`client ${rest.join(" ")} exited ${code}`));
    });
  });
}

const ROUNDS = arg("rounds", 5);
const SECONDS = arg("seconds", 5);
const RATE = arg("rate", 1000);

const WARMUP = arg("warmup", 60);
// Samples every 100 ms, so that the warm-up fills as many as ten minutes at 1 s would (600).
const world = await statusWorld({
  intervalMs: 1000,
  historyIntervalMs: 100,
  perTick: Math.max(1, Math.round(RATE / 50)),
});
const handlers = {
  1000: world.handler,
  100: createHttpHandler({ metrics: world.metrics, status: { intervalMs: 100 } }),
};
const servers = {
  1000: serve(handlers[1000]),
  100: serve(handlers[100]),
};
await sleep(WARMUP * 1000); // the pipelines warm up, the history fills
const snapshotBytes = (await (await fetch(`${servers[1000].url}/status`)).arrayBuffer()).byteLength;
const probe = sseEvents((await fetch(`${servers[1000].url}/status/events`)).body!);
const eventBytes = JSON.stringify((await probe.next()).value!.data).length;
await probe.return(undefined);

const results: Record<string, number[]> = {};
const add = (key: string, value: number) => (results[key] ??= []).push(value);

/** Wall time of one snapshot built and serialised, ms (median of 50): a feed tick's work. */
async function tickMs(since: () => number | undefined) {
  const feed = createStatusFeed(world.metrics, {}, {
    intervalMs: 1000,
    maxClients: 1,
    dropAfterMs: 30_000,
    actions: false,
    protectReads: false,
  });
  const times: number[] = [];
  for (let i = 0; i < 50; i++) {
    const t0 = performance.now();
    new TextEncoder().encode(JSON.stringify(await feed.snapshot(since())));
    times.push(performance.now() - t0);
  }
  return median(times);
}

/** CPU ms per second of this process from `start()` until `during` settles. */
async function cpuWhile(during: (start: () => void) => Promise<unknown>) {
  let c0 = cpuMs(), t0 = performance.now(), h0 = handledNow();
  const start = () => {
    c0 = cpuMs();
    t0 = performance.now();
    h0 = handledNow();
  };
  const out = await during(start);
  const seconds = (performance.now() - t0) / 1000;
  return { cpu: (cpuMs() - c0) / seconds, seconds, handled: handledNow() - h0, out };
}
const handledNow = () =>
  world.metrics.pipelines().reduce((n, p) => n + p.stats().counters.handled, 0);

for (let round = 0; round < ROUNDS; round++) {
  add("tick ms (10 s of history)", await tickMs(() => Date.now() - 10_000));
  add("tick ms (full history)", await tickMs(() => undefined));
  // 1. Requests/s, the three routes in an order that turns each round.
  const since = Date.now() - 10_000; // what a polling page asks for
  const routes = ["/status", `/status?since=${since}`, "/health", "/metrics"];
  for (let k = 0; k < routes.length; k++) {
    const route = routes[(k + round) % routes.length];
    const r = await client(["load", `${servers[1000].url}${route}`, String(SECONDS)]);
    add(`rps ${route.replace(/=\d+/, "=-10s")}`, r.requests / SECONDS);
  }
  // 2. and 3. No page, 5 pages, 20 pages at 1 s and at 100 ms, alternating.
  const shapes: Array<[string, number, 1000 | 100]> = [
    ["none", 0, 1000],
    ["5 pages at 1 s", 5, 1000],
    ["20 pages at 1 s", 20, 1000],
    ["20 pages at 100 ms", 20, 100],
  ];
  for (let k = 0; k < shapes.length; k++) {
    const [name, pages, interval] = shapes[(k + round) % shapes.length];
    const { cpu, seconds, handled, out } = await cpuWhile((start) =>
      pages === 0 ? sleep(SECONDS * 1000).then(() => ({ events: 0 })) : client(
        ["pages", `${servers[interval].url}/status/events`, String(pages), String(SECONDS)],
        start,
      )
    );
    add(`cpu ${name}`, cpu);
    // The producer's pace wanders with the machine's load: CPU per event handled compares fairly.
    add(`cpu ms/1k handled ${name}`, (cpu * seconds) / (handled / 1000));
    add(`handled/s ${name}`, handled / seconds);
    add(`snapshots/s ${name}`, (out as { events: number }).events / seconds);
  }
  console.log(
    JSON.stringify({
      round,
      ...Object.fromEntries(Object.entries(results).map(([k, v]) => [k, v.at(-1)])),
    }),
  );
}

const load = readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3);
console.error(`${runtime}: medians of ${ROUNDS} rounds of ${SECONDS} s, load ${load.join(" ")}`);
console.error(
  `snapshot ${snapshotBytes} bytes (GET /status, 2 pipelines, full history), feed event ${eventBytes} bytes`,
);
for (const [k, v] of Object.entries(results)) {
  console.error(
    `${k.padEnd(32)} ${
      median(v).toFixed(
        k.startsWith("cpu ms") || k.startsWith("tick") ? 2 : k.startsWith("cpu") ? 0 : 1,
      ).padStart(9)
    }   [${v.map((x) => x.toFixed(k.startsWith("tick") ? 2 : 0)).join(", ")}]`,
  );
}
for (const s of Object.values(servers)) await s.close().catch(() => {});
await world.stop();
process.exit(0);
