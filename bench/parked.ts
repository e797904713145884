/**
 * Parked-streams benchmark.
 *
 * 1. The healthy path: 1M generated events over 10k streams (fresh stream names, as real sources
 *    decode them) through the scheduler with a no-op handler, with no failure policy against the
 *    same with a park policy configured (a memory park store, and a PostgreSQL one) and no
 *    failures. Each scenario in a process of its own, in alternating rounds; medians of events
 *    per second of wall time and of the process's CPU time (the CPU figure is the steadier on a
 *    machine shared with other work).
 * 2. Parking: 10k poison streams of one event each, every handler call throwing, parked after
 *    one attempt in PostgreSQL (IMPEL_PG_URL, a schema of its own): streams parked per second,
 *    until every batch is complete (the checkpoint could pass them all).
 *
 *   deno run -A bench/parked.ts [--rounds 5]     # everything, JSON on stdout, rows on stderr
 *   deno run -A bench/parked.ts --scenario park-pg-16   # one scenario
 */
// @ts-types="@types/pg"
import pg from "pg";
import process from "node:process";
import { type Batch, type FailurePolicy, run, type StreamEvent, streamsSink } from "../mod.ts";
import { memoryParkStore } from "../parked/memory.ts";
import { initPostgresParkStore, postgresParkStore } from "../parked/postgres.ts";

const url = Deno.env.get("IMPEL_PG_URL") ?? "postgres://postgres@127.0.0.1:5432/impel_test";

interface Result {
  scenario: string;
  events: number;
  seconds: number;
  perSec: number;
  /** Events per second of the process's CPU time (user + system). */
  perCpuSec?: number;
}

/** Batches of `page` generated events with freshly built stream names. */
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

async function through(
  total: number,
  streams: number,
  handler: (s: string, e: readonly StreamEvent[]) => Promise<void>,
  failure: FailurePolicy | undefined,
  maxConcurrentStreams: number,
): Promise<{ seconds: number; cpu: number }> {
  const sink = streamsSink({
    group: "bench",
    handler,
    maxConcurrentStreams,
    statsIntervalMs: 0,
    ...(failure === undefined ? {} : { failure }),
  });
  const ac = new AbortController();
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  const running = run(generated(total, streams), sink, { signal: ac.signal });
  await sink.monitor.awaitCompletion({ tail: true });
  const seconds = (performance.now() - t0) / 1000;
  const c = process.cpuUsage(c0);
  ac.abort();
  await running;
  return { seconds, cpu: (c.user + c.system) / 1e6 };
}

const healthyResult = (scenario: string, r: { seconds: number; cpu: number }): Result => ({
  scenario,
  events: TOTAL,
  seconds: r.seconds,
  perSec: TOTAL / r.seconds,
  perCpuSec: TOTAL / r.cpu,
});

async function withPg<T>(fn: (pool: pg.Pool, schema: string) => Promise<T>): Promise<T> {
  const pool = new pg.Pool({ connectionString: url, max: 4 });
  const schema = `bench_park_${crypto.randomUUID().slice(0, 8)}`;
  try {
    await initPostgresParkStore(pool, { schema });
    return await fn(pool, schema);
  } finally {
    await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await pool.end();
  }
}

const ok = () => Promise.resolve();
const TOTAL = 1_000_000, STREAMS = 10_000, POISON = 10_000;

const scenarios: Record<string, () => Promise<Result>> = {
  "healthy": async () =>
    healthyResult("no failure policy", await through(TOTAL, STREAMS, ok, undefined, 64)),
  "healthy-park-memory": async () => {
    const failure = { kind: "park", maxAttempts: 3, store: memoryParkStore() } as const;
    return healthyResult(
      "park policy, memory store",
      await through(TOTAL, STREAMS, ok, failure, 64),
    );
  },
  "healthy-park-pg": () =>
    withPg(async (pool, schema) => {
      const failure = {
        kind: "park",
        maxAttempts: 3,
        store: postgresParkStore(pool, { schema }),
      } as const;
      return healthyResult(
        "park policy, PostgreSQL store",
        await through(TOTAL, STREAMS, ok, failure, 64),
      );
    }),
  ...Object.fromEntries([16, 64].map((slots) => [
    `park-pg-${slots}`,
    () =>
      withPg(async (pool, schema) => {
        const store = postgresParkStore(pool, { schema });
        const failure = { kind: "park", maxAttempts: 1, store } as const;
        const poison = () => Promise.reject(new Error("poison"));
        const { seconds: s } = await through(POISON, POISON, poison, failure, slots);
        const parked = (await store.list("bench")).length;
        if (parked !== POISON) throw new Error(`${parked} of ${POISON} streams parked`);
        return {
          scenario: `park 10k poison streams in PostgreSQL, ${slots} at once`,
          events: POISON,
          seconds: s,
          perSec: POISON / s,
        };
      }),
  ])),
};

const args = Deno.args;
if (args.includes("--scenario")) {
  const name = args[args.indexOf("--scenario") + 1];
  const scenario = scenarios[name];
  if (!scenario) throw new Error(`unknown scenario ${name}; one of ${Object.keys(scenarios)}`);
  console.log(JSON.stringify(await scenario()));
} else {
  const rounds = Number(args[args.indexOf("--rounds") + 1] ?? 5) || 5;
  const self = new URL(import.meta.url).pathname;
  const inProcess = async (name: string): Promise<Result> => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", self, "--scenario", name],
      stdout: "piped",
      stderr: "inherit",
    }).output();
    if (!out.success) throw new Error(`${name} failed`);
    return JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").pop()!);
  };
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const rates: Record<string, number[]> = {};
  const cpuRates: Record<string, number[]> = {};
  const healthy = ["healthy", "healthy-park-memory", "healthy-park-pg"];
  for (let i = 0; i < rounds; i++) {
    // Alternating order, so that drift in the machine's load falls on each scenario alike.
    for (const name of i % 2 === 0 ? healthy : [...healthy].reverse()) {
      const r = await inProcess(name);
      (rates[name] ??= []).push(r.perSec);
      (cpuRates[name] ??= []).push(r.perCpuSec!);
      console.error(
        `round ${i + 1} ${r.scenario}: ${Math.round(r.perSec)} events/s, ${
          Math.round(r.perCpuSec!)
        } per CPU second`,
      );
    }
  }
  for (const name of ["park-pg-16", "park-pg-64"]) {
    for (let i = 0; i < Math.min(rounds, 3); i++) {
      const r = await inProcess(name);
      (rates[name] ??= []).push(r.perSec);
      console.error(`${r.scenario}: ${Math.round(r.perSec)} streams/s (${r.seconds.toFixed(2)} s)`);
    }
  }
  const base = median(rates.healthy), cpuBase = median(cpuRates.healthy);
  console.log(JSON.stringify(
    Object.fromEntries(
      Object.entries(rates).map(([name, xs]) => [name, {
        median: Math.round(median(xs)),
        all: xs.map(Math.round),
        ...(cpuRates[name] === undefined ? {} : {
          cpuMedian: Math.round(median(cpuRates[name])),
          cpuAll: cpuRates[name].map(Math.round),
        }),
        ...(name.startsWith("healthy-")
          ? {
            ratio: +(median(xs) / base).toFixed(3),
            cpuRatio: +(median(cpuRates[name]) / cpuBase).toFixed(3),
          }
          : {}),
      }]),
    ),
    null,
    2,
  ));
}
