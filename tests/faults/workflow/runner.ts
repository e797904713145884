// The process tests/faults/workflow.fault.ts kills over and over: the fulfilment saga's runner
// and the simulated payment gateway, two pipelines over MessageDB (messageDbSource, Postgres
// checkpoints, all defaults but a 50 ms tail sleep), on a clock that runs SPEED times faster
// than real time so that the 15-minute payment deadline passes in seconds. Every send handler
// logs its start and its end with one unbuffered line each, and waits a little on both sides of
// its effect, so that kills land between a send's effect and its record; the runtime's timer
// logs (scheduled, fired) go to the same file.
//
// Environment: IMPEL_PG_URL, FAULT_GROUP (prefix of the consumer groups), FAULT_SCHEMA
// (checkpoint table), FAULT_TIMERS (the timers' category), FAULT_EPOCH and FAULT_SPEED (the
// clock: epoch + (now − epoch) × speed), FAULT_LOG; FAULT_FINAL=1 to stop cleanly on SIGTERM.
//
// Log lines, tab-separated: `ready pid time`, `send id type pid time`, `sent id pid time`,
// `timer scheduled|fired|stale id pid time`, `stopping pid time`, `stopped runner|gateway pid
// time`, `done pid time`.
// @ts-types="@types/pg"
import pg from "pg";
import { configure, getStreamSink, type LogRecord } from "@logtape/logtape";
import { postgresCheckpoints } from "../../../checkpoints/postgres.ts";
import { run, stopOnSignals, streamsSink } from "../../../mod.ts";
import { messageDbSource } from "../../../sources/messagedb.ts";
import { messageDbStore } from "../../../stores/messagedb.ts";
import {
  type Clock,
  type SendHandlers,
  startWorkflow,
  workflowCategories,
} from "../../../core/workflow.ts";
import {
  fulfilment,
  fulfilmentHandlers,
  fulfilmentServices,
} from "../../../examples/fulfilment/fulfilment.ts";
import { gatewayHandler } from "../../../examples/fulfilment/gateway.ts";
import { PAYMENT } from "../../../examples/fulfilment/payment.ts";
import { lineWriter } from "../support/process.ts";
import { answerFor } from "./orders.ts";

const env = (name: string): string => {
  const value = Deno.env.get(name);
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const group = env("FAULT_GROUP");
const schema = env("FAULT_SCHEMA");
const epoch = Number(env("FAULT_EPOCH"));
const speed = Number(env("FAULT_SPEED"));
const final = Deno.env.get("FAULT_FINAL") === "1";
const log = lineWriter(env("FAULT_LOG"));
const pid = Deno.pid;
const now = () => (performance.timeOrigin + performance.now()).toFixed(3);

// Every process agrees on the fast clock, so a due time set by one is due for the next.
const clock: Clock = {
  now: () => epoch + (Date.now() - epoch) * speed,
  sleep: (ms, signal) =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms / speed);
      signal?.addEventListener("abort", () => {
        clearTimeout(timer);
        resolve();
      }, { once: true });
    }),
};

const timerLine = (record: LogRecord) => {
  const template = record.rawMessage as string;
  const id = String(record.properties.timer ?? record.properties.id);
  if (template.includes("scheduled")) return `timer\tscheduled\t${id}`;
  if (template.includes("fired") && String(record.properties.outcome).startsWith("recorded")) {
    return `timer\tfired\t${id}`;
  }
  if (template.includes("timer")) return `timer\tstale\t${id}`;
  return undefined;
};
await configure({
  sinks: {
    stderr: getStreamSink(Deno.stderr.writable),
    timers: (record) => {
      const line = timerLine(record);
      if (line !== undefined) log.write(`${line}\t${pid}\t${now()}`);
    },
  },
  loggers: [
    { category: ["impel", "timers"], lowestLevel: "debug", sinks: ["timers"] },
    { category: ["impel", "workflow"], lowestLevel: "debug", sinks: ["timers"] },
    { category: ["impel"], lowestLevel: "warning", sinks: ["stderr"] },
    { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["stderr"] },
  ],
});

const pool = new pg.Pool({
  connectionString: Deno.env.get("IMPEL_PG_URL") ??
    "postgres://postgres@127.0.0.1:5432/impel_test",
  max: 8,
  options: "-c search_path=message_store,public",
});
pool.on("error", () => {});
const store = messageDbStore(pool);
const checkpoints = postgresCheckpoints(pool, { schema });
const services = fulfilmentServices(store);
const stopping = final ? stopOnSignals() : undefined;
const stop = new AbortController();
stopping?.signal.addEventListener("abort", () => {
  log.write(`stopping\t${pid}\t${now()}`);
  stop.abort();
}, { once: true });

const pause = () => new Promise((resolve) => setTimeout(resolve, Math.random() * 20));
const base = fulfilmentHandlers(services) as unknown as Record<
  string,
  (send: { id: string }, context: unknown) => Promise<unknown>
>;
const handlers = Object.fromEntries(
  Object.entries(base).map((
    [type, handler],
  ) => [type, async (send: { id: string }, context: unknown) => {
    log.write(`send\t${send.id}\t${type}\t${pid}\t${now()}`);
    await pause();
    const reply = await handler(send, context);
    await pause(); // a kill here: the effect is done, its delivery not recorded
    log.write(`sent\t${send.id}\t${pid}\t${now()}`);
    return reply;
  }]),
) as unknown as SendHandlers<never, never>;

const source = (categories: string[], name: string) =>
  messageDbSource({
    client: pool,
    categories,
    group: `${group}-${name}`,
    checkpoints,
    tailSleepMs: 50,
    signal: stop.signal,
  });
const runner = startWorkflow(fulfilment, {
  store,
  clock,
  source: source(workflowCategories(fulfilment), "runner"),
  handlers: handlers as never,
  timers: { category: env("FAULT_TIMERS") },
  sink: { group: `${group}-runner`, maxConcurrentStreams: 32 },
  signal: stop.signal,
});
const gateway = streamsSink({
  group: `${group}-gateway`,
  statsIntervalMs: 0,
  handler: gatewayHandler(services.payment, answerFor),
});
const gatewayRun = run(source([PAYMENT], "gateway"), gateway, { signal: stop.signal });
log.write(`ready\t${pid}\t${now()}`);
await Promise.all([
  runner.running.then(() => log.write(`stopped\trunner\t${pid}\t${now()}`)),
  gatewayRun.then(() => log.write(`stopped\tgateway\t${pid}\t${now()}`)),
]);
log.write(`done\t${pid}\t${now()}`);
log.close();
await pool.end();
