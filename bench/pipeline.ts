/**
 * Core pipeline benchmark: memory source → scheduler → no-op handler, against the floor of a bare
 * loop calling the same handler over the same events. One scenario per process, so that peak RSS
 * belongs to that scenario alone.
 *
 *   deno task bench                 # every scenario, Deno and Bun, as a table
 *   deno run -A bench/pipeline.ts --scenario spread   # one scenario, JSON on stdout
 */
import { type Batch, run, type StreamEvent, streamsSink } from "../mod.ts";
import { createMemoryStore, memorySource } from "../sources/memory.ts";
import { feedSource } from "../sources/feed.ts";

interface Result {
  scenario: string;
  runtime: string;
  events: number;
  seconds: number;
  eventsPerSec: number;
  calls: number;
  peakRssMb: number;
}

// deno-lint-ignore no-explicit-any
const g = globalThis as any;
const runtime = g.Bun ? `bun ${g.Bun.version}` : `deno ${g.Deno.version.deno}`;
const rss = (): number => g.Bun ? g.process.memoryUsage().rss : g.Deno.memoryUsage().rss;

let calls = 0;
// The handler under test: no work beyond being awaited.
const handler = (_stream: string, _events: readonly StreamEvent[]) => {
  calls++;
  return Promise.resolve();
};

function sampler() {
  let peak = rss();
  const timer = setInterval(() => (peak = Math.max(peak, rss())), 20);
  return () => {
    clearInterval(timer);
    return Math.max(peak, rss()) / 2 ** 20;
  };
}

/** Appends `events` events over `streams` streams, one event per commit, streams round-robin. */
async function fill(streams: number, perStream: number) {
  const store = createMemoryStore();
  for (let i = 0; i < perStream; i++) {
    for (let s = 0; s < streams; s++) {
      await store.append(`Bench-${s}`, [{ type: "E", data: null }], i);
    }
  }
  return store;
}

/** Times `body` over `events` events, with the handler's call count and the peak RSS meanwhile. */
async function measure(
  scenario: string,
  events: number,
  body: () => Promise<void>,
): Promise<Result> {
  const peak = sampler();
  calls = 0;
  const t0 = performance.now();
  await body();
  const seconds = (performance.now() - t0) / 1000;
  return {
    scenario,
    runtime,
    events,
    seconds,
    eventsPerSec: events / seconds,
    calls,
    peakRssMb: peak(),
  };
}

/** Runs `source` through the scheduler until everything is handled and every tranche is at its tail. */
async function throughScheduler(source: ReadableStream<Batch>): Promise<void> {
  const sink = streamsSink({ handler, maxConcurrentStreams: 64, statsIntervalMs: 0 });
  const ac = new AbortController();
  const running = run(source, sink, { signal: ac.signal });
  await sink.monitor.awaitCompletion({ tail: true });
  ac.abort();
  await running;
}

async function pipeline(scenario: string, streams: number, perStream: number): Promise<Result> {
  const store = await fill(streams, perStream);
  return measure(scenario, streams * perStream, () => throughScheduler(memorySource({ store })));
}

async function floor(scenario: string, streams: number, perStream: number): Promise<Result> {
  const store = await fill(streams, perStream);
  const byStream = new Map<string, StreamEvent[]>();
  for (const { stream, event } of store.readLog(0, store.head)) {
    let list = byStream.get(stream);
    if (!list) byStream.set(stream, list = []);
    list.push(event);
  }
  return measure(scenario, streams * perStream, async () => {
    for (const [stream, events] of byStream) await handler(stream, events);
  });
}

/** The floor at one call per event: the handler called for each event in log order. */
async function floorPerEvent(
  scenario: string,
  streams: number,
  perStream: number,
): Promise<Result> {
  const store = await fill(streams, perStream);
  const log = store.readLog(0, store.head);
  return measure(scenario, streams * perStream, async () => {
    for (const { stream, event } of log) await handler(stream, [event]);
  });
}

/** A lazily generated backlog of `total` events over `streams` streams, read a page at a time. */
function lazy(scenario: string, total: number, streams: number): Promise<Result> {
  const time = new Date(0);
  const page = 1000;
  const source = feedSource({
    name: "generator",
    tranches: ["0"],
    tailSleepMs: 10,
    readPage: (_tranche, position) => {
      const from = Number(position ?? 0n);
      const to = Math.min(total, from + page);
      const items = [];
      for (let n = from; n < to; n++) {
        const index = Math.floor(n / streams);
        const event = { index, type: "E", data: null, meta: null, id: "", time, size: 0 };
        items.push({ stream: `Gen-${n % streams}`, event });
      }
      return Promise.resolve({ items, next: BigInt(to), isTail: to === total });
    },
  });
  return measure(scenario, total, () => throughScheduler(source));
}

const scenarios: Record<string, () => Promise<Result>> = {
  "spread": () => pipeline("1M events / 10k streams", 10_000, 100),
  "spread-floor": () => floor("floor: 1M events / 10k streams", 10_000, 100),
  "spread-floor-per-event": () => floorPerEvent("floor, a call per event: 1M / 10k", 10_000, 100),
  "single": () => pipeline("1M streams x 1 event", 1_000_000, 1),
  "single-floor": () => floor("floor: 1M streams x 1 event", 1_000_000, 1),
  "lazy-1m": () => lazy("lazy 1M events / 10k streams", 1_000_000, 10_000),
  "lazy": () => lazy("lazy 10M events / 10k streams", 10_000_000, 10_000),
};

const args: string[] = g.Bun ? g.process.argv.slice(2) : g.Deno.args;
const which = args[args.indexOf("--scenario") + 1];
if (args.includes("--scenario")) {
  const scenario = scenarios[which];
  if (!scenario) {
    throw new Error(`unknown scenario ${which}; one of ${Object.keys(scenarios).join(", ")}`);
  }
  console.log(JSON.stringify(await scenario()));
} else {
  // Driver: every scenario in its own process, under each runtime given (default both).
  const runtimes = args.length ? args : ["deno", "bun"];
  const bin = (r: string) => new URL(`../node_modules/.bin/${r}`, import.meta.url).pathname;
  const rows: Result[] = [];
  for (const r of runtimes) {
    for (const name of Object.keys(scenarios)) {
      const cmdArgs = r === "deno"
        ? [
          "run",
          "-A",
          "--v8-flags=--max-old-space-size=4096",
          new URL(import.meta.url).pathname,
          "--scenario",
          name,
        ]
        : [new URL(import.meta.url).pathname, "--scenario", name];
      const out = await new g.Deno.Command(bin(r), {
        args: cmdArgs,
        stdout: "piped",
        stderr: "inherit",
      }).output();
      if (!out.success) throw new Error(`${r} ${name} failed`);
      const result: Result = JSON.parse(
        new TextDecoder().decode(out.stdout).trim().split("\n").pop()!,
      );
      rows.push(result);
      console.error(
        `${result.runtime.padEnd(12)} ${result.scenario.padEnd(32)} ${
          Math.round(result.eventsPerSec).toLocaleString("en").padStart(12)
        } events/s  ${result.seconds.toFixed(2)} s  calls ${result.calls}  peak RSS ${
          result.peakRssMb.toFixed(0)
        } MB`,
      );
    }
  }
  console.log(JSON.stringify(rows, null, 2));
}
