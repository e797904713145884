/**
 * Kafka benchmarks against the broker of `tools/kafka.sh start`, each impel path next to raw
 * kafkajs on the same topic in the same process:
 *
 * - consume: N messages over P partitions, raw `eachBatch` (counting, default auto-commit) vs
 *   `kafkaSource` → `streamsSink` with a counting handler; timed from the consumer's group join
 *   (fetching starts right after it) to the last message handled, so joins are left out of both.
 *   The commit lag (messages handled but not yet accepted as committed by the broker) is sampled
 *   every 50 ms during the impel rounds. A third path in each round, the floor, is raw
 *   `eachBatch` plus the least per-key work (key decode, Map lookup, an event and a handler call
 *   per message), to show how much of the gap any per-message handling costs.
 * - produce: the same messages sent by a raw producer (sequential `send`s of 1000) vs the ordered
 *   sink (`kafkaProducerHandler` behind `streamsSink`, one event per message so both send the
 *   same messages), plus the sink with its default packing of several events per message.
 *
 *   deno run -A bench/kafka.ts [--messages 500000] [--partitions 8] [--keys 10000]
 *     [--produce 200000] [--rounds 5] [--skip produce|consume] [--floor 0] [--topic filled]
 *     [--variants path/a.ts,path/b.ts]
 *   bun bench/kafka.ts [same options]
 *
 * With `--variants`, each round runs every given copy of sources/kafka.ts (a module exporting
 * `kafkaSource`, e.g. the code before a change) after the raw path, in an order rotated each
 * round, so that two versions of the source are compared in one process on one topic.
 */
import { loadavg } from "node:os";
import process from "node:process";
import { Kafka, logLevel, type Message, Partitioners, type Producer } from "kafkajs";
import type { Batch } from "../core/batch.ts";
import type { StreamEvent } from "../core/event.ts";
import { run, streamsSink } from "../core/sink.ts";
import { kafkajsLogCreator, kafkaProducerHandler, renderSpanMessages } from "../sinks/kafka.ts";
import { kafkaSource } from "../sources/kafka.ts";

const args = new Map<string, string>();
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) args.set(argv[i].replace(/^--/, ""), argv[i + 1]);
const num = (name: string, fallback: number) => Number(args.get(name) ?? fallback);
const MESSAGES = num("messages", 500_000);
const PARTITIONS = num("partitions", 8);
const KEYS = num("keys", 10_000);
const PRODUCE = num("produce", 200_000);
const ROUNDS = num("rounds", 5);
const skip = args.get("skip");
const withFloor = num("floor", 1) !== 0;
type SourceFactory = typeof kafkaSource;
const variants: Array<{ name: string; kafkaSource: SourceFactory }> = [];
for (const v of args.get("variants")?.split(",") ?? []) {
  const url = new URL(v, `file://${process.cwd()}/`).href;
  variants.push({ name: v, kafkaSource: (await import(url)).kafkaSource });
}
if (variants.length === 0) variants.push({ name: "kafkaSource → scheduler", kafkaSource });

const kafka = new Kafka({
  clientId: "impel-bench",
  brokers: [process.env.KAFKA_BROKER ?? "127.0.0.1:9092"],
  logCreator: kafkajsLogCreator(),
  logLevel: logLevel.WARN,
});
const newProducer = () => kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
const consumerConfig = (groupId: string) => ({
  groupId,
  sessionTimeout: 10_000,
  heartbeatInterval: 1000,
  maxWaitTimeInMs: 100,
});
const unique = (prefix: string) => `${prefix}-${crypto.randomUUID().slice(0, 8)}`;
const pad = "x".repeat(80);
const rate = (n: number, ms: number) => `${Math.round(n / ms * 1000).toLocaleString("en")}/s`;

async function withAdmin<T>(fn: (admin: ReturnType<typeof kafka.admin>) => Promise<T>): Promise<T> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    return await fn(admin);
  } finally {
    await admin.disconnect();
  }
}

async function createTopic(partitions: number): Promise<string> {
  const topic = unique("bench");
  await withAdmin((a) =>
    a.createTopics({ topics: [{ topic, numPartitions: partitions }], waitForLeaders: true })
  );
  return topic;
}

/** Sends `messages` in sequential `send`s of `chunk` messages. */
async function rawProduce(
  producer: Producer,
  topic: string,
  messages: Message[],
  chunk = 1000,
): Promise<Timing> {
  const elapsed = stopwatch();
  for (let i = 0; i < messages.length; i += chunk) {
    await producer.send({ topic, messages: messages.slice(i, i + chunk) });
  }
  return elapsed();
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** Wall-clock and CPU time of one run (CPU of this process: the JS thread plus runtime threads). */
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

/**
 * Both sides over the rounds: best and median throughput, the median of the per-round ratios
 * (impel throughput / raw throughput; rounds run back to back, so each pair shares conditions)
 * and the ratio of median CPU per message, which other load on the machine disturbs least.
 */
function summary(
  what: string,
  rawName: string,
  raw: Timing[],
  impelName: string,
  impel: Timing[],
  n: number,
): string {
  const best = (ts: Timing[]) => Math.min(...ts.map((t) => t.ms));
  const med = (ts: Timing[]) => median(ts.map((t) => t.ms));
  const cpu = (ts: Timing[]) => median(ts.map((t) => t.cpuMs)) / n * 1000;
  const pairs = median(raw.map((r, i) => r.ms / impel[i].ms));
  return `${what}: ${rawName} best ${rate(n, best(raw))}, median ${rate(n, med(raw))}, CPU ${
    cpu(raw).toFixed(2)
  } µs/msg; ` +
    `${impelName} best ${rate(n, best(impel))}, median ${rate(n, med(impel))}, CPU ${
      cpu(impel).toFixed(2)
    } µs/msg; ` +
    `ratio: per-round median ${pairs.toFixed(2)}×, best ${
      (best(raw) / best(impel)).toFixed(2)
    }×, CPU ${(cpu(raw) / cpu(impel)).toFixed(2)}×`;
}

// ---------------------------------------------------------------------------------------------
// Consume

/**
 * Raw `eachBatch` that counts messages; with `floor`, it also does the least any per-key
 * processing does, as the floor of the impel path: per message the key decoded to its stream
 * name, that stream's state looked up in a Map, an event built and a handler called with it.
 */
async function rawConsume(topic: string, total: number, floor = false): Promise<Timing> {
  const consumer = kafka.consumer(consumerConfig(unique(floor ? "floor" : "raw")));
  await consumer.connect();
  await consumer.subscribe({ topics: [topic], fromBeginning: true });
  let count = 0, elapsed = () => ({ ms: 0, cpuMs: 0 }), timing: Timing | undefined;
  consumer.on(consumer.events.GROUP_JOIN, () => (elapsed = stopwatch()));
  const decoder = new TextDecoder();
  const streams = new Map<string, { next: number }>();
  let calls = 0;
  const handler = (_stream: string, events: StreamEvent[]) => void (calls += events.length);
  await new Promise<void>((resolve) => {
    consumer.run({
      eachBatch: ({ batch }) => {
        if (floor) {
          const time = new Date(0);
          for (const m of batch.messages) {
            const stream = decoder.decode(m.key!);
            let state = streams.get(stream);
            if (state === undefined) streams.set(stream, state = { next: 0 });
            const event = {
              index: state.next++,
              type: batch.topic,
              data: m.value,
              meta: null,
              id: m.offset,
              time,
              size: m.value?.byteLength ?? 0,
            };
            handler(stream, [event]);
          }
        }
        count += batch.messages.length;
        if (count >= total && timing === undefined) {
          timing = elapsed();
          resolve();
        }
        return Promise.resolve();
      },
    });
  });
  await consumer.disconnect();
  return timing!;
}

interface ImpelRound extends Timing {
  calls: number;
  /** Messages handled but not yet accepted by the broker as committed, sampled every 50 ms. */
  lag: number[];
}

async function impelConsume(
  topic: string,
  total: number,
  source: SourceFactory = kafkaSource,
): Promise<ImpelRound> {
  const consumer = kafka.consumer(consumerConfig(unique("impel")));
  let count = 0, calls = 0, elapsed = () => ({ ms: 0, cpuMs: 0 }), timing: Timing | undefined;
  consumer.on(consumer.events.GROUP_JOIN, () => (elapsed = stopwatch()));
  // On a fresh group over a fresh topic an accepted offset is the number of messages before it.
  const accepted = new Map<number, number>();
  consumer.on(consumer.events.COMMIT_OFFSETS, (e) => {
    for (const t of e.payload.topics) {
      for (const p of t.partitions) accepted.set(p.partition, Number(p.offset));
    }
  });
  const lag: number[] = [];
  const sampler = setInterval(() => {
    if (count === 0 || timing !== undefined) return;
    let committed = 0;
    for (const n of accepted.values()) committed += n;
    lag.push(count - committed);
  }, 50);
  let done!: () => void;
  const finished = new Promise<void>((r) => (done = r));
  const sink = streamsSink({
    handler: (_stream, events) => {
      calls++;
      count += events.length;
      if (count >= total && timing === undefined) {
        timing = elapsed();
        done();
      }
    },
    maxConcurrentStreams: 64,
    maxReadAhead: num("readAhead", 16),
    statsIntervalMs: 0,
  });
  const ac = new AbortController();
  const running = run(source({ consumer, topics: [topic], signal: ac.signal }), sink, {
    signal: ac.signal,
  });
  await finished;
  clearInterval(sampler);
  ac.abort();
  await running;
  await consumer.disconnect();
  return { ...timing!, calls, lag };
}

async function benchConsume() {
  // A topic filled by an earlier run (`--topic`, kept afterwards) saves the fill.
  const given = args.get("topic");
  const topic = given ?? await createTopic(PARTITIONS);
  if (given === undefined) {
    const messages: Message[] = Array.from({ length: MESSAGES }, (_, i) => ({
      key: `Item-${i % KEYS}`,
      value: `{"n":${i},"pad":"${pad}"}`,
    }));
    const producer = newProducer();
    await producer.connect();
    const fillMs = (await rawProduce(producer, topic, messages, 5000)).ms;
    await producer.disconnect();
    console.log(
      `consume: filled ${topic} with ${MESSAGES} messages (${PARTITIONS} partitions) in ${
        Math.round(fillMs)
      } ms`,
    );
  }
  const raws: Timing[] = [], floors: Timing[] = [];
  const impels: ImpelRound[][] = variants.map(() => []);
  const lags: number[] = [];
  for (let round = 1; round <= ROUNDS; round++) {
    const raw = await rawConsume(topic, MESSAGES);
    raws.push(raw);
    const parts = [`raw eachBatch ${Math.round(raw.ms)} ms (${rate(MESSAGES, raw.ms)})`];
    if (withFloor) {
      const floor = await rawConsume(topic, MESSAGES, true);
      floors.push(floor);
      parts.push(`floor ${Math.round(floor.ms)} ms (${rate(MESSAGES, floor.ms)})`);
    }
    for (let k = 0; k < variants.length; k++) {
      const v = (k + round - 1) % variants.length;
      const impel = await impelConsume(topic, MESSAGES, variants[v].kafkaSource);
      impels[v][round - 1] = impel;
      lags.push(...impel.lag);
      parts.push(
        `${variants[v].name} ${Math.round(impel.ms)} ms (${
          rate(MESSAGES, impel.ms)
        }, ${impel.calls} handler calls, commit lag median ${median(impel.lag)} max ${
          Math.max(...impel.lag)
        })`,
      );
    }
    console.log(`  round ${round}: ${parts.join(", ")}`);
  }
  console.log(
    `consume: commit lag (handled, not yet committed) over ${lags.length} samples: median ${
      median(lags)
    }, p90 ${[...lags].sort((a, b) => a - b)[Math.floor(lags.length * 0.9)]}, max ${
      Math.max(...lags)
    } messages`,
  );
  const rows = [
    ...(withFloor
      ? [summary(
        "consume",
        "raw eachBatch",
        raws,
        "floor (decode, Map, a call per message)",
        floors,
        MESSAGES,
      )]
      : []),
    ...variants.map((v, k) =>
      summary("consume", "raw eachBatch", raws, v.name, impels[k], MESSAGES)
    ),
  ];
  for (const row of rows) console.log(row);
  if (given === undefined) await withAdmin((a) => a.deleteTopics({ topics: [topic] }));
  return rows;
}

// ---------------------------------------------------------------------------------------------
// Produce

/** Events in log order: stream after stream round-robin, as an event store's feed reads them. */
function makeEvents(total: number, streams: number): Array<{ stream: string; event: StreamEvent }> {
  const items = new Array(total);
  const time = new Date();
  for (let i = 0; i < total; i++) {
    const s = i % streams;
    const index = Math.floor(i / streams);
    items[i] = {
      stream: `Item-${s}`,
      event: {
        index,
        type: "Happened",
        data: { n: i, pad },
        meta: null,
        id: `e${i}`,
        time,
        size: 100,
      },
    };
  }
  return items;
}

function batchesOf(
  items: Array<{ stream: string; event: StreamEvent }>,
  size = 1000,
): ReadableStream<Batch> {
  let i = 0;
  return new ReadableStream<Batch>({
    pull(c) {
      if (i >= items.length) return c.close();
      const slice = items.slice(i, i + size);
      i += size;
      c.enqueue({ tranche: "0", items: slice, position: BigInt(i), isTail: i >= items.length });
    },
  }, { highWaterMark: 0 });
}

async function sinkProduce(
  producer: Producer,
  topic: string,
  items: Array<{ stream: string; event: StreamEvent }>,
  maxEventsPerMessage: number,
  maxConcurrentStreams: number,
): Promise<Timing & { calls: number }> {
  const handler = kafkaProducerHandler({ producer, topic, maxEventsPerMessage });
  let calls = 0;
  const sink = streamsSink({
    handler: (stream, events) => {
      calls++;
      return handler(stream, events);
    },
    maxConcurrentStreams,
    statsIntervalMs: 0,
  });
  const elapsed = stopwatch();
  await run(batchesOf(items), sink);
  return { ...elapsed(), calls };
}

async function benchProduce() {
  const streams = KEYS;
  const items = makeEvents(PRODUCE, streams);
  // The very messages the sink sends with one event per message (string keys and values).
  const messages = items.map(({ stream, event }) =>
    renderSpanMessages(stream, [event], 1, 1_000_000)[0]
  ) as Message[];
  const producer = newProducer();
  await producer.connect();
  const topics: string[] = [];
  const raws: Timing[] = [], ordered: Timing[] = [], packed: Timing[] = [];
  try {
    for (let round = 1; round <= ROUNDS; round++) {
      const t1 = await createTopic(PARTITIONS),
        t2 = await createTopic(PARTITIONS),
        t3 = await createTopic(PARTITIONS);
      topics.push(t1, t2, t3);
      const raw = await rawProduce(producer, t1, messages);
      const one = await sinkProduce(producer, t2, items, 1, 1024);
      const many = await sinkProduce(producer, t3, items, 1000, 1024);
      raws.push(raw);
      ordered.push(one);
      packed.push(many);
      console.log(
        `  round ${round}: raw send×1000 ${Math.round(raw.ms)} ms (${
          rate(PRODUCE, raw.ms)
        }), ordered sink ` +
          `1 event/message ${Math.round(one.ms)} ms (${
            rate(PRODUCE, one.ms)
          }, ${one.calls} calls), packed ` +
          `${Math.round(many.ms)} ms (${rate(PRODUCE, many.ms)} events, ${many.calls} calls)`,
      );
    }
    console.log(summary("produce", "raw send×1000", raws, "ordered sink", ordered, PRODUCE));
    console.log(summary("produce", "raw send×1000", raws, "ordered sink, packed", packed, PRODUCE));
  } finally {
    await producer.disconnect();
    await withAdmin((a) => a.deleteTopics({ topics }));
  }
}

const runtime = "Bun" in globalThis
  ? `bun ${process.versions.bun}`
  : `deno ${process.versions.deno}`;
const load = () => loadavg().map((x) => x.toFixed(1)).join(" ");
console.log(`${runtime}; ${navigator.hardwareConcurrency} cores; load ${load()}`);
if (skip !== "consume") await benchConsume();
if (skip !== "produce") await benchProduce();
console.log(`load ${load()}`);
