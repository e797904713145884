// One member of a MessageDB consumer group with leases, as a real process: messageDbSource with
// postgresLeases and fenced postgresCheckpoints over a pg.Pool, into a streamsSink whose handler
// takes HANDLER_MS per call. It logs, one unbuffered line each (so the log holds everything up to
// a SIGKILL), every call's start and end, every lease it acquires or lets go of, and every
// commit with its fence and outcome. SIGTERM stops it cleanly (releasing its slots), exit 0.
//
// Environment: IMPEL_PG_URL, LEASE_CATEGORY, LEASE_SCHEMA (lease and checkpoint tables),
// LEASE_LOG, LEASE_MEMBER, and optionally LEASE_SLOTS (12), LEASE_DURATION_MS (2000),
// LEASE_HEARTBEAT_MS (300), LEASE_HANDOVER_MS (1000), HANDLER_MS (10), STOP_TIMEOUT_MS (400),
// COMMIT_INTERVAL_MS (200).
//
// Lines, tab-separated, times in ms since the epoch (fractional):
//   ready member pid t
//   start stream from next t          end stream from next t
//   acquired unit generation t        letgo unit generation why t
//   commit tranche position generation started ended ok|refused|failed
//   alive t (every 500 ms: a gap shows a blocked event loop)
//   sigterm t, ran t (the pipeline stopped), released t (the slots released), done t
// @ts-types="@types/pg"
import pg from "pg";
import { configure, type LogRecord } from "@logtape/logtape";
import { type CheckpointStore, run, StaleCommitError, streamsSink } from "../../../mod.ts";
import { messageDbSource } from "../../../sources/messagedb.ts";
import { postgresCheckpoints } from "../../../checkpoints/postgres.ts";
import { postgresLeases } from "../../../leases/postgres.ts";
import { lineWriter } from "../support/process.ts";

const env = (name: string, fallback?: string): string => {
  const value = Deno.env.get(name) ?? fallback;
  if (value === undefined) throw new Error(`${name} is not set`);
  return value;
};
const category = env("LEASE_CATEGORY");
const schema = env("LEASE_SCHEMA");
const member = env("LEASE_MEMBER");
const handlerMs = Number(env("HANDLER_MS", "10"));
const log = lineWriter(env("LEASE_LOG"));
const now = () => (performance.timeOrigin + performance.now()).toFixed(3);

await configure({
  sinks: {
    leases(record: LogRecord) {
      const p = record.properties as Record<string, unknown>;
      const text = String(record.rawMessage);
      if (text.includes(" acquired ")) {
        log.write(`acquired\t${p.unit}\t${p.generation}\t${now()}`);
      } else if (text.includes(" lost ") || text.includes(" lets go of ")) {
        log.write(`letgo\t${p.unit}\t-\t${String(p.reason).replaceAll("\t", " ")}\t${now()}`);
      }
      if (record.level === "warning" || record.level === "error") {
        console.error(`[${record.level}] ${record.message.join("")}`);
      }
    },
    stderr(record: LogRecord) {
      console.error(`[${record.level}] ${record.category.join(".")}: ${record.message.join("")}`);
    },
  },
  loggers: [
    { category: ["impel", "leases"], lowestLevel: "info", sinks: ["leases"] },
    { category: ["impel", "messagedb"], lowestLevel: "warning", sinks: ["stderr"] },
    { category: ["impel", "source"], lowestLevel: "warning", sinks: ["stderr"] },
    { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["stderr"] },
  ],
});

const pool = new pg.Pool({
  connectionString: env("IMPEL_PG_URL", "postgres://postgres@127.0.0.1:5432/impel_test"),
  max: 6,
});
pool.on("error", () => {});
const store = postgresCheckpoints(pool, { schema, leases: { schema } });
const checkpoints: CheckpointStore = {
  ...store,
  async commit(key, position, fence) {
    const started = now();
    const line = (outcome: string) =>
      log.write(
        `commit\t${key.tranche}\t${position}\t${
          fence?.generation ?? "-"
        }\t${started}\t${now()}\t${outcome}`,
      );
    try {
      await store.commit(key, position, fence);
      line("ok");
    } catch (error) {
      line(error instanceof StaleCommitError ? "refused" : "failed");
      throw error;
    }
  },
};

const stop = new AbortController();
Deno.addSignalListener("SIGTERM", () => {
  log.write(`sigterm\t${now()}`);
  stop.abort();
});
const source = messageDbSource({
  client: pool,
  categories: [category],
  group: "leased",
  checkpoints,
  leases: {
    store: postgresLeases(pool, { schema }),
    member,
    slots: Number(env("LEASE_SLOTS", "12")),
    durationMs: Number(env("LEASE_DURATION_MS", "2000")),
    heartbeatMs: Number(env("LEASE_HEARTBEAT_MS", "300")),
    handoverMs: Number(env("LEASE_HANDOVER_MS", "1000")),
    stopTimeoutMs: Number(env("STOP_TIMEOUT_MS", "400")),
  },
  tailSleepMs: 100,
  signal: stop.signal,
});
const sink = streamsSink({
  group: "leased",
  statsIntervalMs: 0,
  commitIntervalMs: Number(env("COMMIT_INTERVAL_MS", "200")),
  stopTimeoutMs: Number(env("STOP_TIMEOUT_MS", "400")),
  maxConcurrentStreams: 16,
  handler: async (stream, events) => {
    const from = events[0].index, next = events[events.length - 1].index + 1;
    log.write(`start\t${stream}\t${from}\t${next}\t${now()}`);
    await new Promise((resolve) => setTimeout(resolve, handlerMs));
    log.write(`end\t${stream}\t${from}\t${next}\t${now()}`);
  },
});
const running = run(source, sink, { signal: stop.signal });
const alive = setInterval(() => log.write(`alive\t${now()}`), 500);
log.write(`ready\t${member}\t${Deno.pid}\t${now()}`);
await running;
log.write(`ran\t${now()}`);
await source.released;
log.write(`released\t${now()}`);
clearInterval(alive);
log.write(`done\t${now()}`);
log.close();
await pool.end();
