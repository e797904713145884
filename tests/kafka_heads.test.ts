// The Kafka source, given an admin client, knows its heads (each assigned partition's high
// watermark): lag without positions.head, and awaitCompletion({ tail: true }) waits for what was
// produced before the call. Real broker (tools/kafka.sh start).
import assert from "node:assert/strict";
import { Kafka, logLevel } from "kafkajs";
import { run, streamsSink } from "../core/sink.ts";
import { InvalidArgumentError } from "../core/errors.ts";
import { kafkaSource } from "../sources/kafka.ts";

const broker = Deno.env.get("KAFKA_BROKER") ?? "127.0.0.1:9092";
const kafka = new Kafka({ clientId: "impel-heads", brokers: [broker], logLevel: logLevel.NOTHING });
const opts = { sanitizeOps: false, sanitizeResources: false };

Deno.test("kafka source: heads are the assigned partitions' high watermarks", opts, async () => {
  const topic = `impel-heads-${crypto.randomUUID().slice(0, 8)}`;
  const admin = kafka.admin();
  await admin.connect();
  const producer = kafka.producer();
  await producer.connect();
  const consumer = kafka.consumer({
    groupId: `heads-${crypto.randomUUID().slice(0, 8)}`,
    sessionTimeout: 6000,
    rebalanceTimeout: 3000,
    heartbeatInterval: 200,
    maxWaitTimeInMs: 2000, // a fetch at the tail waits this long: a produce is seen late
  });
  try {
    await admin.createTopics({ topics: [{ topic, numPartitions: 2 }], waitForLeaders: true });
    const send = (n: number, from: number) =>
      producer.send({
        topic,
        messages: Array.from({ length: n }, (_, i) => ({
          key: `Order-${(from + i) % 4}`,
          value: "x",
          partition: (from + i) % 2,
        })),
      });
    await send(10, 0);
    let handled = 0;
    const sink = streamsSink({
      group: "g",
      statsIntervalMs: 0,
      handler: (_s, events) => void (handled += events.length),
    });
    const ac = new AbortController();
    const source = kafkaSource({ consumer, topics: [topic], admin, signal: ac.signal });
    const running = run(source, sink, { signal: ac.signal });
    await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 30_000 });
    assert.equal(handled, 10);
    assert.deepEqual(
      [...(await source.heads!())].sort(),
      [[`${topic}/0`, 5n], [`${topic}/1`, 5n]],
    );
    await send(6, 10);
    await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 30_000 });
    assert.equal(handled, 16, "what was produced before the call is handled when it resolves");
    ac.abort();
    await running;
    assert.throws(
      () => kafkaSource({ consumer, topics: [topic], admin: {} as never }),
      InvalidArgumentError,
    );
  } finally {
    await consumer.disconnect().catch(() => {});
    await admin.deleteTopics({ topics: [topic] }).catch(() => {});
    await producer.disconnect();
    await admin.disconnect();
  }
});
