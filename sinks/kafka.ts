/**
 * Kafka sinks: replicate stream spans to a topic without reordering any stream, or produce batch
 * items in parallel where order does not matter. Messages are keyed by stream name, so every
 * event of a stream lands in one partition, and carry the span (first index plus events) as
 * JSON marked with the `impel-span` header; {@linkcode "sources/kafka".kafkaSource} turns them
 * back into events with their original indexes, so a consumer dedups re-sent spans.
 *
 * Take the `Producer` from the application, connected; disconnect it after the pipeline stops.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { Batch, BatchItem, Position } from "../core/batch.ts";
import { checkInteger, InvalidArgumentError } from "../core/errors.ts";
import type { StreamEvent } from "../core/event.ts";
import type { StreamName } from "../core/streamName.ts";
import { type KafkaOutgoingMessage, renderSpanMessages } from "./kafka_span.ts";

export {
  InvalidSpanMessageError,
  isSpanMessage,
  KafkaMessageTooLargeError,
  type KafkaOutgoingMessage,
  parseSpanMessage,
  renderSpanMessages,
  SPAN_HEADER,
} from "./kafka_span.ts";

/**
 * The part of a kafkajs `Producer` the sinks use: pass the (connected) producer itself.
 *
 * @example
 * ```ts
 * import { Kafka } from "kafkajs";
 * import type { KafkaProducer } from "@impel/impel/sinks/kafka";
 * const producer: KafkaProducer = new Kafka({ brokers: ["127.0.0.1:9092"] }).producer();
 * ```
 */
export interface KafkaProducer {
  /** Sends `messages` to `topic` in one request per broker. */
  send(record: {
    topic: string;
    messages: KafkaOutgoingMessage[];
    acks?: number;
    compression?: number;
  }): Promise<unknown>;
}

// ---------------------------------------------------------------------------------------------
// Ordered producer: a handler for the streams sink

/**
 * Options of {@linkcode kafkaProducerHandler}.
 *
 * @example
 * ```ts
 * import type { KafkaProducer, KafkaProducerHandlerOptions } from "@impel/impel/sinks/kafka";
 * declare const producer: KafkaProducer;
 * const options: KafkaProducerHandlerOptions = { producer, topic: "orders", maxEventsPerMessage: 100 };
 * ```
 */
export interface KafkaProducerHandlerOptions {
  /** A connected kafkajs producer, owned by the caller. */
  readonly producer: KafkaProducer;
  /** The topic to produce to. */
  readonly topic: string;
  /** The most events in one message (default 1000). */
  readonly maxEventsPerMessage?: number;
  /**
   * About the most bytes in one message (default 900 000, under the broker's default
   * `message.max.bytes` of 1 MiB); a larger single event is a {@linkcode KafkaMessageTooLargeError}.
   */
  readonly maxBytesPerMessage?: number;
  /**
   * Messages of different streams handed over within the same turn of the event loop share a
   * produce request up to this many bytes (default 1 MiB): kafkajs sends one request per `send`,
   * so requests per stream would cap throughput at the round-trip rate.
   */
  readonly maxBytesPerRequest?: number;
  /** Acknowledgements required (default -1: all in-sync replicas). */
  readonly acks?: number;
  /** Compression of produced batches (default none). */
  readonly compression?: number;
}

/**
 * What {@linkcode kafkaProducerHandler} returns: a streams-sink handler that resolves to the
 * index after the span it sent.
 *
 * @example
 * ```ts
 * import type { KafkaProducerHandler } from "@impel/impel/sinks/kafka";
 * declare const handler: KafkaProducerHandler;
 * // const next = await handler("Order-1", events);
 * ```
 */
export type KafkaProducerHandler = (
  stream: StreamName,
  events: readonly StreamEvent[],
) => Promise<number>;

interface PendingRequest {
  readonly messages: KafkaOutgoingMessage[];
  bytes: number;
  readonly done: Promise<void>;
  resolve: () => void;
  reject: (e: unknown) => void;
}

/**
 * Creates a handler for the streams sink that produces each span it is given to `topic`, keyed
 * by stream name, and reports the index after the last event as handled. The scheduler runs at
 * most one call per stream at a time and the handler also chains calls per stream itself, so no
 * stream ever has two sends in flight: order per key holds while different keys are sent
 * concurrently (and share produce requests). A failed send rejects, so the scheduler retries the
 * span; a consumer dedups the resulting duplicates by index.
 *
 * @example
 * ```ts
 * import { Kafka } from "kafkajs";
 * import { kafkaProducerHandler } from "@impel/impel/sinks/kafka";
 * const producer = new Kafka({ brokers: ["127.0.0.1:9092"] }).producer();
 * await producer.connect();
 * const handler = kafkaProducerHandler({ producer, topic: "orders" });
 * // streamsSink({ handler, maxConcurrentStreams: 64 })
 * ```
 */
export function kafkaProducerHandler(options: KafkaProducerHandlerOptions): KafkaProducerHandler {
  const { producer, topic } = options;
  if (producer === null || typeof producer?.send !== "function") {
    throw new InvalidArgumentError("producer", "must be a kafkajs Producer");
  }
  if (typeof topic !== "string" || topic.length === 0) {
    throw new InvalidArgumentError("topic", "must be a non-empty string");
  }
  const maxEvents = checkInteger("maxEventsPerMessage", options.maxEventsPerMessage ?? 1000, 1);
  const maxBytes = checkInteger("maxBytesPerMessage", options.maxBytesPerMessage ?? 900_000, 64);
  const maxRequestBytes = checkInteger(
    "maxBytesPerRequest",
    options.maxBytesPerRequest ?? 1_048_576,
    1,
  );
  const acks = options.acks ?? -1;
  const compression = options.compression;

  let pending: PendingRequest | undefined;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const inFlight = new Map<StreamName, Promise<unknown>>();

  const flush = () => {
    if (timer !== undefined) clearTimeout(timer);
    timer = undefined;
    const request = pending;
    pending = undefined;
    if (request === undefined) return;
    producer.send({ topic, messages: request.messages, acks, compression }).then(
      () => request.resolve(),
      request.reject,
    );
  };

  const enqueue = (messages: KafkaOutgoingMessage[], bytes: number): Promise<void> => {
    if (pending !== undefined && pending.bytes + bytes > maxRequestBytes) flush();
    if (pending === undefined) {
      let resolve!: () => void, reject!: (e: unknown) => void;
      const done = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      pending = { messages: [], bytes: 0, done, resolve, reject };
    }
    const request = pending;
    for (const m of messages) request.messages.push(m);
    request.bytes += bytes;
    // A macrotask rather than a microtask, so that handlers the scheduler starts in the same
    // dispatch pass share the request.
    if (request.bytes >= maxRequestBytes) flush();
    else if (timer === undefined) timer = setTimeout(flush, 0);
    return request.done;
  };

  const send = async (stream: StreamName, events: readonly StreamEvent[]): Promise<number> => {
    const messages = renderSpanMessages(stream, events, maxEvents, maxBytes);
    let bytes = 0;
    for (const m of messages) bytes += (m.value as string).length + stream.length;
    await enqueue(messages, bytes);
    return events[events.length - 1].index + 1;
  };

  return (stream, events) => {
    if (events.length === 0) return Promise.resolve(0);
    const previous = inFlight.get(stream);
    const result = previous === undefined
      ? send(stream, events)
      : previous.then(() => send(stream, events), () => send(stream, events));
    inFlight.set(stream, result);
    const clear = () => {
      if (inFlight.get(stream) === result) inFlight.delete(stream);
    };
    result.then(clear, clear);
    return result;
  };
}

// ---------------------------------------------------------------------------------------------
// Parallel producer: a writable end for sources whose order does not matter

/**
 * Options of {@linkcode kafkaParallelSink}.
 *
 * @example
 * ```ts
 * import type { KafkaParallelSinkOptions, KafkaProducer } from "@impel/impel/sinks/kafka";
 * declare const producer: KafkaProducer;
 * const options: KafkaParallelSinkOptions = {
 *   producer,
 *   topic: "audit",
 *   toMessage: (item) => ({ key: item.stream, value: JSON.stringify(item.event.data) }),
 * };
 * ```
 */
export interface KafkaParallelSinkOptions {
  /** A connected kafkajs producer, owned by the caller. */
  readonly producer: KafkaProducer;
  /** The topic to produce to. */
  readonly topic: string;
  /** The most batches being sent at once (default 8). */
  readonly maxInFlightBatches?: number;
  /** Turns an item into a message (default: key = stream, value = a one-event span). */
  readonly toMessage?: (item: BatchItem) => KafkaOutgoingMessage;
  /** Acknowledgements required (default -1: all in-sync replicas). */
  readonly acks?: number;
  /** Compression of produced batches (default none). */
  readonly compression?: number;
}

interface TrancheProgress {
  readonly queue: Array<{ batch: Batch; done: boolean }>;
  commits: Promise<void>;
}

/**
 * Creates a `WritableStream` of batches that produces every item of each batch to `topic`, with
 * up to `maxInFlightBatches` batches being sent at once and no ordering between them. A batch's
 * checkpoint is committed once it and every earlier batch of its tranche have been acknowledged
 * (coalesced: only the newest such position). A failed send or commit errors the stream, so
 * `pipeTo` rejects with it.
 *
 * @example
 * ```ts
 * import { Kafka } from "kafkajs";
 * import { kafkaParallelSink } from "@impel/impel/sinks/kafka";
 * const producer = new Kafka({ brokers: ["127.0.0.1:9092"] }).producer();
 * await producer.connect();
 * const sink = kafkaParallelSink({ producer, topic: "audit" });
 * // await source.pipeTo(sink, { signal });
 * ```
 */
export function kafkaParallelSink(options: KafkaParallelSinkOptions): WritableStream<Batch> {
  const { producer, topic } = options;
  if (producer === null || typeof producer?.send !== "function") {
    throw new InvalidArgumentError("producer", "must be a kafkajs Producer");
  }
  if (typeof topic !== "string" || topic.length === 0) {
    throw new InvalidArgumentError("topic", "must be a non-empty string");
  }
  const maxInFlight = checkInteger("maxInFlightBatches", options.maxInFlightBatches ?? 8, 1);
  const toMessage = options.toMessage ?? ((item: BatchItem) => {
    const [m] = renderSpanMessages(item.stream, [item.event], 1, Number.MAX_SAFE_INTEGER);
    return m;
  });
  const acks = options.acks ?? -1;
  const compression = options.compression;

  const tranches = new Map<string, TrancheProgress>();
  const running = new Set<Promise<void>>();
  let failure: { error: unknown } | undefined;
  let controller: WritableStreamDefaultController;

  const fail = (error: unknown) => {
    if (failure !== undefined) return;
    failure = { error };
    controller.error(error);
  };

  const complete = (progress: TrancheProgress) => {
    let last: Batch | undefined;
    while (progress.queue.length > 0 && progress.queue[0].done) {
      last = progress.queue.shift()!.batch;
    }
    const commit = last?.commit;
    if (last === undefined || commit === undefined) return;
    const position: Position = last.position;
    progress.commits = progress.commits.then(() =>
      failure === undefined ? commit(position) : undefined
    );
    progress.commits.catch(fail);
  };

  return new WritableStream<Batch>({
    start(c) {
      controller = c;
    },
    async write(batch) {
      while (running.size >= maxInFlight) await Promise.race(running);
      if (failure !== undefined) throw failure.error;
      let progress = tranches.get(batch.tranche);
      if (progress === undefined) {
        progress = { queue: [], commits: Promise.resolve() };
        tranches.set(batch.tranche, progress);
      }
      const entry = { batch, done: false };
      progress.queue.push(entry);
      const p = progress;
      const send = batch.items.length === 0
        ? Promise.resolve()
        : producer.send({ topic, messages: batch.items.map(toMessage), acks, compression }).then(
          () => {},
        );
      const task = send.then(() => {
        entry.done = true;
        complete(p);
      }, fail).finally(() => running.delete(task));
      running.add(task);
    },
    async close() {
      while (running.size > 0) await Promise.race(running);
      for (const progress of tranches.values()) await progress.commits;
      if (failure !== undefined) throw failure.error;
    },
  });
}

// ---------------------------------------------------------------------------------------------
// Logging

/**
 * One kafkajs log entry, as kafkajs hands it to a `logCreator`'s logger.
 *
 * @example
 * ```ts
 * import type { KafkajsLogEntry } from "@impel/impel/sinks/kafka";
 * const entry: KafkajsLogEntry = {
 *   namespace: "Runner",
 *   level: 2,
 *   label: "WARN",
 *   log: { message: "The group is rebalancing, re-joining", timestamp: new Date().toISOString() },
 * };
 * ```
 */
export interface KafkajsLogEntry {
  /** The kafkajs component, e.g. `Runner` or `Connection`. */
  readonly namespace: string;
  /** kafkajs's level: 1 error, 2 warn, 4 info, 5 debug. */
  readonly level: number;
  /** The level's name. */
  readonly label: string;
  /** The message, a timestamp and structured fields. */
  readonly log: {
    readonly message: string;
    readonly timestamp: string;
    readonly [field: string]: unknown;
  };
}

/**
 * The shape of a kafkajs `logCreator`, accepted as `new Kafka({ logCreator })`.
 *
 * @example
 * ```ts
 * import type { KafkajsLogCreator } from "@impel/impel/sinks/kafka";
 * const silent: KafkajsLogCreator = () => () => {};
 * ```
 */
export type KafkajsLogCreator = (level: number) => (entry: KafkajsLogEntry) => void;

/**
 * A kafkajs `logCreator` that routes kafkajs's log entries to LogTape under `category` (default
 * `["impel", "kafkajs"]`) instead of the console. kafkajs still filters by its own `logLevel`.
 *
 * @example
 * ```ts
 * import { Kafka, logLevel } from "kafkajs";
 * import { kafkajsLogCreator } from "@impel/impel/sinks/kafka";
 * const kafka = new Kafka({ brokers: ["127.0.0.1:9092"], logCreator: kafkajsLogCreator(), logLevel: logLevel.WARN });
 * ```
 */
export function kafkajsLogCreator(
  category: readonly string[] = ["impel", "kafkajs"],
): KafkajsLogCreator {
  const logger = getLogger([...category]);
  return () => ({ namespace, level, log }) => {
    const { message, timestamp: _, ...rest } = log;
    const props = { ...rest, namespace: namespace || "kafkajs", message };
    // kafkajs's levels: ERROR 1, WARN 2, INFO 4, DEBUG 5.
    if (level <= 1) logger.error("{namespace}: {message}", props);
    else if (level === 2) logger.warn("{namespace}: {message}", props);
    else if (level <= 4) logger.info("{namespace}: {message}", props);
    else logger.debug("{namespace}: {message}", props);
  };
}
