/**
 * Kafka source: consumes topics in a consumer group through kafkajs and emits one batch per
 * fetched partition batch. Each partition (`topic/partition`) is a tranche; offsets are
 * committed to the group only for batches the sink reports complete, and never for a partition
 * this member has lost in a rebalance.
 *
 * Messages become events as follows:
 * - a message produced by {@linkcode "sinks/kafka".kafkaProducerHandler} (header `impel-span`)
 *   yields the events of the span it carries, with their original stream indexes, so re-sent
 *   spans are deduplicated downstream;
 * - any other message becomes one event of the stream named by its key when the key is a valid
 *   stream name (`Category-id`), else of `{defaultCategory}-{key}`; messages without a key go to
 *   `{defaultCategory}-{topic}_{partition}`. Its `index` is a per-stream sequence counted by this
 *   source instance (Kafka records carry none), `type` is the topic, `data` the raw value bytes,
 *   `meta` `{ topic, partition, offset, headers }`, `id` `topic/partition/offset` and `time` the
 *   message timestamp (consecutive messages with the same timestamp share one `Date`). Those
 *   indexes restart from 0 in every process, so use them for order within a run, not as versions.
 *   The source remembers each distinct key it has seen (its stream and sequence): memory grows by
 *   about a hundred bytes per key.
 *
 * The scheduler then runs different streams of one partition concurrently while keeping each
 * stream in order, which a plain kafkajs `eachMessage`/`eachBatch` loop cannot do.
 *
 * The consumer is the caller's: create it with the group id and timeouts you want, and call
 * `consumer.disconnect()` only after the pipeline has stopped, because the sink's final commit
 * on stop goes through it.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { Batch, BatchItem, Position } from "../core/batch.ts";
import { checkInteger, ImpelError, InvalidArgumentError } from "../core/errors.ts";
import type { StreamEvent } from "../core/event.ts";
import { checkCategory, type StreamName } from "../core/streamName.ts";
import { isSpanMessage, parseSpanMessage } from "../sinks/kafka.ts";

export { kafkajsLogCreator } from "../sinks/kafka.ts";

/**
 * A consumed message: the shape of a kafkajs `KafkaMessage`.
 *
 * @example
 * ```ts
 * import type { KafkaIncomingMessage } from "@impel/impel/sources/kafka";
 * const message: KafkaIncomingMessage = {
 *   key: new TextEncoder().encode("Order-1"),
 *   value: null,
 *   timestamp: "1700000000000",
 *   offset: "42",
 * };
 * ```
 */
export interface KafkaIncomingMessage {
  /** The key bytes, or null. */
  readonly key: Uint8Array | null;
  /** The value bytes, or null (a tombstone). */
  readonly value: Uint8Array | null;
  /** Milliseconds since the epoch, as a decimal string. */
  readonly timestamp: string;
  /** The offset, as a decimal string. */
  readonly offset: string;
  /** Headers, if any. */
  readonly headers?: Readonly<Record<string, unknown>>;
}

/**
 * What kafkajs hands to `eachBatch`, as far as the source uses it.
 *
 * @example
 * ```ts
 * import type { KafkaEachBatchPayload } from "@impel/impel/sources/kafka";
 * const count = ({ batch }: KafkaEachBatchPayload) => batch.messages.length;
 * ```
 */
export interface KafkaEachBatchPayload {
  /** The fetched batch of one partition. */
  readonly batch: {
    readonly topic: string;
    readonly partition: number;
    readonly highWatermark: string;
    readonly messages: KafkaIncomingMessage[];
    lastOffset(): string;
  };
  /** Whether a seek or rebalance made the batch obsolete. */
  isStale(): boolean;
  /** Sends a heartbeat if one is due; rejects when the group is rebalancing. */
  heartbeat(): Promise<void>;
  /** False once the consumer is stopping. */
  isRunning(): boolean;
}

/**
 * The part of a kafkajs `Consumer` the source uses: pass the consumer itself, created with
 * `kafka.consumer({ groupId, ... })`.
 *
 * @example
 * ```ts
 * import { Kafka } from "kafkajs";
 * import type { KafkaConsumer } from "@impel/impel/sources/kafka";
 * const consumer: KafkaConsumer = new Kafka({ brokers: ["127.0.0.1:9092"] }).consumer({ groupId: "g" });
 * ```
 */
export interface KafkaConsumer {
  /** Connects (idempotent). */
  connect(): Promise<void>;
  /** Subscribes to topics before `run`. */
  subscribe(subscription: { topics: string[]; fromBeginning?: boolean }): Promise<void>;
  /** Joins the group and starts fetching. */
  run(config: {
    autoCommit?: boolean;
    eachBatchAutoResolve?: boolean;
    eachBatch?: (payload: KafkaEachBatchPayload) => Promise<void>;
  }): Promise<void>;
  /** Commits offsets (the next offset to read) under the current generation. */
  commitOffsets(
    offsets: Array<{ topic: string; partition: number; offset: string }>,
  ): Promise<void>;
  /** Stops fetching the given topics (all their partitions when `partitions` is omitted); used on stop. */
  pause(topics: Array<{ topic: string; partitions?: number[] }>): void;
  /** Instrumentation event names. */
  readonly events: { readonly GROUP_JOIN: string; readonly CRASH: string; readonly STOP: string };
  /** Subscribes to an instrumentation event; returns the unsubscribe function. */
  on(eventName: string, listener: (event: { payload: unknown }) => void): () => void;
}

interface GroupJoinPayload {
  readonly groupId: string;
  readonly memberId: string;
  readonly memberAssignment: Record<string, number[]>;
}

interface CrashPayload {
  readonly groupId: string;
  readonly error: unknown;
  readonly restart: boolean;
}

/**
 * Options of {@linkcode kafkaSource}.
 *
 * @example
 * ```ts
 * import type { KafkaConsumer, KafkaSourceOptions } from "@impel/impel/sources/kafka";
 * declare const consumer: KafkaConsumer;
 * const options: KafkaSourceOptions = { consumer, topics: ["orders"], defaultCategory: "Order" };
 * ```
 */
export interface KafkaSourceOptions {
  /** A kafkajs consumer created for the group; the source connects, subscribes and runs it. */
  readonly consumer: KafkaConsumer;
  /** The topics to consume. */
  readonly topics: readonly string[];
  /** Where a partition without a committed offset starts: earliest (default) or latest. */
  readonly fromBeginning?: boolean;
  /** The category of streams for keys that are not stream names (default `"Kafka"`). */
  readonly defaultCategory?: string;
  /**
   * Fetching stops while this many fetched messages (default 50 000) wait for the sink to take
   * them, and goes on as it catches up; the sink's own read-ahead limit bounds the rest.
   */
  readonly maxBufferedMessages?: number;
  /** Stops consumption: the stream closes and the sink drains; the group is not left. */
  readonly signal?: AbortSignal;
}

/**
 * The meta of an event made from a plain Kafka message.
 *
 * @example
 * ```ts
 * import type { KafkaMessageMeta } from "@impel/impel/sources/kafka";
 * import type { StreamEvent } from "@impel/impel";
 * const where = (e: StreamEvent) => {
 *   const { topic, partition, offset } = e.meta as KafkaMessageMeta;
 *   return `${topic}[${partition}]@${offset}`;
 * };
 * ```
 */
export interface KafkaMessageMeta {
  /** The topic the message was read from. */
  readonly topic: string;
  /** Its partition. */
  readonly partition: number;
  /** Its offset, as kafkajs gives it (a decimal string). */
  readonly offset: string;
  /** Its headers, if any. */
  readonly headers: KafkaIncomingMessage["headers"];
}

interface Assignment {
  readonly topic: string;
  readonly partition: number;
  readonly tranche: string;
  /** The offset after the last message queued in this assignment; a refetch below it is skipped. */
  emittedUpTo: bigint;
  /** The highest offset committed, and the highest the sink has asked to commit. */
  committed: bigint;
  wanted: bigint;
}

interface Fetched {
  readonly assignment: Assignment;
  readonly messages: KafkaIncomingMessage[];
  readonly position: Position;
  readonly isTail: boolean;
}

const REBALANCE_ERRORS = new Set([
  "REBALANCE_IN_PROGRESS",
  "ILLEGAL_GENERATION",
  "UNKNOWN_MEMBER_ID",
  "NOT_COORDINATOR_FOR_GROUP",
  "NOT_COORDINATOR",
  "GROUP_COORDINATOR_NOT_AVAILABLE",
]);

/** Errors after which a commit should wait for the next assignment rather than fail the sink. */
function isMembershipError(e: unknown): boolean {
  const err = e as { type?: string; name?: string; cause?: { type?: string } } | undefined;
  if (err?.type !== undefined && REBALANCE_ERRORS.has(err.type)) return true;
  if (err?.cause?.type !== undefined && REBALANCE_ERRORS.has(err.cause.type)) return true;
  // kafkajs throws this while it restarts the consumer after a crash.
  return err?.name === "KafkaJSNonRetriableError" &&
    /not initialized/.test(String((e as Error).message));
}

const decoder = new TextDecoder();
const EMPTY = new Uint8Array(0);

/** The next index of a stream whose messages carry none. */
interface Sequence {
  next: number;
}

/** A message key seen before: its bytes, its text, the stream it names, and that stream's sequence. */
interface KeyEntry {
  readonly bytes: Uint8Array;
  readonly key: string;
  readonly stream: StreamName;
  readonly sequence: Sequence;
  /** The next entry whose bytes hash alike. */
  readonly chain: KeyEntry | undefined;
}

/**
 * Consumes `topics` with `consumer` and emits a batch per fetched partition batch, as described
 * in the module documentation. A batch's `commit` commits its offset (the next offset to read)
 * for its partition, but only while this member still holds that partition since the batch was
 * fetched; commits for revoked partitions are dropped, and batches of revoked partitions the
 * sink has not yet taken are discarded. A commit refused because a rebalance is under way is
 * retried after the member rejoins if it kept the partition. The stream errors with
 * {@linkcode ImpelError} `KafkaConsumerCrashed` if kafkajs gives up on the consumer.
 *
 * @example
 * ```ts
 * import { Kafka } from "kafkajs";
 * import { kafkaSource, kafkajsLogCreator } from "@impel/impel/sources/kafka";
 * const kafka = new Kafka({ brokers: ["127.0.0.1:9092"], logCreator: kafkajsLogCreator() });
 * const consumer = kafka.consumer({ groupId: "reactor" });
 * const controller = new AbortController();
 * const source = kafkaSource({ consumer, topics: ["orders"], signal: controller.signal });
 * // await run(source, streamsSink({ handler }), { signal: controller.signal });
 * // await consumer.disconnect();
 * ```
 */
export function kafkaSource(options: KafkaSourceOptions): ReadableStream<Batch> {
  const { consumer, signal } = options;
  if (consumer === null || typeof consumer?.run !== "function") {
    throw new InvalidArgumentError("consumer", "must be a kafkajs Consumer");
  }
  const topics = options.topics;
  if (
    !Array.isArray(topics) || topics.length === 0 ||
    topics.some((t) => typeof t !== "string" || t === "")
  ) {
    throw new InvalidArgumentError("topics", "must be a non-empty array of topic names");
  }
  const defaultCategory = options.defaultCategory ?? "Kafka";
  try {
    checkCategory(defaultCategory);
  } catch {
    throw new InvalidArgumentError(
      "defaultCategory",
      `must be a non-empty string without '-', got ${JSON.stringify(defaultCategory)}`,
    );
  }
  const maxBuffered = checkInteger("maxBufferedMessages", options.maxBufferedMessages ?? 50_000, 1);
  const fromBeginning = options.fromBeginning ?? true;
  const log = getLogger(["impel", "kafka", "source"]);

  const assigned = new Map<string, Assignment>();
  const sequences = new Map<StreamName, Sequence>();
  const keys = new Map<number, KeyEntry>();
  const keyless = new Map<string, KeyEntry>();
  let memberId: string | undefined;
  let queue: Fetched[] = [];
  let buffered = 0;
  let stopped = false;
  let wake: (() => void) | undefined;
  let wakeScheduled = false;
  let room: (() => void) | undefined;
  let commits: Promise<void> = Promise.resolve();
  let controller: ReadableStreamDefaultController<Batch>;
  const removers: Array<() => void> = [];

  // Resolves after `ms`, or sooner once the sink has taken enough to go below the limit.
  const roomOrTimeout = (ms: number) =>
    new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        room = undefined;
        resolve();
      };
      const timer = setTimeout(done, ms);
      room = done;
    });

  const entryFor = (
    key: string,
    stream: StreamName,
    bytes: Uint8Array,
    chain: KeyEntry | undefined,
  ): KeyEntry => {
    let sequence = sequences.get(stream);
    if (sequence === undefined) sequences.set(stream, sequence = { next: 0 });
    return { bytes, key, stream, sequence, chain };
  };

  // Decoding each key and looking the string up costs about three times as much as hashing the
  // bytes and comparing them with the entry found, so keys are interned by their bytes.
  const keyEntry = (bytes: Uint8Array | null, topic: string, partition: number): KeyEntry => {
    const n = bytes === null ? 0 : bytes.length;
    if (bytes === null || n === 0) {
      const tranche = `${topic}/${partition}`;
      let e = keyless.get(tranche);
      if (e === undefined) {
        keyless.set(
          tranche,
          e = entryFor("", `${defaultCategory}-${topic}_${partition}`, EMPTY, undefined),
        );
      }
      return e;
    }
    let h = 0x811c9dc5 ^ n;
    for (let i = 0; i < n; i++) h = Math.imul(h ^ bytes[i], 0x01000193);
    const head = keys.get(h);
    for (let e = head; e !== undefined; e = e.chain) {
      const b = e.bytes;
      if (b.length !== n) continue;
      let i = 0;
      while (i < n && b[i] === bytes[i]) i++;
      if (i === n) return e;
    }
    const key = decoder.decode(bytes);
    const dash = key.indexOf("-");
    const stream = dash > 0 && dash < key.length - 1 ? key : `${defaultCategory}-${key}`;
    // A copy: the original is a view of the whole fetch response.
    const e = entryFor(key, stream, bytes.slice(), head);
    keys.set(h, e);
    return e;
  };

  const toItems = (f: Fetched): BatchItem[] => {
    const { topic, partition, tranche } = f.assignment;
    const items: BatchItem[] = [];
    // Messages produced together share a timestamp; a Date per message would be the costliest
    // part of building events, so consecutive equal timestamps share one.
    let timestamp = "", time = new Date(0);
    for (const m of f.messages) {
      const entry = keyEntry(m.key, topic, partition);
      if (entry.key !== "" && isSpanMessage(m.headers)) {
        try {
          for (const event of parseSpanMessage(m.value)) {
            items.push({ stream: entry.stream, event });
          }
          continue;
        } catch (e) {
          log.warn(
            "message {tranche}/{offset} is marked as a span but is not one; delivering it as is: {error}",
            {
              tranche,
              offset: m.offset,
              error: String(e),
            },
          );
        }
      }
      const index = entry.sequence.next++;
      const meta: KafkaMessageMeta = { topic, partition, offset: m.offset, headers: m.headers };
      if (m.timestamp !== timestamp) {
        timestamp = m.timestamp;
        time = new Date(Number(timestamp));
      }
      const event: StreamEvent = {
        index,
        type: topic,
        data: m.value,
        meta,
        id: `${tranche}/${m.offset}`,
        time,
        size: (m.value?.byteLength ?? 0) + (m.key?.byteLength ?? 0),
      };
      items.push({ stream: entry.stream, event });
    }
    return items;
  };

  const doCommit = async (a: Assignment): Promise<void> => {
    const position = a.wanted;
    if (position <= a.committed || assigned.get(a.tranche) !== a) return;
    try {
      await consumer.commitOffsets([{
        topic: a.topic,
        partition: a.partition,
        offset: position.toString(),
      }]);
      if (position > a.committed) a.committed = position;
    } catch (e) {
      if (isMembershipError(e)) {
        log.info("commit of {tranche} at {position} waits for the group to settle: {error}", {
          tranche: a.tranche,
          position: position.toString(),
          error: String(e),
        });
        return;
      }
      throw new ImpelError(
        "KafkaCommitFailed",
        `committing offset ${position} of ${a.tranche} failed: ${e}`,
        { cause: e },
      );
    }
  };

  const enqueueCommit = (a: Assignment): Promise<void> => {
    // Commits go out one at a time so that a later, higher offset is never overtaken by an
    // earlier one.
    const next = commits.catch(() => {}).then(() => doCommit(a));
    commits = next;
    return next;
  };

  const commit = (a: Assignment, position: Position): Promise<void> => {
    if (assigned.get(a.tranche) !== a) {
      log.debug("not committing {tranche} at {position}: the partition was revoked", {
        tranche: a.tranche,
        position: position.toString(),
      });
      return Promise.resolve();
    }
    if (position <= a.committed) return Promise.resolve();
    if (position > a.wanted) a.wanted = position;
    return enqueueCommit(a);
  };

  const onJoin = (payload: GroupJoinPayload) => {
    // A member that keeps its id has been in every generation since its last join, so a
    // partition in both its old and new assignment was never anyone else's in between.
    const sameMember = payload.memberId === memberId;
    memberId = payload.memberId;
    const next = new Map<string, { topic: string; partition: number }>();
    for (const [topic, partitions] of Object.entries(payload.memberAssignment)) {
      for (const partition of partitions) next.set(`${topic}/${partition}`, { topic, partition });
    }
    const revoked: string[] = [];
    for (const tranche of assigned.keys()) {
      if (!sameMember || !next.has(tranche)) {
        assigned.delete(tranche);
        revoked.push(tranche);
      }
    }
    if (revoked.length > 0) {
      queue = queue.filter((f) => assigned.get(f.assignment.tranche) === f.assignment);
      buffered = queue.reduce((n, f) => n + f.messages.length, 0);
    }
    const kept: Assignment[] = [];
    for (const [tranche, { topic, partition }] of next) {
      const a = assigned.get(tranche);
      if (a !== undefined) kept.push(a);
      else {assigned.set(tranche, {
          topic,
          partition,
          tranche,
          emittedUpTo: -1n,
          committed: -1n,
          wanted: -1n,
        });}
    }
    log.info("kafka group {groupId} member {memberId} assigned {assigned}; revoked {revoked}", {
      groupId: payload.groupId,
      memberId: payload.memberId,
      assigned: [...next.keys()],
      revoked,
    });
    for (const a of kept) if (a.wanted > a.committed) enqueueCommit(a).catch(fail);
    if (buffered < maxBuffered) room?.();
  };

  const fail = (error: unknown) => {
    if (stopped) return;
    stopped = true;
    queue = [];
    buffered = 0;
    wake?.();
    room?.();
    controller.error(error);
  };

  const eachBatch = async (
    { batch, isStale, heartbeat, isRunning }: KafkaEachBatchPayload,
  ): Promise<void> => {
    if (stopped || isStale() || batch.messages.length === 0) return;
    const a = assigned.get(`${batch.topic}/${batch.partition}`);
    if (a === undefined) return;
    let messages = batch.messages;
    // After a rebalance kafkajs refetches a kept partition from its committed offset; what was
    // already queued is still on its way through the sink.
    if (a.emittedUpTo >= 0n && BigInt(messages[0].offset) < a.emittedUpTo) {
      const from = a.emittedUpTo;
      messages = messages.filter((m) => BigInt(m.offset) >= from);
      if (messages.length === 0) return;
    }
    const next = BigInt(batch.lastOffset()) + 1n;
    a.emittedUpTo = next;
    queue.push({
      assignment: a,
      messages,
      position: next,
      isTail: next >= BigInt(batch.highWatermark),
    });
    buffered += messages.length;
    // The sink starts on the batch in a later macrotask, so that kafkajs first hands over the
    // rest of the fetch response and sends its next fetch: building events and handling them
    // then overlap that round trip instead of delaying it.
    if (wake !== undefined && !wakeScheduled) {
      wakeScheduled = true;
      setTimeout(() => {
        wakeScheduled = false;
        wake?.();
      }, 0);
    }
    // Backpressure: holding kafkajs here stops its fetch loop until the sink catches up. Pausing
    // the partitions instead would leave kafkajs sleeping for maxWaitTimeInMs (5 s by default)
    // once everything is paused, well after the sink had caught up. kafkajs heartbeats only from
    // that loop, so the wait heartbeats itself, and gives way to a rebalance or a stop.
    while (buffered >= maxBuffered && !stopped && isRunning()) {
      await roomOrTimeout(500);
      try {
        await heartbeat();
      } catch {
        return; // a rebalance is under way: kafkajs rejoins once this returns
      }
    }
  };

  const stop = () => {
    if (stopped) return;
    stopped = true;
    // Stop fetching but stay in the group: the sink's final commits go through this consumer.
    try {
      consumer.pause(topics.map((topic) => ({ topic })));
    } catch {
      // Not running (between a crash and its restart): nothing to pause.
    }
    queue = [];
    buffered = 0;
    wake?.();
    room?.();
    try {
      controller.close();
    } catch {
      // Already closed or errored.
    }
  };

  return new ReadableStream<Batch>({
    async start(c) {
      controller = c;
      if (signal?.aborted) {
        stopped = true;
        c.close();
        return;
      }
      signal?.addEventListener("abort", stop, { once: true });
      removers.push(
        consumer.on(consumer.events.GROUP_JOIN, (e) => onJoin(e.payload as GroupJoinPayload)),
        consumer.on(consumer.events.CRASH, (e) => {
          const crash = e.payload as CrashPayload;
          if (crash.restart) {
            log.warn("kafka consumer of {groupId} crashed and restarts: {error}", {
              groupId: crash.groupId,
              error: String(crash.error),
            });
            return;
          }
          const message = `kafka consumer of ${crash.groupId} crashed: ${crash.error}`;
          fail(new ImpelError("KafkaConsumerCrashed", message, { cause: crash.error }));
        }),
        consumer.on(consumer.events.STOP, () => {
          for (const remove of removers.splice(0)) remove();
        }),
      );
      await consumer.connect();
      await consumer.subscribe({ topics: [...topics], fromBeginning });
      await consumer.run({ autoCommit: false, eachBatchAutoResolve: true, eachBatch });
    },
    async pull(c) {
      while (true) {
        while (queue.length === 0 && !stopped) {
          await new Promise<void>((resolve) => (wake = resolve));
        }
        wake = undefined;
        if (stopped) return;
        const f = queue.shift()!;
        buffered -= f.messages.length;
        if (buffered < maxBuffered) room?.();
        // Dropped if the partition was revoked while the batch waited.
        if (assigned.get(f.assignment.tranche) !== f.assignment) continue;
        const a = f.assignment;
        c.enqueue({
          tranche: a.tranche,
          items: toItems(f),
          position: f.position,
          isTail: f.isTail,
          commit: (position) => commit(a, position),
        });
        return;
      }
    },
    cancel() {
      stop();
    },
  }, { highWaterMark: 0 });
}
