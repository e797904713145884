/**
 * The hotel demo: generates a workload of guest stays and group checkouts, runs the group
 * checkout reactor over it, prints progress and a summary, checks the outcome, and exits.
 *
 *   deno task demo                                   # in-process memory store, no server
 *   deno task demo --store pglite --dir ./hotel-db   # embedded PostgreSQL kept on disk
 *   deno task demo --store messagedb --url postgres://postgres@127.0.0.1:5432/impel_test
 *   deno task demo --store dynamo --endpoint http://127.0.0.1:8000   # DynamoDB (Local)
 *
 * Options: `--groups N` (default 2000 in memory, 30 on DynamoDB, 100 on PostgreSQL), `--seed N` (the workload
 * is reproducible), `--serve HOST:PORT` (the status page, /metrics and /health while the workload
 * runs; `--linger S` keeps them up S seconds after the summary), `--help`.
 *
 * @module
 */
import { configure } from "@logtape/logtape";
import { parseArgs } from "node:util";
import { consoleLogSink } from "../core/logging.ts";
import { sleep } from "../core/tranches.ts";
import { createHttpHandler } from "../observability/http.ts";
import { createMetrics, type ImpelMetrics } from "../observability/metrics.ts";
import { createStateCache } from "../core/decider.ts";
import type { EventStore } from "../core/store.ts";
import { categoryOf } from "../core/streamName.ts";
import { type GroupCheckout, groupCheckoutService } from "./hotel/groupCheckout.ts";
import { guestStayService } from "./hotel/guestStay.ts";
import { type ReactorCounters, startReactor } from "./hotel/reactor.ts";
import { type HotelBackend, memoryBackend } from "./hotel/wiring.ts";

const USAGE =
  `usage: deno task demo [--store memory|pglite|messagedb|dynamo] [--dir PATH] [--url URL]
                      [--endpoint URL] [--groups N] [--seed N] [--serve HOST:PORT [--linger S]]

  --store   memory (default): everything in process, no server
            pglite: embedded PostgreSQL with MessageDB (in memory, or in --dir)
            messagedb: a PostgreSQL server with the MessageDB schema (--url)
            dynamo: DynamoDB (--endpoint): tables hotel-events, hotel-index and
              hotel-checkpoints, created unless present, and the indexer in process
  --dir     where pglite keeps its data (reopened on the next run)
  --url     postgres:// URL for messagedb (default $IMPEL_PG_URL or
            postgres://postgres@127.0.0.1:5432/impel_test)
  --endpoint  DynamoDB endpoint for dynamo (default $IMPEL_DYNAMO_ENDPOINT, else AWS's;
            http://127.0.0.1:8000 for DynamoDB Local, which takes any credentials)
  --groups  group checkouts to generate (default 2000 in memory, 30 on DynamoDB,
            100 on PostgreSQL)
  --seed    workload seed (default 42)
  --serve   serve the status page (and /metrics, /health) on HOST:PORT while the workload
            runs, e.g. 127.0.0.1:9464; actions need $IMPEL_ADMIN_TOKEN (else a token is
            made up and printed)
  --linger  with --serve: keep serving S seconds after the summary (default 0)`;

type StoreKind = "memory" | "pglite" | "messagedb" | "dynamo";

interface Settings {
  readonly store: StoreKind;
  readonly dir?: string;
  readonly url: string;
  readonly endpoint?: string;
  readonly groups: number;
  readonly seed: number;
  readonly serve?: { readonly hostname: string; readonly port: number };
  readonly lingerS: number;
}

class UsageError extends Error {}

function parse(args: string[]): Settings | undefined {
  const { values } = parseArgs({
    args,
    options: {
      store: { type: "string", default: "memory" },
      dir: { type: "string" },
      url: { type: "string" },
      endpoint: { type: "string" },
      groups: { type: "string" },
      seed: { type: "string", default: "42" },
      serve: { type: "string" },
      linger: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) return undefined;
  const store = values.store as StoreKind;
  if (!["memory", "pglite", "messagedb", "dynamo"].includes(store)) {
    throw new UsageError(
      `--store must be memory, pglite, messagedb or dynamo, got ${values.store}`,
    );
  }
  if (values.dir !== undefined && store !== "pglite") {
    throw new UsageError("--dir applies to --store pglite");
  }
  if (values.url !== undefined && store !== "messagedb") {
    throw new UsageError("--url applies to --store messagedb");
  }
  if (values.endpoint !== undefined && store !== "dynamo") {
    throw new UsageError("--endpoint applies to --store dynamo");
  }
  const positive = (name: string, text: string) => {
    const n = Number(text);
    if (!Number.isInteger(n) || n < 1) {
      throw new UsageError(`--${name} must be a positive integer, got ${text}`);
    }
    return n;
  };
  let serve: Settings["serve"];
  if (values.serve !== undefined) {
    const m = /^(.+):(\d{1,5})$/.exec(values.serve);
    if (!m || Number(m[2]) > 65535) {
      throw new UsageError(`--serve must be HOST:PORT, e.g. 127.0.0.1:9464, got ${values.serve}`);
    }
    serve = { hostname: m[1].replace(/^\[(.*)\]$/, "$1"), port: Number(m[2]) };
  }
  if (values.linger !== undefined && serve === undefined) {
    throw new UsageError("--linger applies to --serve");
  }
  const lingerS = Number(values.linger ?? "0");
  if (!Number.isFinite(lingerS) || lingerS < 0) {
    throw new UsageError(`--linger must be a number of seconds >= 0, got ${values.linger}`);
  }
  return {
    serve,
    lingerS,
    store,
    dir: values.dir,
    // Read only when needed, so that the other stores need no environment permission.
    url: store !== "messagedb" ? "" : values.url ?? Deno.env.get("IMPEL_PG_URL") ??
      "postgres://postgres@127.0.0.1:5432/impel_test",
    endpoint: store !== "dynamo" ? undefined : values.endpoint ??
      Deno.env.get("IMPEL_DYNAMO_ENDPOINT"),
    groups: positive(
      "groups",
      values.groups ?? { memory: "2000", dynamo: "30" }[store as string] ?? "100",
    ),
    seed: positive("seed", values.seed!),
  };
}

async function openBackend(settings: Settings): Promise<HotelBackend> {
  if (settings.store === "memory") return memoryBackend();
  if (settings.store === "dynamo") {
    const { dynamoBackend } = await import("./hotel/dynamo.ts");
    return dynamoBackend({ endpoint: settings.endpoint });
  }
  // Loaded only when asked for, so the memory demo needs neither driver.
  const { messageDbBackend, pgliteBackend } = await import("./hotel/postgres.ts");
  return settings.store === "pglite" ? pgliteBackend(settings.dir) : messageDbBackend(settings.url);
}

/** A small seeded generator, so that a seed always yields the same workload. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface StayPlan {
  readonly id: string;
  readonly charges: readonly number[];
  readonly paid: number;
  /** Settled and checked out before any group selects it: its merge must fail. */
  readonly checkedOut: boolean;
}

interface GroupPlan {
  readonly id: string;
  /** Selections made one after the other; the second often lands while the first is merging. */
  readonly waves: readonly (readonly string[])[];
}

/**
 * Stays of 2–6 per group; about 4% of stays checked out beforehand, 3% of groups also selecting
 * a stay of the previous group (contested: exactly one group may get it) and 2% selecting a stay
 * that never checked in.
 */
function plan(groups: number, seed: number) {
  const next = random(seed);
  const run = crypto.randomUUID().slice(0, 8); // fresh ids on every run, for persistent stores
  const stays: StayPlan[] = [];
  const groupPlans: GroupPlan[] = [];
  for (let g = 0; g < groups; g++) {
    const own: string[] = [];
    for (let s = 2 + Math.floor(next() * 5); s > 0; s--) {
      const charges = Array.from(
        { length: 1 + Math.floor(next() * 3) },
        () => 1_000 + Math.floor(next() * 40) * 500,
      );
      const total = charges.reduce((a, b) => a + b, 0);
      const checkedOut = next() < 0.04;
      const paid = checkedOut ? total : next() < 0.3 ? Math.floor(total / 2) : 0;
      const id = `${run}s${stays.length}`;
      stays.push({ id, charges, paid, checkedOut });
      own.push(id);
    }
    const extra: string[] = [];
    if (g > 0 && next() < 0.03) extra.push(groupPlans[g - 1].waves[0][0]);
    if (next() < 0.02) extra.push(`${run}ghost${g}`);
    const cut = Math.ceil(own.length / 2);
    groupPlans.push({
      id: `${run}g${g}`,
      waves: [own.slice(0, cut), [...own.slice(cut), ...extra]],
    });
  }
  return { stays, groups: groupPlans };
}

/** Runs `fn` over `items` with at most `limit` in flight. */
async function forEachLimit<T>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  let yielded = performance.now();
  const worker = async () => {
    while (next < items.length) {
      await fn(items[next++]);
      // PGlite answers through promises alone, so a busy loop of queries would starve timers
      // (progress lines, checkpoint commits) without an occasional macrotask turn.
      if (performance.now() - yielded > 50) {
        yielded = performance.now();
        await new Promise((resolve) => setTimeout(resolve, 0));
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/** Counts appended events by category. */
function counting(store: EventStore) {
  const written = new Map<string, number>();
  const counted: EventStore = {
    readStream: (stream, options) => store.readStream(stream, options),
    async append(stream, events, expected) {
      const result = await store.append(stream, events, expected);
      const category = categoryOf(stream);
      written.set(category, (written.get(category) ?? 0) + events.length);
      return result;
    },
  };
  return { store: counted, written };
}

const n = (x: number) => x.toLocaleString("en-US");
const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

/** Serves the status page, /metrics and /health on `settings.serve`; stop() ends them. */
async function serveStatus(settings: NonNullable<Settings["serve"]>, metrics: ImpelMetrics) {
  const given = Deno.env.get("IMPEL_ADMIN_TOKEN");
  const token = given ?? crypto.randomUUID();
  const stopping = new AbortController();
  const handler = createHttpHandler({ metrics, token, signal: stopping.signal });
  const listening = Promise.withResolvers<string>();
  const server = Deno.serve({
    hostname: settings.hostname,
    port: settings.port,
    onListen: ({ hostname, port }) => {
      const host = hostname.includes(":") ? `[${hostname}]` : hostname;
      listening.resolve(`http://${host}:${port}/`);
    },
  }, handler);
  const url = await listening.promise;
  console.log(
    `status page: ${url} (also /metrics and /health); actions need the token ` +
      (given === undefined
        ? `${token} (set IMPEL_ADMIN_TOKEN to choose one)`
        : "$IMPEL_ADMIN_TOKEN"),
  );
  return {
    async stop() {
      stopping.abort(); // ends the pages' event streams, which a graceful shutdown waits for
      await server.shutdown();
    },
  };
}

async function main(settings: Settings): Promise<boolean> {
  const started = performance.now();
  const metrics = settings.serve ? createMetrics() : undefined;
  const serving = settings.serve && metrics
    ? await serveStatus(settings.serve, metrics)
    : undefined;
  const backend = await openBackend(settings);
  const { store, written } = counting(backend.store);
  const cache = createStateCache({ maxEntries: 100_000 });
  const stays = guestStayService(store, { cache });
  const groups = groupCheckoutService(store, { cache });
  const counters: ReactorCounters = { merged: 0, failed: 0, idle: 0 };
  const controller = new AbortController();
  const reactor = startReactor({
    stays,
    groups,
    counters,
    source: backend.source(controller.signal),
    sink: { maxConcurrentStreams: 32, commitIntervalMs: 500 },
    metrics,
  });
  const work = plan(settings.groups, settings.seed);
  const totalWritten = () => [...written.values()].reduce((a, b) => a + b, 0);
  const opened = secs(performance.now() - started);
  console.log(
    `hotel demo on ${backend.name}: ${n(work.groups.length)} group checkouts, ` +
      `${n(work.stays.length)} stays (opened in ${opened})`,
  );

  let phase = "stays";
  let lastAt = performance.now(), lastWritten = 0, lastHandled = 0;
  const progress = setInterval(() => {
    const now = performance.now();
    const s = reactor.sink.stats();
    const dt = (now - lastAt) / 1000;
    const total = totalWritten(), handled = s.counters.handled;
    const line = [
      `  [${secs(now - started).padStart(6)}] ${phase.padEnd(8)}`,
      `written ${n(total).padStart(7)} (${n(Math.round((total - lastWritten) / dt))}/s),`,
      `reactor handled ${n(handled)} (${n(Math.round((handled - lastHandled) / dt))}/s),`,
      `merged ${n(counters.merged)}, failed ${n(counters.failed)},`,
      `busy ${s.busy.length}, failing ${s.failing.length}`,
    ];
    console.log(line.join(" "));
    lastAt = now, lastWritten = total, lastHandled = handled;
  }, 500);

  const closing = async () => {
    clearInterval(progress);
    if (serving && settings.lingerS > 0) {
      console.log(`serving the status page for ${settings.lingerS} s more`);
      await sleep(settings.lingerS * 1000);
    }
    controller.abort();
    await reactor.stop();
    await backend.close();
    await serving?.stop();
  };
  try {
    const t = () => new Date().toISOString();
    const workStarted = performance.now();
    await forEachLimit(work.stays, 16, async (stay) => {
      await stays.checkIn(stay.id, t());
      for (const [i, amount] of stay.charges.entries()) {
        await stays.charge(stay.id, `c${i}`, amount, t());
      }
      if (stay.paid > 0) await stays.pay(stay.id, "p0", stay.paid, t());
      if (stay.checkedOut) await stays.checkOut(stay.id, t());
    });
    phase = "select";
    await forEachLimit(work.groups, 16, async (group) => {
      for (const wave of group.waves) if (wave.length > 0) await groups.select(group.id, wave, t());
    });
    phase = "merge";
    await backend.settle(reactor.sink, 120_000);
    const merged = performance.now();

    phase = "confirm";
    let confirmed = 0;
    await forEachLimit(work.groups, 16, async (group) => {
      const { state } = await groups.read(group.id);
      if (state.balance > 0) await groups.pay(group.id, "settlement", state.balance, t());
      if ((await groups.confirm(group.id, t())).ok) confirmed++;
    });
    await backend.settle(reactor.sink, 120_000);
    const finished = performance.now();

    // Check the outcome: nothing pending, every group confirmed, no stay in two groups.
    const states: GroupCheckout[] = [];
    for (const group of work.groups) states.push((await groups.read(group.id)).state);
    const owner = new Map<string, number>();
    const reasons = new Map<string, number>();
    for (const s of states) {
      for (const m of s.merged) owner.set(m.stayId, (owner.get(m.stayId) ?? 0) + 1);
      for (const f of s.failed) reasons.set(f.reason, (reasons.get(f.reason) ?? 0) + 1);
    }
    const problems: string[] = [];
    const pending = states.reduce((sum, s) => sum + s.pending.length, 0);
    if (pending > 0) problems.push(`${pending} stays still pending`);
    if (confirmed !== work.groups.length) {
      problems.push(`${work.groups.length - confirmed} groups not confirmed`);
    }
    const doubled = [...owner.values()].filter((count) => count > 1).length;
    if (doubled > 0) problems.push(`${doubled} stays merged into more than one group`);

    clearInterval(progress);
    const s = reactor.sink.stats();
    const ms = finished - workStarted;
    const failures = [...reasons.values()].reduce((a, b) => a + b, 0);
    const byReason = [...reasons].map(([reason, count]) => `${reason} ${n(count)}`).join(", ");
    const byCategory = [...written].map(([category, k]) => `${category} ${n(k)}`).join(", ");
    const rate = n(Math.round(totalWritten() / (ms / 1000)));
    const { p50, p99 } = s.latency.ok;
    console.log(`summary (${backend.name}):`);
    console.log(
      `  written     ${n(totalWritten())} events (${byCategory}) in ${secs(ms)}: ${rate} events/s`,
    );
    console.log(
      `  reactor     ${n(owner.size)} stays merged, ${n(failures)} merges failed ` +
        `(${byReason || "none"}); every selection merged ${
          secs(merged - workStarted)
        } after the start`,
    );
    console.log(
      `  scheduler   ${n(s.counters.events)} events in, ${n(s.counters.handled)} handled in ` +
        `${n(s.counters.calls)} calls, ${n(s.counters.duplicates)} already handled on arrival ` +
        `(the reactor's own writes); handler p50 ${p50.toFixed(1)} ms, p99 ${p99.toFixed(1)} ms; ` +
        `${s.counters.failures} handler failures`,
    );
    console.log(`  groups      ${n(confirmed)} of ${n(work.groups.length)} confirmed`);
    console.log(`  total       ${secs(performance.now() - started)}`);
    for (const p of problems) console.error(`PROBLEM: ${p}`);
    return problems.length === 0;
  } finally {
    await closing();
  }
}

if (import.meta.main) {
  await configure({
    sinks: { console: consoleLogSink() },
    loggers: [
      { category: ["impel"], lowestLevel: "warning", sinks: ["console"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["console"] },
    ],
  });
  let settings: Settings | undefined;
  try {
    settings = parse(Deno.args);
  } catch (error) {
    console.error(`${(error as Error).message}\n\n${USAGE}`);
    Deno.exit(2);
  }
  if (settings === undefined) {
    console.log(USAGE);
  } else {
    try {
      if (!(await main(settings))) Deno.exitCode = 1;
    } catch (error) {
      const hint = settings.store === "messagedb"
        ? " (is PostgreSQL running with the MessageDB schema? impel init messagedb --url … sets one up)"
        : settings.store === "dynamo"
        ? " (is DynamoDB reachable? tools/dynamodb.sh start runs DynamoDB Local on 127.0.0.1:8000)"
        : "";
      console.error(
        `demo failed on ${settings.store}: ${(error as Error).message ?? error}${hint}`,
      );
      Deno.exitCode = 1;
    }
  }
}
