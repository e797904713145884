// The reactor that tests/faults/messagedb.fault.ts kills over and over: a messageDbSource over a
// pg.Pool with Postgres checkpoints, into a streamsSink whose handler takes 50 ms per event and
// logs each call's start and end to a per-run log, one unbuffered line each, so that the log
// holds everything that happened before the SIGKILL. Only the public API, default settings.
//
// Environment: IMPEL_PG_URL, FAULT_CATEGORY, FAULT_GROUP, FAULT_SCHEMA (checkpoint table),
// FAULT_LOG (the log file), FAULT_FINAL=1 to run until the category is handled to its tail and
// then stop cleanly (exit 0) instead of running until killed.
//
// Log lines, tab-separated: `ready pid time`, `start stream from next pid time`,
// `end stream from next pid time`, `done pid time`; time is ms since the epoch, fractional.
// @ts-types="@types/pg"
import pg from "pg";
import { configure, getStreamSink } from "@logtape/logtape";
import { run, streamsSink } from "../../../mod.ts";
import { messageDbSource } from "../../../sources/messagedb.ts";
import { postgresCheckpoints } from "../../../checkpoints/postgres.ts";
import { lineWriter } from "../support/process.ts";

const env = (name: string): string => {
  const value = Deno.env.get(name);
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const category = env("FAULT_CATEGORY");
const group = env("FAULT_GROUP");
const schema = env("FAULT_SCHEMA");
const final = Deno.env.get("FAULT_FINAL") === "1";
const log = lineWriter(env("FAULT_LOG"));
const pid = Deno.pid;
const now = () => (performance.timeOrigin + performance.now()).toFixed(3);

// Warnings and errors (failed commits, retried reads) go to stderr, which the suite keeps.
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
  max: 4,
});
pool.on("error", () => {});
const checkpoints = postgresCheckpoints(pool, { schema });
const stop = new AbortController();
const sink = streamsSink({
  group,
  statsIntervalMs: 0,
  handler: async (stream, events) => {
    const from = events[0].index, next = events[events.length - 1].index + 1;
    log.write(`start\t${stream}\t${from}\t${next}\t${pid}\t${now()}`);
    await new Promise((resolve) => setTimeout(resolve, 50 * events.length));
    log.write(`end\t${stream}\t${from}\t${next}\t${pid}\t${now()}`);
  },
});
const running = run(
  messageDbSource({
    client: pool,
    categories: [category],
    group,
    checkpoints,
    signal: stop.signal,
  }),
  sink,
  { signal: stop.signal },
);
log.write(`ready\t${pid}\t${now()}`);
if (final) {
  await Promise.race([sink.monitor.awaitCompletion({ tail: true }), running]);
  stop.abort();
}
await running;
log.write(`done\t${pid}\t${now()}`);
log.close();
await pool.end();
