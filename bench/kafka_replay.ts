/**
 * The Kafka source's and the scheduler's own cost per message, without the broker's noise: the
 * batches kafkajs fetched from a topic are captured once (its real message objects, views of its
 * fetch responses), then handed again in every round, fetch by fetch, to
 *
 * - raw: an `eachBatch` that counts messages (what bench/kafka.ts's raw path does after kafkajs
 *   decoded the fetch);
 * - each variant of `kafkaSource` (a module path; default this checkout's sources/kafka.ts)
 *   behind `streamsSink` with a counting handler, through a stand-in consumer that calls
 *   `eachBatch` like kafkajs (every partition of a fetch at once, the next fetch a macrotask after
 *   they all returned) and accepts commits at once.
 *
 * The rounds alternate the paths (their order rotated each round); the figures are medians of
 * process CPU per message. What a variant adds over raw is the work the real benchmark's
 * kafkaSource path does on top of kafkajs's fetch and decode.
 *
 *   deno run -A bench/kafka_replay.ts [--messages 500000] [--partitions 8] [--keys 10000]
 *     [--rounds 10] [--topic existing-topic] [--variants a.ts,b.ts] [--readAhead 16]
 *     [--readers also|only]   (also time each variant's record reader alone)
 *     [--sink 1]              (also time the sink alone, on batches built beforehand)
 *   bun bench/kafka_replay.ts [same options]
 */
import { loadavg } from "node:os";
import process from "node:process";
import { Kafka, logLevel, Partitioners } from "kafkajs";
import type { Batch, ObservableSource } from "../core/batch.ts";
import { createOwnership } from "../core/ownership.ts";
import { run, streamsSink } from "../core/sink.ts";
import { kafkajsLogCreator } from "../sinks/kafka.ts";
import type {
  KafkaConsumer,
  KafkaEachBatchPayload,
  KafkaIncomingMessage,
  KafkaSourceOptions,
  RecordReader,
  RecordReaderOptions,
} from "../sources/kafka.ts";

const args = new Map<string, string>();
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) args.set(argv[i].replace(/^--/, ""), argv[i + 1]);
const num = (name: string, fallback: number) => Number(args.get(name) ?? fallback);
const MESSAGES = num("messages", 500_000);
const PARTITIONS = num("partitions", 8);
const KEYS = num("keys", 10_000);
const ROUNDS = num("rounds", 10);
const READ_AHEAD = num("readAhead", 16);
const variants = (args.get("variants") ?? new URL("../sources/kafka.ts", import.meta.url).href)
  .split(",").map((v) => v.startsWith("file:") ? v : new URL(v, `file://${process.cwd()}/`).href);

const kafka = new Kafka({
  clientId: "impel-bench-replay",
  brokers: [process.env.KAFKA_BROKER ?? "127.0.0.1:9092"],
  logCreator: kafkajsLogCreator(),
  logLevel: logLevel.WARN,
});

interface Captured {
  readonly topic: string;
  readonly partition: number;
  readonly highWatermark: string;
  readonly messages: KafkaIncomingMessage[];
  readonly last: string;
}

async function fill(): Promise<string> {
  const topic = `replay-${crypto.randomUUID().slice(0, 8)}`;
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({
    topics: [{ topic, numPartitions: PARTITIONS }],
    waitForLeaders: true,
  });
  await admin.disconnect();
  const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
  await producer.connect();
  const pad = "x".repeat(80);
  for (let i = 0; i < MESSAGES; i += 5000) {
    const messages = [];
    for (let j = i; j < Math.min(MESSAGES, i + 5000); j++) {
      messages.push({ key: `Item-${j % KEYS}`, value: `{"n":${j},"pad":"${pad}"}` });
    }
    await producer.send({ topic, messages });
  }
  await producer.disconnect();
  console.log(`filled ${topic} with ${MESSAGES} messages (${PARTITIONS} partitions)`);
  return topic;
}

/** The batches of one pass over the topic, grouped by the fetch that brought them. */
async function capture(topic: string): Promise<Captured[][]> {
  const consumer = kafka.consumer({
    groupId: `replay-${crypto.randomUUID().slice(0, 8)}`,
    maxWaitTimeInMs: 100,
  });
  await consumer.connect();
  await consumer.subscribe({ topics: [topic], fromBeginning: true });
  const fetches: Captured[][] = [];
  let current: Captured[] | undefined;
  let count = 0;
  consumer.on(consumer.events.FETCH, () => (current = undefined));
  await new Promise<void>((resolve) => {
    consumer.run({
      autoCommit: false,
      eachBatch: ({ batch }) => {
        if (batch.messages.length === 0) return Promise.resolve();
        if (current === undefined) fetches.push(current = []);
        current.push({
          topic: batch.topic,
          partition: batch.partition,
          highWatermark: batch.highWatermark,
          messages: batch.messages as KafkaIncomingMessage[],
          last: batch.lastOffset(),
        });
        count += batch.messages.length;
        if (count >= MESSAGES) resolve();
        return Promise.resolve();
      },
    });
  });
  await consumer.disconnect();
  return fetches;
}

interface Timing {
  ms: number;
  cpuMs: number;
}

function stopwatch(): () => Timing {
  const wall = performance.now();
  const cpu = process.cpuUsage();
  return () => {
    const used = process.cpuUsage(cpu);
    return { ms: performance.now() - wall, cpuMs: (used.user + used.system) / 1000 };
  };
}

const macrotask = () => new Promise<void>((r) => setTimeout(r, 0));

const payload = (b: Captured): KafkaEachBatchPayload => ({
  batch: {
    topic: b.topic,
    partition: b.partition,
    highWatermark: b.highWatermark,
    messages: b.messages,
    lastOffset: () => b.last,
  },
  isStale: () => false,
  heartbeat: () => Promise.resolve(),
  isRunning: () => true,
});

async function rawRound(fetches: Captured[][]): Promise<Timing> {
  let count = 0;
  const eachBatch = ({ batch }: KafkaEachBatchPayload) => {
    count += batch.messages.length;
    return Promise.resolve();
  };
  const elapsed = stopwatch();
  for (const fetch of fetches) {
    await macrotask();
    await Promise.all(fetch.map((b) => eachBatch(payload(b))));
  }
  if (count < MESSAGES) throw new Error(`raw counted ${count}`);
  return elapsed();
}

/** A stand-in for a kafkajs consumer that replays `fetches` and accepts every commit at once. */
function replayConsumer(fetches: Captured[][]): KafkaConsumer {
  const events = {
    GROUP_JOIN: "join",
    CRASH: "crash",
    STOP: "stop",
    REBALANCING: "rebalancing",
    COMMIT_OFFSETS: "commit",
  };
  const listeners = new Map<string, Array<(e: { payload: unknown }) => void>>();
  const emit = (name: string, payload: unknown) => {
    for (const l of listeners.get(name) ?? []) l({ payload });
  };
  let stopped = false;
  const topic = fetches[0][0].topic;
  return {
    events,
    on(name, listener) {
      const ls = listeners.get(name) ?? [];
      ls.push(listener);
      listeners.set(name, ls);
      return () => ls.splice(ls.indexOf(listener), 1);
    },
    connect: () => Promise.resolve(),
    subscribe: () => Promise.resolve(),
    run(config) {
      const partitions = [...new Set(fetches.flat().map((b) => b.partition))];
      emit(events.GROUP_JOIN, {
        groupId: "g",
        memberId: "m",
        memberAssignment: { [topic]: partitions },
      });
      (async () => {
        for (const fetch of fetches) {
          await macrotask();
          if (stopped) return;
          await Promise.all(fetch.map((b) => config.eachBatch!(payload(b))));
        }
      })();
      return Promise.resolve();
    },
    commitOffsets(offsets) {
      return Promise.resolve().then(() =>
        emit(events.COMMIT_OFFSETS, {
          topics: [{
            topic,
            partitions: offsets.map((o) => ({ partition: o.partition, offset: o.offset })),
          }],
        })
      );
    },
    pause() {
      stopped = true;
    },
  };
}

type SourceFactory = (options: KafkaSourceOptions) => ObservableSource;
type ReaderFactory = (options: RecordReaderOptions) => RecordReader;

/**
 * The sink alone: the batches the source would emit (built once by the first variant's reader,
 * 1000 messages each, with an ownership per partition like the source's) fed to `streamsSink`
 * through a plain pull stream.
 */
function sinkRound(batches: Batch[]): Promise<Timing> {
  let count = 0, timing: Timing | undefined;
  let done!: () => void;
  const finished = new Promise<void>((r) => (done = r));
  const expected = batches.reduce((n, b) => n + b.items.length, 0);
  const sink = streamsSink({
    handler: (_stream, events) => {
      count += events.length;
      if (count >= expected && timing === undefined) {
        timing = elapsed();
        done();
      }
    },
    maxConcurrentStreams: 64,
    maxReadAhead: READ_AHEAD,
    statsIntervalMs: 0,
  });
  const ownerships = new Map<string, ReturnType<typeof createOwnership>>();
  let i = 0;
  const source = new ReadableStream<Batch>({
    pull(c) {
      if (i === batches.length) return;
      const b = batches[i++];
      let o = ownerships.get(b.tranche);
      if (o === undefined) ownerships.set(b.tranche, o = createOwnership(b.tranche));
      c.enqueue({ ...b, ownership: o.ownership });
    },
  }, { highWaterMark: 0 });
  const ac = new AbortController();
  const elapsed = stopwatch();
  const running = run(source, sink, { signal: ac.signal });
  return finished.then(() => {
    ac.abort();
    return running;
  }).then(() => timing!);
}

function prebuilt(fetches: Captured[][], createRecordReader: ReaderFactory): Batch[] {
  const reader = createRecordReader({ defaultCategory: "Kafka" });
  const batches: Batch[] = [];
  for (const fetch of fetches) {
    for (const b of fetch) {
      for (let from = 0; from < b.messages.length; from += 1000) {
        const chunk = b.messages.slice(from, from + 1000);
        batches.push({
          tranche: `${b.topic}/${b.partition}`,
          items: reader.items(b.topic, b.partition, 1, chunk),
          position: BigInt(chunk.at(-1)!.offset) + 1n,
          isTail: false,
          commit: () => Promise.resolve(),
          gapsAreFinal: true,
        });
      }
    }
  }
  return batches;
}

/** The record reader alone: the messages of each batch (chunks of 1000) turned into items. */
async function readerRound(
  fetches: Captured[][],
  createRecordReader: ReaderFactory,
): Promise<Timing> {
  const reader = createRecordReader({ defaultCategory: "Kafka" });
  let count = 0;
  const elapsed = stopwatch();
  for (const fetch of fetches) {
    await macrotask();
    for (const b of fetch) {
      for (let from = 0; from < b.messages.length; from += 1000) {
        count += reader.items(b.topic, b.partition, 1, b.messages.slice(from, from + 1000)).length;
      }
    }
  }
  if (count < MESSAGES) throw new Error(`reader made ${count} items`);
  return elapsed();
}

async function impelRound(fetches: Captured[][], kafkaSource: SourceFactory): Promise<Timing> {
  let count = 0, timing: Timing | undefined;
  let done!: () => void;
  const finished = new Promise<void>((r) => (done = r));
  const sink = streamsSink({
    handler: (_stream, events) => {
      count += events.length;
      if (count >= MESSAGES && timing === undefined) {
        timing = elapsed();
        done();
      }
    },
    maxConcurrentStreams: 64,
    maxReadAhead: READ_AHEAD,
    statsIntervalMs: 0,
  });
  const ac = new AbortController();
  const consumer = replayConsumer(fetches);
  const elapsed = stopwatch();
  const running = run(
    kafkaSource({ consumer, topics: [fetches[0][0].topic], signal: ac.signal }),
    sink,
    {
      signal: ac.signal,
    },
  );
  await finished;
  ac.abort();
  await running;
  return timing!;
}

const load = () => loadavg().map((x) => x.toFixed(1)).join(" ");
const runtime = "Bun" in globalThis
  ? `bun ${process.versions.bun}`
  : `deno ${process.versions.deno}`;

console.log(`${runtime}; load ${load()}`);
const topic = args.get("topic") ?? await fill();
const fetches = await capture(topic);
const total = fetches.flat().reduce((n, b) => n + b.messages.length, 0);
console.log(`captured ${total} messages in ${fetches.length} fetches of ${topic}`);
const sources: Array<{ name: string; make: SourceFactory; reader: ReaderFactory }> = [];
for (const v of variants) {
  const module = await import(v);
  sources.push({
    name: v.replace(/^.*\/([^/]+\/[^/]+\/[^/]+)$/, "$1"),
    make: module.kafkaSource,
    reader: module.createRecordReader,
  });
}
const batches = args.has("sink") ? prebuilt(fetches, sources[0].reader) : [];
const paths: Array<{ name: string; round: () => Promise<Timing> }> = [
  { name: "raw", round: () => rawRound(fetches) },
  ...(args.get("readers") === "only"
    ? []
    : sources.map((s) => ({ name: s.name, round: () => impelRound(fetches, s.make) }))),
  ...(args.has("readers")
    ? sources.map((s) => ({
      name: `reader ${s.name}`,
      round: () => readerRound(fetches, s.reader),
    }))
    : []),
  ...(args.has("sink") ? [{ name: "sink alone", round: () => sinkRound(batches) }] : []),
];
const results = new Map(paths.map((p) => [p.name, [] as Timing[]]));
// One untimed pass of each, so that every path runs optimised code when timed.
for (const p of paths) await p.round();
for (let round = 0; round < ROUNDS; round++) {
  const order = paths.map((_, i) => paths[(i + round) % paths.length]);
  const line: string[] = [];
  for (const p of order) {
    const t = await p.round();
    results.get(p.name)!.push(t);
    line.push(`${p.name} ${Math.round(t.ms)} ms / ${Math.round(t.cpuMs)} cpu`);
  }
  console.log(`  round ${round + 1}: ${line.join(", ")}`);
}
const us = (ts: Timing[], f: (t: Timing) => number, q = 0.5) =>
  [...ts.map(f)].sort((a, b) => a - b)[Math.floor((ts.length - 1) * q)] / MESSAGES * 1000;
const rawCpu = us(results.get("raw")!, (t) => t.cpuMs);
// Other jobs on the machine only ever add time: the lowest quartile of CPU per message shows a
// path's own cost more steadily than the median, which is given too.
for (const [name, ts] of results) {
  const cpu = us(ts, (t) => t.cpuMs);
  console.log(
    `${name}: wall ${us(ts, (t) => t.ms).toFixed(3)} µs/msg, CPU median ${cpu.toFixed(3)}, ` +
      `lowest quartile ${us(ts, (t) => t.cpuMs, 0.25).toFixed(3)}, least ${
        us(ts, (t) => t.cpuMs, 0).toFixed(3)
      } µs/msg` + (name === "raw" ? "" : `, median over raw ${(cpu - rawCpu).toFixed(3)} µs/msg`),
  );
}
console.log(`load ${load()}`);
