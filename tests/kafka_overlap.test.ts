// One owner at a time when a member has caught up: a second member joins while the first one's
// slow calls run on everything it fetched. Real broker (127.0.0.1:9092; KAFKA_BROKER overrides),
// real kafkajs, two members in this process, fresh topic and group.
import assert from "node:assert/strict";
import { type ConsumerConfig, Kafka, logLevel } from "kafkajs";
import { run, streamsSink } from "../core/sink.ts";
import { kafkajsLogCreator, kafkaSource } from "../sources/kafka.ts";

const broker = Deno.env.get("KAFKA_BROKER") ?? "127.0.0.1:9092";
const opts = { sanitizeOps: false, sanitizeResources: false };
const unique = (prefix: string) => `${prefix}-${crypto.randomUUID().slice(0, 8)}`;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const client = (id: string) =>
  new Kafka({
    clientId: id,
    brokers: [broker],
    logCreator: kafkajsLogCreator(),
    logLevel: logLevel.WARN,
    retry: { retries: 5, initialRetryTime: 100 },
  });

interface Call {
  readonly member: string;
  readonly stream: string;
  readonly start: number;
  readonly end: number;
}

Deno.test(
  "kafka source: a member that has fetched everything lets go of its running calls before kafkajs rejoins",
  opts,
  async () => {
    const topic = unique("impel-overlap");
    const groupId = unique("group");
    const admin = client("admin").admin();
    await admin.connect();
    await admin.createTopics({ topics: [{ topic, numPartitions: 2 }], waitForLeaders: true });
    await admin.disconnect();
    const producer = client("producer").producer();
    await producer.connect();
    const produce = (wave: number) =>
      producer.send({
        topic,
        messages: Array.from({ length: 20 }, (_, i) => ({ key: `k${i}`, value: `${wave}:${i}` })),
      });
    await produce(1);

    const handlerMs = 3000;
    // A short fetch wait, so that kafkajs's own empty-fetch heartbeat (the one that rejoined at
    // once) comes within 100 ms of catching up.
    const config: ConsumerConfig = {
      groupId,
      sessionTimeout: 10_000,
      rebalanceTimeout: 12_000,
      heartbeatInterval: 200,
      maxWaitTimeInMs: 100,
      retry: { retries: 5, initialRetryTime: 100 },
    };
    const calls: Call[] = [];
    let started = 0;
    const member = (name: string) => {
      const consumer = client(name).consumer(config);
      const controller = new AbortController();
      const sink = streamsSink({
        group: name,
        statsIntervalMs: 0,
        commitIntervalMs: 200,
        stopTimeoutMs: 8000,
        maxConcurrentStreams: 32,
        handler: async (stream) => {
          const start = Date.now();
          started++;
          await sleep(handlerMs);
          calls.push({ member: name, stream, start, end: Date.now() });
        },
      });
      const source = kafkaSource({ consumer, topics: [topic], signal: controller.signal });
      const running = run(source, sink, { signal: controller.signal });
      return { consumer, controller, running };
    };

    const a = member("A");
    // A joins, fetches all 20 messages (so its next fetches are empty) and starts their calls.
    const deadline = Date.now() + 30_000;
    while (started < 20 && Date.now() < deadline) await sleep(50);
    assert.equal(started, 20, "A started a call on every key");
    const b = member("B");
    await sleep(handlerMs + 4000); // the rebalance, A's calls end, B gets its partition
    await produce(2); // work for both members after the rebalance
    await sleep(handlerMs + 3000);
    for (const m of [a, b]) {
      m.controller.abort();
      await m.running;
      await m.consumer.disconnect();
    }
    await producer.disconnect();

    const overlaps: string[] = [];
    for (const x of calls) {
      for (const y of calls) {
        if (
          x.member === "A" && y.member === "B" && x.stream === y.stream && x.start < y.end &&
          y.start < x.end
        ) overlaps.push(`${x.stream}: A ${x.start}-${x.end}, B ${y.start}-${y.end}`);
      }
    }
    assert.deepEqual(overlaps, [], "no key is handled by both members at overlapping times");
    const streams = (name: string) =>
      new Set(calls.filter((c) => c.member === name).map((c) => c.stream));
    assert.equal(streams("A").size, 20, "A handled every key of the first wave");
    assert.ok(streams("B").size > 0, "B took over a partition and handled its keys");
    const handled = new Set(calls.map((c) => c.stream));
    assert.equal(handled.size, 20);
  },
);
