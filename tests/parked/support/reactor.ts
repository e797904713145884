// A reactor with parked streams, run as a real process by the kill tests
// (tests/parked/kill.test.ts, tests/faults/parked.fault.ts): a messageDbSource over a pg.Pool
// with PostgreSQL checkpoints, into a streamsSink whose park policy parks a stream after 3 failed
// attempts in a PostgreSQL park store (or, with PARK_STORE=dynamo, a DynamoDB one). The handler fails on events whose data has `poison: true`
// unless PARK_FIXED=1 (the fix is deployed), and logs each call's start and end, one unbuffered
// line each, so that the log holds everything that happened before a SIGKILL.
//
// Environment: IMPEL_PG_URL, PARK_CATEGORY, PARK_GROUP, PARK_SCHEMA (checkpoint and park tables),
// PARK_LOG (the log file), PARK_FIXED=1, PARK_HANDLER_MS (per event, default 2); PARK_STORE=dynamo
// and PARK_TABLE (with DYNAMODB_ENDPOINT, default http://127.0.0.1:8000) for a DynamoDB park store.
//
// Log lines, tab-separated: `ready pid time`, `start stream from next pid time`,
// `end stream from next pid time` (next: the index the call reached), `fail stream from pid time`.
// @ts-types="@types/pg"
import pg from "pg";
import { configure, getStreamSink } from "@logtape/logtape";
import { run, streamsSink } from "../../../mod.ts";
import { messageDbSource } from "../../../sources/messagedb.ts";
import { postgresCheckpoints } from "../../../checkpoints/postgres.ts";
import { postgresParkStore } from "../../../parked/postgres.ts";
import { dynamoParkStore } from "../../../parked/dynamo.ts";
import { client as dynamo } from "../../support/dynamo.ts";
import { lineWriter } from "../../faults/support/process.ts";

const env = (name: string): string => {
  const value = Deno.env.get(name);
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const category = env("PARK_CATEGORY");
const group = env("PARK_GROUP");
const schema = env("PARK_SCHEMA");
const fixed = Deno.env.get("PARK_FIXED") === "1";
const perEventMs = Number(Deno.env.get("PARK_HANDLER_MS") ?? 2);
const log = lineWriter(env("PARK_LOG"));
const pid = Deno.pid;
const now = () => (performance.timeOrigin + performance.now()).toFixed(3);

await configure({
  sinks: { stderr: getStreamSink(Deno.stderr.writable) },
  loggers: [
    { category: ["impel"], lowestLevel: "warning", sinks: ["stderr"] },
    { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["stderr"] },
  ],
});

const pool = new pg.Pool({
  connectionString: Deno.env.get("IMPEL_PG_URL") ??
    "postgres://postgres@127.0.0.1:5432/impel_test",
  max: 6,
});
pool.on("error", () => {});
const stop = new AbortController();
const sink = streamsSink({
  group,
  statsIntervalMs: 0,
  commitIntervalMs: 100,
  retry: { initialDelayMs: 5, maxDelayMs: 50 },
  failure: {
    kind: "park",
    maxAttempts: 3,
    store: Deno.env.get("PARK_STORE") === "dynamo"
      ? dynamoParkStore(dynamo, { tableName: env("PARK_TABLE") })
      : postgresParkStore(pool, { schema }),
    pollMs: 50,
  },
  handler: async (stream, events) => {
    const from = events[0].index;
    log.write(`start\t${stream}\t${from}\t${from + events.length}\t${pid}\t${now()}`);
    const bad = fixed ? -1 : events.findIndex((e) => (e.data as { poison?: boolean })?.poison);
    const done = bad < 0 ? events.length : bad;
    await new Promise((resolve) => setTimeout(resolve, perEventMs * Math.max(1, done)));
    if (bad === 0) {
      log.write(`fail\t${stream}\t${from}\t${pid}\t${now()}`);
      throw new Error(`poison event ${stream}@${from}`);
    }
    log.write(`end\t${stream}\t${from}\t${from + done}\t${pid}\t${now()}`);
    return from + done;
  },
});
const running = run(
  messageDbSource({
    client: pool,
    categories: [category],
    group,
    checkpoints: postgresCheckpoints(pool, { schema }),
    tailSleepMs: 20,
    signal: stop.signal,
  }),
  sink,
  { signal: stop.signal },
);
log.write(`ready\t${pid}\t${now()}`);
// A line of stats now and then, for a failing suite's post-mortem.
const statsTimer = setInterval(() => {
  const s = sink.stats();
  log.write(`stats\t${
    JSON.stringify({
      parked: s.parked,
      busy: s.busy,
      failing: s.failing,
      stuck: s.stuck,
      uncompleted: s.uncompletedBatches,
      tranches: s.tranches,
      counters: s.counters,
    }, (_k, v) => typeof v === "bigint" ? String(v) : v)
  }\t${pid}\t${now()}`);
}, 1000);
for (const signal of ["SIGTERM", "SIGINT"] as const) {
  Deno.addSignalListener(signal, () => stop.abort());
}
await running;
clearInterval(statsTimer);
log.write(`done\t${pid}\t${now()}`);
log.close();
await pool.end();
