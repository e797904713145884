// Kafka source and sinks against the single-node broker of `tools/kafka.sh start`
// (127.0.0.1:9092; KAFKA_BROKER overrides). Every test uses fresh topics and groups.
import assert from "node:assert/strict";
import {
  type Consumer,
  type ConsumerConfig,
  Kafka,
  logLevel,
  type Message,
  type Producer,
} from "kafkajs";
import type { Batch } from "../core/batch.ts";
import { InvalidArgumentError } from "../core/errors.ts";
import type { StreamEvent } from "../core/event.ts";
import { PipelineFaultError } from "../core/failure.ts";
import type { Handler } from "../core/scheduler.ts";
import { run, streamsSink, type StreamsSinkOptions } from "../core/sink.ts";
import { createMemoryStore, memorySource } from "../sources/memory.ts";
import {
  kafkajsLogCreator,
  KafkaMessageTooLargeError,
  kafkaParallelSink,
  kafkaProducerHandler,
  parseSpanMessage,
  renderSpanMessages,
  SPAN_HEADER,
} from "../sinks/kafka.ts";
import {
  KafkaInvalidRecordError,
  type KafkaMessageMeta,
  kafkaSource,
  keyStream,
} from "../sources/kafka.ts";
import { Buffer } from "node:buffer";

const broker = Deno.env.get("KAFKA_BROKER") ?? "127.0.0.1:9092";
const kafka = new Kafka({
  clientId: "impel-test",
  brokers: [broker],
  logCreator: kafkajsLogCreator(),
  logLevel: logLevel.WARN,
  retry: { retries: 5, initialRetryTime: 100 },
});
const opts = { sanitizeOps: false, sanitizeResources: false };
const unique = (prefix: string) => `${prefix}-${crypto.randomUUID().slice(0, 8)}`;

/** Short timeouts so that joins, leaves and takeovers settle in about a second. */
const consumerConfig = (groupId: string): ConsumerConfig => ({
  groupId,
  sessionTimeout: 6000,
  rebalanceTimeout: 3000,
  heartbeatInterval: 200,
  maxWaitTimeInMs: 100,
  retry: { retries: 5, initialRetryTime: 100 },
});

async function freshTopic(partitions: number): Promise<string> {
  const topic = unique("impel-test");
  const admin = kafka.admin();
  try {
    await admin.connect();
  } catch (e) {
    throw new Error(`Kafka is needed at ${broker}: run tools/kafka.sh start`, { cause: e });
  }
  try {
    await admin.createTopics({
      topics: [{ topic, numPartitions: partitions }],
      waitForLeaders: true,
    });
  } finally {
    await admin.disconnect();
  }
  return topic;
}

async function committedOffsets(groupId: string, topic: string): Promise<Map<number, bigint>> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const [offsets] = await admin.fetchOffsets({ groupId, topics: [topic] });
    return new Map(offsets.partitions.map((p) => [p.partition, BigInt(p.offset)]));
  } finally {
    await admin.disconnect();
  }
}

async function withProducer<T>(fn: (producer: Producer) => Promise<T>): Promise<T> {
  const producer = kafka.producer();
  await producer.connect();
  try {
    return await fn(producer);
  } finally {
    await producer.disconnect();
  }
}

/** Reads every message of a topic from the beginning with a throwaway group. */
async function readTopic(
  topic: string,
  count: number,
): Promise<Array<{ partition: number; message: Message }>> {
  const consumer = kafka.consumer(consumerConfig(unique("reader")));
  const out: Array<{ partition: number; message: Message }> = [];
  await consumer.connect();
  await consumer.subscribe({ topics: [topic], fromBeginning: true });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`read ${out.length} of ${count} messages`)),
      20_000,
    );
    consumer.run({
      eachBatch: ({ batch }) => {
        for (const m of batch.messages) {
          out.push({ partition: batch.partition, message: m as Message });
        }
        if (out.length >= count) {
          clearTimeout(timer);
          resolve();
        }
        return Promise.resolve();
      },
    });
  });
  await consumer.disconnect();
  return out;
}

const event = (index: number, data: unknown = { n: index }): StreamEvent => ({
  index,
  type: "Happened",
  data,
  meta: null,
  id: `id-${index}`,
  time: new Date(1_700_000_000_000 + index),
  size: 16,
});

/** Reads batches straight off a source, committing each, until `count` items or `done`. */
async function drain(
  consumer: Consumer,
  topic: string,
  count: number,
  onBatch: (b: Batch) => void = () => {},
): Promise<Batch[]> {
  const controller = new AbortController();
  const reader = kafkaSource({ consumer, topics: [topic], signal: controller.signal }).getReader();
  const batches: Batch[] = [];
  let n = 0;
  while (n < count) {
    const { value, done } = await reader.read();
    if (done) break;
    batches.push(value);
    onBatch(value);
    n += value.items.length;
    await value.commit?.(value.position);
  }
  controller.abort();
  assert.equal((await reader.read()).done, true, "the stream closes on abort");
  await consumer.disconnect();
  return batches;
}

// ---------------------------------------------------------------------------------------------
// Rendering, options

Deno.test("kafka sink: spans render into bounded messages and parse back with their indexes", () => {
  const events = Array.from(
    { length: 25 },
    (_, i) => event(10 + i, i % 2 === 0 ? { n: i } : new Uint8Array([i, 255])),
  );
  const byCount = renderSpanMessages("Order-1", events, 10, 1_000_000);
  assert.deepEqual(byCount.map((m) => JSON.parse(m.value as string).e.length), [10, 10, 5]);
  assert.ok(byCount.every((m) => m.key === "Order-1" && m.headers?.[SPAN_HEADER] === "1"));

  const byBytes = renderSpanMessages("Order-1", events, 1000, 300);
  assert.ok(byBytes.length > 3, "a byte bound splits the span");
  assert.ok(
    byBytes.every((m) => (m.value as string).length <= 300),
    "each message stays within the byte bound",
  );
  const parsed = byBytes.flatMap((m) =>
    parseSpanMessage(new TextEncoder().encode(m.value as string))
  );
  assert.deepEqual(parsed.map((e) => e.index), events.map((e) => e.index));
  assert.deepEqual(parsed[1].data, new Uint8Array([1, 255]), "bytes survive the round trip");
  assert.deepEqual(parsed[2].data, { n: 2 });
  assert.equal(parsed[0].time.getTime(), events[0].time.getTime());

  assert.throws(
    () => renderSpanMessages("Order-1", [event(0, "x".repeat(500))], 10, 300),
    KafkaMessageTooLargeError,
  );
  assert.throws(() => parseSpanMessage(new TextEncoder().encode("{}")), {
    code: "InvalidSpanMessage",
  });
});

Deno.test("kafka: options are checked at the boundary", () => {
  const consumer = kafka.consumer({ groupId: "unused" });
  const producer = kafka.producer();
  assert.throws(() => kafkaSource({ consumer, topics: [] }), InvalidArgumentError);
  assert.throws(() => kafkaSource({ consumer, topics: ["t"], defaultCategory: "a-b" }), {
    field: "defaultCategory",
  });
  assert.throws(() => kafkaSource({ consumer, topics: ["t"], maxBufferedMessages: 0 }), {
    field: "maxBufferedMessages",
  });
  assert.throws(() => kafkaProducerHandler({ producer, topic: "" }), { field: "topic" });
  assert.throws(
    () => kafkaProducerHandler({ producer, topic: "t", maxEventsPerMessage: 0 }),
    InvalidArgumentError,
  );
  assert.throws(() => kafkaParallelSink({ producer: null as unknown as Producer, topic: "t" }), {
    field: "producer",
  });
});

// ---------------------------------------------------------------------------------------------
// Source, read directly

Deno.test(
  "kafka source: keys become streams, offsets are committed as next-to-read, restart resumes there",
  opts,
  async () => {
    const topic = await freshTopic(2);
    const groupId = unique("group");
    await withProducer((p) =>
      p.send({
        topic,
        messages: [
          ...Array.from(
            { length: 60 },
            (_, i) => ({ key: `Order-${i % 3}`, value: `v${i}`, partition: i % 2 }),
          ),
          { key: "plain", value: "no dash", partition: 0 },
          { key: null, value: "no key", partition: 1 },
        ],
      })
    );
    const first = await drain(kafka.consumer(consumerConfig(groupId)), topic, 62);
    const items = first.flatMap((b) => b.items);
    assert.equal(items.length, 62);
    const streams = new Set(items.map((i) => i.stream));
    assert.ok(streams.has("Kafka-plain"), "a key without '-' gets the default category");
    assert.ok(
      streams.has(`Kafka-%none_${topic}_1`),
      "a message without key goes to a per-partition stream",
    );
    // Per stream, indexes count up from 0 in offset order.
    const perStream = new Map<string, StreamEvent[]>();
    for (const { stream, event } of items) {
      perStream.set(stream, [
        ...(perStream.get(stream) ?? []),
        event,
      ]);
    }
    for (const [stream, events] of perStream) {
      assert.deepEqual(events.map((e) => e.index), events.map((_, i) => i), stream);
    }
    const e0 = items[0].event;
    const meta = e0.meta as KafkaMessageMeta;
    assert.equal(e0.type, topic);
    assert.ok(e0.data instanceof Uint8Array);
    assert.equal(e0.id, `${topic}/${meta.partition}/${meta.offset}`);
    assert.ok(first.every((b) => b.tranche === `${topic}/0` || b.tranche === `${topic}/1`));

    const offsets = await committedOffsets(groupId, topic);
    assert.deepEqual([offsets.get(0), offsets.get(1)], [31n, 31n], "commit = last offset + 1");

    await withProducer((p) =>
      p.send({ topic, messages: [{ key: "Order-9", value: "late", partition: 1 }] })
    );
    const second = await drain(kafka.consumer(consumerConfig(groupId)), topic, 1);
    const resumed = second.flatMap((b) => b.items);
    assert.equal(resumed.length, 1, "nothing before the committed offset is read again");
    assert.equal((resumed[0].event.meta as KafkaMessageMeta).offset, "31");
    assert.equal(second[0].position, 32n);
  },
);

// ---------------------------------------------------------------------------------------------
// Sinks

Deno.test(
  "kafka sink: never two sends in flight for one key, sends for different keys overlap",
  opts,
  async () => {
    const topic = await freshTopic(4);
    await withProducer(async (producer) => {
      let inFlight = 0, maxInFlight = 0;
      const keysInFlight = new Map<string, number>();
      let violations = 0;
      // The real producer, observed: counts requests in flight overall and per key.
      const observed: Producer = {
        ...producer,
        send: async (record) => {
          const keys = new Set(record.messages.map((m) => String(m.key)));
          for (const k of keys) {
            const n = (keysInFlight.get(k) ?? 0) + 1;
            if (n > 1) violations++;
            keysInFlight.set(k, n);
          }
          maxInFlight = Math.max(maxInFlight, ++inFlight);
          try {
            await new Promise((r) => setTimeout(r, 5));
            return await producer.send(record);
          } finally {
            inFlight--;
            for (const k of keys) keysInFlight.set(k, keysInFlight.get(k)! - 1);
          }
        },
      };
      const handler = kafkaProducerHandler({ producer: observed, topic, maxBytesPerRequest: 200 });
      const calls: Promise<number>[] = [];
      for (let round = 0; round < 5; round++) {
        for (let s = 0; s < 10; s++) {
          calls.push(handler(`Item-${s}`, [event(round * 2), event(round * 2 + 1)]));
        }
      }
      const results = await Promise.all(calls);
      assert.equal(violations, 0, "a key was in two sends at once");
      assert.ok(
        maxInFlight > 1,
        `sends for different keys should overlap, max in flight ${maxInFlight}`,
      );
      assert.deepEqual(
        results.slice(0, 10),
        Array(10).fill(2),
        "the handler reports the index after the span",
      );

      const messages = await readTopic(topic, 50);
      const byKey = new Map<string, number[]>();
      for (const { message } of messages) {
        const indexes = parseSpanMessage(message.value as Uint8Array).map((e) => e.index);
        byKey.set(String(message.key), [...(byKey.get(String(message.key)) ?? []), ...indexes]);
      }
      for (let s = 0; s < 10; s++) {
        assert.deepEqual(
          byKey.get(`Item-${s}`),
          Array.from({ length: 10 }, (_, i) => i),
          `order of Item-${s}`,
        );
      }
    });
  },
);

Deno.test(
  "kafka parallel sink: produces every item and commits each tranche in order",
  opts,
  async () => {
    const topic = await freshTopic(3);
    await withProducer(async (producer) => {
      const committed: Array<[string, bigint]> = [];
      const batches: Batch[] = [];
      for (let i = 0; i < 40; i++) {
        const tranche = `t${i % 2}`;
        batches.push({
          tranche,
          items: Array.from(
            { length: 5 },
            (_, j) => ({ stream: `Audit-${i}_${j}`, event: event(0, { i, j }) }),
          ),
          position: BigInt(i + 1),
          isTail: i >= 38,
          commit: (p) => {
            committed.push([tranche, p]);
            return Promise.resolve();
          },
        });
      }
      const source = ReadableStream.from(batches);
      await source.pipeTo(kafkaParallelSink({ producer, topic, maxInFlightBatches: 6 }));
      for (const tranche of ["t0", "t1"]) {
        const positions = committed.filter(([t]) => t === tranche).map(([, p]) => p);
        assert.deepEqual(
          [...positions].sort((a, b) => Number(a - b)),
          positions,
          `commits of ${tranche} in order`,
        );
        assert.equal(positions.at(-1), tranche === "t0" ? 39n : 40n, `last commit of ${tranche}`);
      }
      const messages = await readTopic(topic, 200);
      assert.equal(messages.length, 200);
      assert.equal(new Set(messages.map((m) => String(m.message.key))).size, 200);
    });
  },
);

Deno.test(
  "kafka parallel sink: a failed send rejects the pipe and commits nothing after it",
  opts,
  async () => {
    const failing = {
      send: () => Promise.reject(new Error("broker says no")),
    } as unknown as Producer;
    let commits = 0;
    const batch: Batch = {
      tranche: "0",
      items: [{ stream: "A-1", event: event(0) }],
      position: 1n,
      isTail: true,
      commit: () => {
        commits++;
        return Promise.resolve();
      },
    };
    await assert.rejects(
      ReadableStream.from([batch, batch]).pipeTo(
        kafkaParallelSink({ producer: failing, topic: "t" }),
      ),
      /broker says no/,
    );
    assert.equal(commits, 0);
  },
);

// ---------------------------------------------------------------------------------------------
// Pipelines: source -> scheduler -> handler

interface Pipeline {
  readonly consumer: Consumer;
  /** Each join's assignment, as partition numbers. */
  readonly assignments: number[][];
  readonly running: Promise<void>;
  /** Aborts, waits for the drain and final commit, then leaves the group. */
  stop(): Promise<void>;
}

function pipeline(
  topic: string,
  groupId: string,
  handler: Handler,
  sinkOptions: Partial<StreamsSinkOptions> = {},
  more: { consumer?: Partial<ConsumerConfig>; maxBufferedMessages?: number } = {},
): Pipeline {
  // A Kafka instance per member: kafkajs 2.2.4 shares committed-offset state between the
  // consumers of one instance, and two members of one group can then crash each other.
  const consumer = new Kafka({
    brokers: [broker],
    logCreator: kafkajsLogCreator(),
    logLevel: logLevel.WARN,
  })
    .consumer({ ...consumerConfig(groupId), ...more.consumer });
  const assignments: number[][] = [];
  consumer.on(
    consumer.events.GROUP_JOIN,
    (e) => assignments.push(e.payload.memberAssignment[topic] ?? []),
  );
  const sink = streamsSink({
    handler,
    group: groupId,
    statsIntervalMs: 0,
    commitIntervalMs: 100,
    ...sinkOptions,
  });
  const ac = new AbortController();
  const source = kafkaSource({
    consumer,
    topics: [topic],
    signal: ac.signal,
    maxBufferedMessages: more.maxBufferedMessages,
  });
  const running = run(source, sink, { signal: ac.signal });
  running.catch(() => {});
  return {
    consumer,
    assignments,
    running,
    async stop() {
      ac.abort();
      try {
        await running;
      } finally {
        await consumer.disconnect();
      }
    },
  };
}

/** Waits until `condition` holds, checking every 20 ms, or fails after `timeoutMs`. */
async function until(what: string, condition: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const offsetOf = (e: StreamEvent) => Number((e.meta as KafkaMessageMeta).offset);
const partitionOf = (e: StreamEvent) => (e.meta as KafkaMessageMeta).partition;

async function producePlain(topic: string, count: number, keys: number, from = 0, prefix = "Item") {
  await withProducer((p) =>
    p.send({
      topic,
      messages: Array.from(
        { length: count },
        (_, i) => ({ key: `${prefix}-${(from + i) % keys}`, value: `${from + i}` }),
      ),
    })
  );
}

Deno.test(
  "kafka round trip: store -> ordered sink -> topic -> source -> handler keeps every stream in order",
  opts,
  async () => {
    const topic = await freshTopic(4);
    const store = createMemoryStore();
    const streams = 30, perStream = 20;
    // Interleaved appends, so that every batch of the memory source mixes streams.
    for (let round = 0; round < perStream / 4; round++) {
      for (let s = 0; s < streams; s++) {
        await store.append(
          `Order-${s}`,
          Array.from({ length: 4 }, (_, k) => ({ type: "Line", data: { s, n: round * 4 + k } })),
          round * 4,
        );
      }
    }
    await withProducer(async (producer) => {
      const sink = streamsSink({
        handler: kafkaProducerHandler({ producer, topic, maxEventsPerMessage: 3 }),
        maxConcurrentStreams: 8,
        maxEventsPerCall: 7,
        statsIntervalMs: 0,
      });
      const ac = new AbortController();
      const running = run(memorySource({ store, startFrom: "start" }), sink, { signal: ac.signal });
      await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 20_000 });
      ac.abort();
      await running;
    });

    const seen = new Map<string, StreamEvent[]>();
    let total = 0;
    const consumer = pipeline(topic, unique("group"), (stream, events) => {
      seen.set(stream, [...(seen.get(stream) ?? []), ...events]);
      total += events.length;
    }, { maxConcurrentStreams: 8 });
    try {
      await until("every event", () => total >= streams * perStream);
    } finally {
      await consumer.stop();
    }
    assert.equal(total, streams * perStream, "each event handled once");
    assert.equal(seen.size, streams);
    for (const [stream, events] of seen) {
      assert.deepEqual(
        events.map((e) => e.index),
        Array.from({ length: perStream }, (_, i) => i),
        stream,
      );
      assert.deepEqual(
        events.map((e) => (e.data as { n: number }).n),
        Array.from({ length: perStream }, (_, i) => i),
      );
      assert.ok(events.every((e) => e.type === "Line"));
    }
  },
);

Deno.test("kafka source: two groups each see every message", opts, async () => {
  const topic = await freshTopic(3);
  await producePlain(topic, 300, 25);
  const ids = [new Set<string>(), new Set<string>()];
  const pipelines = ids.map((set) =>
    pipeline(topic, unique("group"), (_stream, events) => {
      for (const e of events) set.add(e.id);
    })
  );
  try {
    await until("both groups to see all", () => ids.every((s) => s.size >= 300));
  } finally {
    await Promise.all(pipelines.map((p) => p.stop()));
  }
  assert.deepEqual(ids.map((s) => s.size), [300, 300]);
});

Deno.test(
  "kafka source: a restart resumes at the committed offset, without repeats or gaps",
  opts,
  async () => {
    const topic = await freshTopic(1);
    const groupId = unique("group");
    await producePlain(topic, 50, 5);
    const first: number[] = [];
    const a = pipeline(topic, groupId, (_s, events) => void first.push(...events.map(offsetOf)));
    try {
      await until("the first 50", () => first.length >= 50);
    } finally {
      await a.stop();
    }
    assert.equal((await committedOffsets(groupId, topic)).get(0), 50n, "the final commit on stop");

    await producePlain(topic, 5, 5, 50);
    const second: number[] = [];
    const b = pipeline(topic, groupId, (_s, events) => void second.push(...events.map(offsetOf)));
    try {
      await until("the next 5", () => second.length >= 5);
      await new Promise((r) => setTimeout(r, 300)); // room for anything that should not come
    } finally {
      await b.stop();
    }
    assert.deepEqual(second.sort((x, y) => x - y), [50, 51, 52, 53, 54]);
    assert.equal((await committedOffsets(groupId, topic)).get(0), 55n);
  },
);

Deno.test(
  "kafka source: a throwing handler faults the pipeline by policy and nothing past it is committed",
  opts,
  async () => {
    const topic = await freshTopic(1);
    const groupId = unique("group");
    await withProducer((p) =>
      p.send({
        topic,
        messages: [
          ...Array.from({ length: 10 }, (_, i) => ({ key: `Good-${i}`, value: "ok" })),
          { key: "Bad-1", value: "boom" },
          ...Array.from({ length: 10 }, (_, i) => ({ key: `Good-${10 + i}`, value: "ok" })),
        ],
      })
    );
    let attempts = 0;
    const p = pipeline(topic, groupId, (stream) => {
      if (stream === "Bad-1") {
        attempts++;
        throw new Error("cannot handle Bad-1");
      }
    }, { failure: { kind: "fault", maxAttempts: 3 }, retry: { initialDelayMs: 10 } });
    try {
      const error = await p.running.then(() => undefined, (e) => e);
      assert.ok(error instanceof PipelineFaultError, `expected a fault, got ${error}`);
      assert.match(error.message, /Bad-1/);
      assert.match(String(error.cause), /cannot handle Bad-1/);
      assert.equal(attempts, 3);
    } finally {
      await p.consumer.disconnect();
    }
    const committed = (await committedOffsets(groupId, topic)).get(0)!;
    assert.ok(committed <= 10n, `committed ${committed}, past the failing message at offset 10`);
  },
);

Deno.test(
  "kafka source: keys of one partition run concurrently, each key in order",
  opts,
  async () => {
    const topic = await freshTopic(1);
    await producePlain(topic, 80, 10);
    let active = 0, maxActive = 0, total = 0;
    const offsets = new Map<string, number[]>();
    const p = pipeline(topic, unique("group"), async (stream, events) => {
      maxActive = Math.max(maxActive, ++active);
      await new Promise((r) => setTimeout(r, 15));
      offsets.set(stream, [...(offsets.get(stream) ?? []), ...events.map(offsetOf)]);
      total += events.length;
      active--;
    }, { maxConcurrentStreams: 10, maxEventsPerCall: 2 });
    try {
      await until("all 80", () => total >= 80);
    } finally {
      await p.stop();
    }
    assert.ok(
      maxActive > 1,
      `handlers for different keys should overlap; max at once was ${maxActive}`,
    );
    assert.equal(offsets.size, 10);
    for (const [stream, list] of offsets) {
      const key = Number(stream.split("-")[1]);
      assert.deepEqual(
        list,
        Array.from({ length: 8 }, (_, i) => key + i * 10),
        `${stream} in offset order`,
      );
    }
  },
);

Deno.test(
  "kafka source: two instances split the partitions; when one stops the other takes over, nothing lost",
  opts,
  async () => {
    const topic = await freshTopic(4);
    const groupId = unique("group");
    const handled: Array<{ instance: string; id: string; partition: number }> = [];
    const handlerOf = (instance: string): Handler => (_stream, events) => {
      for (const e of events) handled.push({ instance, id: e.id, partition: partitionOf(e) });
    };
    const a = pipeline(topic, groupId, handlerOf("a"));
    await until("a to join", () => a.assignments.length > 0);
    const b = pipeline(topic, groupId, handlerOf("b"));
    try {
      await until(
        "the split",
        () => a.assignments.at(-1)?.length === 2 && b.assignments.at(-1)?.length === 2,
      );
      await producePlain(topic, 400, 40);
      await until("the first 400", () => new Set(handled.map((h) => h.id)).size >= 400);
      const ofA = new Set(handled.filter((h) => h.instance === "a").map((h) => h.partition));
      assert.deepEqual(
        [...ofA].sort(),
        [...a.assignments.at(-1)!].sort(),
        "a handled its own partitions",
      );
      await a.stop();
      await until("b to take over", () => b.assignments.at(-1)?.length === 4);
      await producePlain(topic, 400, 40, 400);
      await until("all 800", () => new Set(handled.map((h) => h.id)).size >= 800);
    } finally {
      await a.stop().catch(() => {});
      await b.stop();
    }
    const distinct = new Set(handled.map((h) => h.id)).size;
    const duplicates = handled.length - distinct;
    console.log(
      `takeover: ${handled.length} handled, ${distinct} distinct, ${duplicates} duplicates`,
    );
    assert.equal(distinct, 800, "nothing lost");
    const lateB = new Set(
      handled.slice(-400).filter((h) => h.instance === "b").map((h) => h.partition),
    );
    assert.equal(lateB.size, 4, "b handles every partition after the takeover");
  },
);

Deno.test(
  "kafka source: work of a revoked partition is never committed by the member that lost it",
  opts,
  async () => {
    const topic = await freshTopic(2);
    const groupId = unique("group");
    await producePlain(topic, 40, 8);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const held = new Map<number, number>(); // partition -> events a is holding
    // a's calls never end by themselves: its revocation gives up on them after stopTimeoutMs,
    // which stays below the group's rebalanceTimeout (3 s) as documented, so that a lets go
    // (and kafkajs rejoins) before the group gives up on a.
    const a = pipeline(topic, groupId, async (_s, events) => {
      for (const e of events) held.set(partitionOf(e), (held.get(partitionOf(e)) ?? 0) + 1);
      await gate;
    }, { stopTimeoutMs: 1000 });
    // Observe a's commits on the real consumer.
    const aCommits: number[] = [];
    const commitOffsets = a.consumer.commitOffsets;
    a.consumer.commitOffsets = (tps) => {
      for (const tp of tps) aCommits.push(tp.partition);
      return commitOffsets(tps);
    };
    let b: Pipeline | undefined;
    const bIds = new Set<string>();
    try {
      await until("a to hold everything", () => (held.get(0) ?? 0) + (held.get(1) ?? 0) >= 40);
      b = pipeline(topic, groupId, (_s, events) => void events.forEach((e) => bIds.add(e.id)));
      await until(
        "the split",
        () => a.assignments.length >= 2 && b!.assignments.at(-1)?.length === 1,
      );
      const lost = b.assignments.at(-1)![0];
      await until("b to handle the lost partition", () => bIds.size >= (held.get(lost) ?? 0));
      aCommits.length = 0;
      release();
      await a.stop();
      assert.ok(aCommits.length > 0, "a commits the partition it kept");
      assert.ok(!aCommits.includes(lost), `a committed partition ${lost} after losing it`);
      assert.ok(aCommits.includes(1 - lost));
    } finally {
      release();
      await a.stop().catch(() => {});
      await b?.stop();
    }
  },
);

Deno.test(
  "kafka source: a rebalance commits the completed work before the partition moves, so nothing is handled twice",
  opts,
  async () => {
    const topic = await freshTopic(2);
    const groupId = unique("group");
    await producePlain(topic, 200, 20);
    const aIds: string[] = [];
    // No interval commits: only the revocation's final commit can move the lost partition on.
    const a = pipeline(topic, groupId, (_s, events) => void aIds.push(...events.map((e) => e.id)), {
      commitIntervalMs: 60_000,
    });
    let b: Pipeline | undefined;
    const bIds: string[] = [];
    try {
      await until("a to handle everything", () => aIds.length >= 200);
      b = pipeline(topic, groupId, (_s, events) => void bIds.push(...events.map((e) => e.id)));
      await until(
        "the split",
        () => a.assignments.length >= 2 && b!.assignments.at(-1)?.length === 1,
      );
      const lost = b.assignments.at(-1)![0];
      const inLost = aIds.filter((id) => id.startsWith(`${topic}/${lost}/`)).length;
      assert.equal(
        (await committedOffsets(groupId, topic)).get(lost),
        BigInt(inLost),
        "the partition moved at the offset a had completed",
      );
      await producePlain(topic, 20, 20, 200);
      await until("the last 20", () => new Set([...aIds, ...bIds]).size >= 220);
      await new Promise((r) => setTimeout(r, 300));
    } finally {
      await a.stop();
      await b?.stop();
    }
    const all = [...aIds, ...bIds];
    assert.equal(new Set(all).size, all.length, `${all.length - new Set(all).size} handled twice`);
  },
);

Deno.test(
  "kafka source: fetching stops while the sink is behind, the member stays in the group, then goes on",
  opts,
  async () => {
    const topic = await freshTopic(1);
    // Separate sends make separate record batches, so that fetches of 2000 bytes return a few each.
    await withProducer(async (producer) => {
      for (let i = 0; i < 50; i++) {
        const messages = Array.from(
          { length: 10 },
          (_, k) => ({ key: `Item-${k}`, value: `${i * 10 + k}` }),
        );
        await producer.send({ topic, messages });
      }
    });
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let handled = 0;
    const p = pipeline(
      topic,
      unique("group"),
      async (_s, events) => {
        await gate;
        handled += events.length;
      },
      { maxReadAhead: 2 },
      {
        // A session shorter than the hold below: the held fetch loop must keep heartbeating.
        consumer: { maxBytesPerPartition: 2000, sessionTimeout: 2000, heartbeatInterval: 200 },
        maxBufferedMessages: 20,
      },
    );
    let fetchedUpTo = -1;
    p.consumer.on(p.consumer.events.START_BATCH_PROCESS, (e) => {
      fetchedUpTo = Math.max(fetchedUpTo, Number(e.payload.lastOffset));
    });
    try {
      await until("the first fetches", () => fetchedUpTo >= 0);
      await new Promise((r) => setTimeout(r, 3000));
      assert.equal(handled, 0);
      assert.ok(fetchedUpTo < 300, `fetched up to offset ${fetchedUpTo} with the sink held up`);
      assert.equal(p.assignments.length, 1, "no rebalance while held");
      release();
      await until("all 500", () => handled >= 500);
      assert.equal(p.assignments.length, 1);
    } finally {
      release();
      await p.stop();
    }
  },
);

// ---------------------------------------------------------------------------------------------
// Batch size, commit acceptance, bad input, problems

Deno.test(
  "kafka source: a fetch splits into batches of at most maxBatchMessages, each with its own position",
  opts,
  async () => {
    const topic = await freshTopic(1);
    await producePlain(topic, 2500, 50);
    const consumer = kafka.consumer(consumerConfig(unique("group")));
    const ac = new AbortController();
    const reader = kafkaSource({
      consumer,
      topics: [topic],
      maxBatchMessages: 700,
      signal: ac.signal,
    })
      .getReader();
    const batches: Batch[] = [];
    try {
      let n = 0;
      while (n < 2500) {
        const { value } = await reader.read();
        batches.push(value!);
        n += value!.items.length;
        assert.ok(value!.ownership !== undefined && !value!.ownership.signal.aborted);
      }
    } finally {
      ac.abort();
      await consumer.disconnect();
    }
    assert.ok(batches.every((b) => b.items.length <= 700), "no batch over the limit");
    assert.ok(batches.length >= 4, `${batches.length} batches`);
    let expected = 0n;
    for (const b of batches) {
      const offsets = b.items.map((i) => BigInt(offsetOf(i.event)));
      assert.equal(offsets[0], expected, "batches follow on from each other");
      assert.equal(b.position, offsets.at(-1)! + 1n, "position = next offset to read");
      expected = b.position;
    }
    assert.equal(expected, 2500n);
  },
);

Deno.test(
  "kafka source: a commit counts only once the broker accepted it; one kafkajs did not send fails and is reported",
  opts,
  async () => {
    const topic = await freshTopic(1);
    const groupId = unique("group");
    await producePlain(topic, 30, 3);
    const consumer = kafka.consumer(consumerConfig(groupId));
    // A deliberate fault: commitOffsets resolving without sending, as kafkajs's does while its
    // runner is down or rejoining.
    const realCommit = consumer.commitOffsets;
    let dropCommits = true;
    consumer.commitOffsets = (offsets) => dropCommits ? Promise.resolve() : realCommit(offsets);
    const ac = new AbortController();
    const source = kafkaSource({ consumer, topics: [topic], signal: ac.signal });
    const reader = source.getReader();
    try {
      const { value: batch } = await reader.read();
      await assert.rejects(batch!.commit!(batch!.position), {
        name: "KafkaCommitFailedError",
        code: "KafkaCommitFailed",
      });
      const problem = source.problems?.().find((p) => p.tranche === `${topic}/0`);
      assert.equal(problem?.severity, "failing");
      assert.match(problem!.reason, /did not receive it/);
      assert.equal((await committedOffsets(groupId, topic)).get(0), -1n, "nothing was committed");

      dropCommits = false;
      await batch!.commit!(batch!.position);
      assert.equal((await committedOffsets(groupId, topic)).get(0), batch!.position);
      assert.deepEqual(source.problems?.(), [], "the problem clears once a commit lands");
    } finally {
      ac.abort();
      await consumer.disconnect();
    }
  },
);

Deno.test(
  "kafka source: a member assigned nothing is a failing problem; one with partitions has none",
  opts,
  async () => {
    const topic = await freshTopic(1);
    const groupId = unique("group");
    const ac = new AbortController();
    const members = [0, 1].map(() => {
      // A Kafka instance each: kafkajs 2.2.4 shares committed-offset state between the consumers
      // of one instance, and two members of one group then crash each other.
      const consumer = new Kafka({ brokers: [broker], logCreator: kafkajsLogCreator() })
        .consumer(consumerConfig(groupId));
      const source = kafkaSource({ consumer, topics: [topic], signal: ac.signal });
      const sink = streamsSink({ handler: () => {}, statsIntervalMs: 0 });
      return { consumer, source, running: run(source, sink, { signal: ac.signal }) };
    });
    const reasons = () => members.map((m) => (m.source.problems?.() ?? []).map((p) => p.reason));
    try {
      await until(
        "one member with nothing, one with no problem",
        () => {
          const r = reasons();
          return r.some((x) => x.length === 0) &&
            r.some((x) => x.some((y) => /no partitions/.test(y)));
        },
      );
      const idle = members.find((m) => (m.source.problems?.() ?? []).length > 0)!;
      assert.equal(idle.source.problems?.()[0].severity, "failing");
    } finally {
      ac.abort();
      for (const m of members) {
        await m.running;
        await m.consumer.disconnect();
      }
    }
  },
);

Deno.test(
  "kafka source: bad records go to their stream's failure policy, typed; other keys carry on and the partition commits",
  opts,
  async () => {
    const topic = await freshTopic(2);
    const groupId = unique("group");
    const spanOf = (stream: string, from: number, to: number) => {
      const [m] = renderSpanMessages(
        stream,
        Array.from({ length: to - from }, (_, i) => event(from + i)),
        1000,
        1_000_000,
      );
      return {
        key: stream,
        value: m.value as string,
        headers: { [SPAN_HEADER]: "1" },
        partition: 0,
      };
    };
    const badKey = Buffer.from([0xff, 0xfe, 0x41]);
    await withProducer((p) =>
      p.send({
        topic,
        messages: [
          { key: "Corrupt-1", value: "{not json", headers: { [SPAN_HEADER]: "1" }, partition: 0 },
          spanOf("Gap-1", 0, 2),
          spanOf("Gap-1", 5, 6), // indexes 2..4 are missing
          { key: badKey, value: "raw", partition: 1 },
          { key: null, value: "no key", partition: 1 },
          ...Array.from(
            { length: 20 },
            (_, i) => ({ key: `Good-${i}`, value: "ok", partition: i % 2 }),
          ),
        ],
      })
    );
    const parked: Array<{ stream: string; error: unknown }> = [];
    const handled = new Map<string, number[]>();
    const p = pipeline(
      topic,
      groupId,
      (stream, events) =>
        void handled.set(stream, [...(handled.get(stream) ?? []), ...events.map((e) => e.index)]),
      {
        failure: {
          kind: "deadLetter",
          maxAttempts: 2,
          deadLetter: (f) => void parked.push({ stream: f.stream, error: f.error }),
        },
        retry: { initialDelayMs: 5 },
      },
    );
    try {
      await until(
        "the good keys and the dead letters",
        () => handled.size >= 23 && parked.length >= 2,
      );
    } finally {
      await p.stop();
    }
    const reasons = new Map(parked.map((x) => [x.stream, x.error as KafkaInvalidRecordError]));
    assert.ok(reasons.get("Corrupt-1") instanceof KafkaInvalidRecordError);
    assert.equal(reasons.get("Corrupt-1")!.reason, "corruptSpan");
    assert.equal(reasons.get("Gap-1")!.reason, "spanGap");
    assert.deepEqual(handled.get("Gap-1"), [0, 1], "the span before the gap is handled");
    assert.deepEqual(
      handled.get(keyStream(badKey, "Kafka")),
      [0],
      "a non-UTF-8 key keeps its bytes",
    );
    assert.match(keyStream(badKey, "Kafka"), /^Kafka-%~/);
    assert.deepEqual(
      handled.get(`Kafka-%none_${topic}_1`),
      [0],
      "a null key has its partition's stream",
    );
    for (let i = 0; i < 20; i++) assert.deepEqual(handled.get(`Good-${i}`), [0], `Good-${i}`);
    const offsets = await committedOffsets(groupId, topic);
    assert.deepEqual(
      [offsets.get(0), offsets.get(1)],
      [13n, 12n],
      "both partitions commit to the end",
    );
  },
);
