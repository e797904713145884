/**
 * Core pipeline benchmark: memory source → scheduler → no-op handler, against the floor of a bare
 * loop calling the same handler over the same events. One scenario per process, so that peak RSS
 * belongs to that scenario alone.
 *
 *   deno task bench                 # every scenario, Deno and Bun, as a table
 *   deno run -A bench/pipeline.ts --scenario spread   # one scenario, JSON on stdout
 *   deno run -A bench/pipeline.ts --pairs 5 deno bun [--only fresh,single]   # vs the floors
 */
import { type Batch, run, type StreamEvent, streamsSink } from "../mod.ts";
import { createMemoryStore, memorySource } from "../sources/memory.ts";
import { feedSource } from "../sources/feed.ts";
import process from "node:process";

interface Result {
  scenario: string;
  runtime: string;
  events: number;
  seconds: number;
  eventsPerSec: number;
  /** CPU time of the process (every thread, GC included) during the measurement, µs per event. */
  cpuUsPerEvent: number;
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
  const cpu = process.cpuUsage();
  const t0 = performance.now();
  await body();
  const seconds = (performance.now() - t0) / 1000;
  const used = process.cpuUsage(cpu);
  return {
    scenario,
    runtime,
    events,
    seconds,
    eventsPerSec: events / seconds,
    cpuUsPerEvent: (used.user + used.system) / events,
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

/**
 * Batches of `page` events generated on demand, each with a freshly built stream name as a row
 * decode or a Kafka key decode produces it (its hash is computed on its first Map lookup).
 */
function generated(total: number, streams: number, page = 1000): ReadableStream<Batch> {
  const time = new Date(0);
  let from = 0;
  return new ReadableStream<Batch>({
    pull(controller) {
      const to = Math.min(total, from + page);
      const items = [];
      for (let n = from; n < to; n++) {
        const event = {
          index: Math.floor(n / streams),
          type: "E",
          data: null,
          meta: null,
          id: "",
          time,
          size: 0,
        };
        items.push({ stream: `Gen-${n % streams}`, event });
      }
      from = to;
      controller.enqueue({ tranche: "0", items, position: BigInt(to), isTail: to === total });
      if (to === total) controller.close();
    },
  }, { highWaterMark: 0 });
}

/** Generated batches straight into the scheduler. */
function fresh(scenario: string, total: number, streams: number): Promise<Result> {
  return measure(scenario, total, () => throughScheduler(generated(total, streams)));
}

/**
 * The floor of the same work: the generated batches grouped by stream in one Map kept across
 * batches (as the scheduler keeps stream states), the handler awaited once per stream of each
 * batch.
 */
function freshFloor(scenario: string, total: number, streams: number): Promise<Result> {
  return measure(scenario, total, async () => {
    const reader = generated(total, streams).getReader();
    const byStream = new Map<string, { events: StreamEvent[] }>();
    const touched: Array<[string, { events: StreamEvent[] }]> = [];
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      for (const { stream, event } of value.items) {
        let state = byStream.get(stream);
        if (state === undefined) byStream.set(stream, state = { events: [] });
        if (state.events.length === 0) touched.push([stream, state]);
        state.events.push(event);
      }
      for (const [stream, state] of touched) {
        const events = state.events;
        state.events = [];
        await handler(stream, events);
      }
      touched.length = 0;
    }
  });
}

/**
 * The floor with the reading and the Map work inside the measurement: read the store's log (as
 * the memory source does, decoding each event), group it by stream, then call once per stream.
 */
async function mapFloor(scenario: string, streams: number, perStream: number): Promise<Result> {
  const store = await fill(streams, perStream);
  return measure(scenario, streams * perStream, async () => {
    const log = store.readLog(0, store.head);
    const byStream = new Map<string, StreamEvent[]>();
    for (const { stream, event } of log) {
      const list = byStream.get(stream);
      if (list) list.push(event);
      else byStream.set(stream, [event]);
    }
    for (const [stream, events] of byStream) await handler(stream, events);
  });
}

const scenarios: Record<string, () => Promise<Result>> = {
  "spread": () => pipeline("1M events / 10k streams", 10_000, 100),
  "spread-floor": () => floor("floor: 1M events / 10k streams", 10_000, 100),
  "spread-floor-per-event": () => floorPerEvent("floor, a call per event: 1M / 10k", 10_000, 100),
  "single": () => pipeline("1M streams x 1 event", 1_000_000, 1),
  "single-floor": () => floor("floor: 1M streams x 1 event", 1_000_000, 1),
  "lazy-1m": () => lazy("lazy 1M events / 10k streams", 1_000_000, 10_000),
  "lazy": () => lazy("lazy 10M events / 10k streams", 10_000_000, 10_000),
  "single-map-floor": () => mapFloor("floor with Map: 1M streams x 1", 1_000_000, 1),
  "fresh": () => fresh("fresh names: 1M events / 10k streams", 1_000_000, 10_000),
  "fresh-floor": () => freshFloor("floor, fresh names: 1M / 10k", 1_000_000, 10_000),
  "fresh-single": () => fresh("fresh names: 1M streams x 1", 1_000_000, 1_000_000),
  "fresh-single-floor": () => freshFloor("floor, fresh: 1M streams x 1", 1_000_000, 1_000_000),
  "streams-10m": () => fresh("lazy 10M streams x 1 event", 10_000_000, 10_000_000),
};

/** Scenario pairs compared round by round (`--pairs`): the pipeline, then its floor. */
const pairs: Array<[string, string]> = [
  ["single", "single-map-floor"],
  ["fresh", "fresh-floor"],
  ["fresh-single", "fresh-single-floor"],
];

const args: string[] = g.Bun ? g.process.argv.slice(2) : g.Deno.args;

/** Runs one scenario in a process of its own under runtime `r` (so that peak RSS is its own). */
async function inProcess(r: string, name: string): Promise<Result> {
  const bin = new URL(`../node_modules/.bin/${r}`, import.meta.url).pathname;
  const self = new URL(import.meta.url).pathname;
  const cmdArgs = r === "deno"
    ? ["run", "-A", "--v8-flags=--max-old-space-size=4096", self, "--scenario", name]
    : [self, "--scenario", name];
  const out = await new g.Deno.Command(bin, {
    args: cmdArgs,
    stdout: "piped",
    stderr: "inherit",
  }).output();
  if (!out.success) throw new Error(`${r} ${name} failed`);
  return JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").pop()!);
}
const which = args[args.indexOf("--scenario") + 1];
if (args.includes("--scenario")) {
  const scenario = scenarios[which];
  if (!scenario) {
    throw new Error(`unknown scenario ${which}; one of ${Object.keys(scenarios).join(", ")}`);
  }
  console.log(JSON.stringify(await scenario()));
} else if (args.includes("--pairs")) {
  // Alternating rounds of each pipeline scenario and its floor, medians and their ratio.
  const rounds = Number(args[args.indexOf("--pairs") + 1] ?? 5);
  const runtimes = args.filter((a) => a === "deno" || a === "bun");
  // `--only fresh,single`: just those pipeline scenarios' pairs.
  const only = args.includes("--only") ? args[args.indexOf("--only") + 1].split(",") : undefined;
  const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const summary = [];
  for (const r of runtimes.length ? runtimes : ["deno", "bun"]) {
    for (const [a, b] of pairs.filter(([a]) => only === undefined || only.includes(a))) {
      const rates: Record<string, number[]> = { [a]: [], [b]: [] };
      const cpu: Record<string, number[]> = { [a]: [], [b]: [] };
      for (let i = 0; i < rounds; i++) {
        for (const name of i % 2 === 0 ? [a, b] : [b, a]) {
          const result = await inProcess(r, name);
          rates[name].push(result.eventsPerSec);
          cpu[name].push(result.cpuUsPerEvent);
        }
      }
      const row = {
        runtime: r,
        pipeline: a,
        floor: b,
        pipelineMedian: Math.round(median(rates[a])),
        floorMedian: Math.round(median(rates[b])),
        ratio: +(median(rates[a]) / median(rates[b])).toFixed(2),
        // CPU per event (all threads, GC included): less disturbed by other jobs than wall time.
        pipelineCpuUs: +median(cpu[a]).toFixed(3),
        floorCpuUs: +median(cpu[b]).toFixed(3),
        cpuRatio: +(median(cpu[b]) / median(cpu[a])).toFixed(2),
      };
      console.error(JSON.stringify(row));
      summary.push(row);
    }
  }
  console.log(JSON.stringify(summary, null, 2));
} else {
  // Driver: every scenario in its own process, under each runtime given (default both).
  const runtimes = args.length ? args : ["deno", "bun"];
  const rows: Result[] = [];
  for (const r of runtimes) {
    for (const name of Object.keys(scenarios)) {
      const result = await inProcess(r, name);
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
