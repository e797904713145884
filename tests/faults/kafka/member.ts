// One member of a Kafka reactor group for tests/faults/kafka.fault.ts: kafkaSource over its own
// kafkajs consumer, streamsSink with a handler that takes HANDLER_MS per call. Every line goes to
// LOG with one unbuffered write, so that what was written before a SIGKILL survives:
//
//   J <ms> <partitions,...>          a group join and its assignment
//   C <start ms> <end ms> <stream> <value,...>   a handler call and the message values it got
//   K <ms> <partition> <offset>      a commit the broker accepted
//   X <ms> <code> <message>          run() rejected (the process exits 3)
//
// SIGTERM stops it cleanly (drain, final commit, leave the group); exit 0.
// Env: BROKER, TOPIC, GROUP, LOG, HANDLER_MS (default 2), MAX_DOWN_MS (default 60000).
import { Kafka, logLevel } from "kafkajs";
import { run, streamsSink } from "../../../core/sink.ts";
import { kafkajsLogCreator, kafkaSource } from "../../../sources/kafka.ts";
import { lineWriter } from "../support/process.ts";

const env = (name: string, fallback?: string): string => {
  const value = Deno.env.get(name) ?? fallback;
  if (value === undefined) throw new Error(`${name} is not set`);
  return value;
};
const topic = env("TOPIC");
const handlerMs = Number(env("HANDLER_MS", "2"));
const log = lineWriter(env("LOG"));
const now = () => (performance.timeOrigin + performance.now()).toFixed(2);

const kafka = new Kafka({
  clientId: "impel-fault-member",
  brokers: [env("BROKER")],
  logCreator: kafkajsLogCreator(),
  logLevel: logLevel.NOTHING,
  retry: { retries: 5, initialRetryTime: 200, maxRetryTime: 2000 },
});
const consumer = kafka.consumer({
  groupId: env("GROUP"),
  sessionTimeout: 6000,
  rebalanceTimeout: 6000,
  heartbeatInterval: 300,
  maxWaitTimeInMs: 200,
  retry: { retries: 5, initialRetryTime: 200, maxRetryTime: 2000 },
});
consumer.on(consumer.events.GROUP_JOIN, (e) => {
  log.write(`J ${now()} ${(e.payload.memberAssignment[topic] ?? []).join(",")}`);
});
consumer.on(consumer.events.COMMIT_OFFSETS, (e) => {
  for (const t of e.payload.topics) {
    for (const p of t.partitions) log.write(`K ${now()} ${p.partition} ${p.offset}`);
  }
});

const ac = new AbortController();
Deno.addSignalListener("SIGTERM", () => ac.abort());
const decoder = new TextDecoder();
const sink = streamsSink({
  group: env("GROUP"),
  handler: async (stream, events) => {
    const start = now();
    if (handlerMs > 0) await new Promise((r) => setTimeout(r, handlerMs));
    const values = events.map((e) => decoder.decode(e.data as Uint8Array)).join(",");
    log.write(`C ${start} ${now()} ${stream} ${values}`);
  },
  maxConcurrentStreams: 64,
  commitIntervalMs: 200,
  stopTimeoutMs: 3000,
  statsIntervalMs: 0,
});
const source = kafkaSource({
  consumer,
  topics: [topic],
  signal: ac.signal,
  maxConsumerDownMs: Number(env("MAX_DOWN_MS", "60000")),
});
try {
  await run(source, sink, { signal: ac.signal });
  await consumer.disconnect();
  log.close();
  Deno.exit(0);
} catch (e) {
  log.write(
    `X ${now()} ${(e as { code?: string }).code ?? "?"} ${String(e).replaceAll("\n", " ")}`,
  );
  log.close();
  Deno.exit(3);
}
