// The reactor that tests/faults/dynamo.fault.ts kills over and over: a dynamoSource over the index
// (with event bodies read from the events table) and DynamoDB checkpoints, into a streamsSink
// whose handler takes HANDLER_MS per event and logs each call's start and end with one
// unbuffered line each, in the format of tests/faults/messagedb/reactor.ts (so that its analysis
// applies): `ready pid time`, `start stream from next pid time`, `end stream from next pid time`,
// `done pid time`. Only the public API, default settings.
//
// Env: DYNAMODB_ENDPOINT, EVENT_TABLE, INDEX_TABLE, CHECKPOINT_TABLE, FAULT_GROUP, FAULT_LOG,
// HANDLER_MS (default 20); FAULT_FINAL=1 runs until every partition is handled to its tail and
// stops (exit 0). SIGTERM stops it cleanly (exit 0). If run() rejects, the error goes to stderr
// and the exit code is 3.
import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { configure, getStreamSink } from "@logtape/logtape";
import { run, streamsSink } from "../../../mod.ts";
import { dynamoSource } from "../../../sources/dynamo.ts";
import { dynamoCheckpoints } from "../../../checkpoints/dynamo.ts";
import { lineWriter } from "../support/process.ts";

const env = (name: string, fallback?: string): string => {
  const value = Deno.env.get(name) ?? fallback;
  if (value === undefined) throw new Error(`${name} is not set`);
  return value;
};
const group = env("FAULT_GROUP");
const handlerMs = Number(env("HANDLER_MS", "20"));
const final = Deno.env.get("FAULT_FINAL") === "1";
const log = lineWriter(env("FAULT_LOG"));
const pid = Deno.pid;
const now = () => (performance.timeOrigin + performance.now()).toFixed(3);

// Warnings and errors (retried reads, failed commits) go to stderr, which the suite keeps.
await configure({
  sinks: { stderr: getStreamSink(Deno.stderr.writable) },
  loggers: [
    { category: ["impel"], lowestLevel: "warning", sinks: ["stderr"] },
    { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["stderr"] },
  ],
});

const client = new DynamoDBClient({
  endpoint: env("DYNAMODB_ENDPOINT"),
  region: "local",
  credentials: { accessKeyId: "local", secretAccessKey: "local" },
});
const stop = new AbortController();
Deno.addSignalListener("SIGTERM", () => {
  stop.abort();
  // A stop that hangs says where it is (the suite gives it 30 s, then kills it).
  const stats = () => JSON.stringify(sink.stats(), (_, v) => typeof v === "bigint" ? `${v}` : v);
  Deno.unrefTimer(setTimeout(() => console.error(`stopping for 10 s: ${stats()}`), 10_000));
});
const sink = streamsSink({
  group,
  statsIntervalMs: 0,
  handler: async (stream, events) => {
    const from = events[0].index, next = events[events.length - 1].index + 1;
    log.write(`start\t${stream}\t${from}\t${next}\t${pid}\t${now()}`);
    await new Promise((resolve) => setTimeout(resolve, handlerMs * events.length));
    log.write(`end\t${stream}\t${from}\t${next}\t${pid}\t${now()}`);
  },
});
const running = run(
  dynamoSource({
    client,
    indexTable: env("INDEX_TABLE"),
    eventTable: env("EVENT_TABLE"),
    group,
    checkpoints: dynamoCheckpoints(client, { tableName: env("CHECKPOINT_TABLE") }),
    signal: stop.signal,
  }),
  sink,
  { signal: stop.signal },
);
log.write(`ready\t${pid}\t${now()}`);
try {
  if (final) {
    await Promise.race([sink.monitor.awaitCompletion({ tail: true }), running]);
    stop.abort();
  }
  await running;
} catch (e) {
  console.error(`run() rejected: ${(e as Error)?.stack ?? e}`);
  log.close();
  Deno.exit(3);
}
log.write(`done\t${pid}\t${now()}`);
log.close();
Deno.exit(0);
