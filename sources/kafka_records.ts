/**
 * How the Kafka source reads records as events: which stream a key names, which index each
 * event gets, and which records cannot be valid events of their stream.
 *
 * Keys map to streams without loss: a key that is UTF-8 and a stream name outside
 * `defaultCategory` is that stream; any other key becomes `{defaultCategory}-{escaped key}`,
 * where `%` is written `%25` and a key that is not UTF-8 is written `%~` plus its bytes in
 * base64url. So distinct keys never share a stream, and `x` (→ `Kafka-x`) and `Kafka-x`
 * (→ `Kafka-Kafka-x`) stay apart. A record without a key (null or empty) belongs to the stream
 * `{defaultCategory}-%none_{topic}_{partition}`, one per partition, in offset order.
 *
 * Indexes: a span message (from impel's Kafka sinks) carries its events' indexes; a plain
 * message gets the next index of a counter of its stream that starts at 0 in each assignment.
 * Within one assignment, the spans of a stream must follow on from each other: a span that
 * starts past the next expected index (a gap), a span that does not parse, a span on a stream of
 * plain messages or a plain message on a stream of spans becomes an item with `invalid` set (a
 * {@linkcode KafkaInvalidRecordError}), and so does every later record of that stream in the
 * assignment, so that nothing after a bad record is handled out of order or lost to
 * deduplication. The scheduler hands such items to the stream's failure policy.
 *
 * Assignments: the reader remembers each key it saw (its bytes and its stream's state, about
 * 400 bytes) until the next assignment, and then forgets every key. That is safe because kafkajs
 * revokes every partition on a rebalance and the sink forgets a revoked tranche's streams before
 * a batch of the next assignment reaches them, so a stream's indexes may start afresh; it keeps
 * memory proportional to the distinct keys of one assignment. It also means a stream's first
 * record after a restart or a reassignment starts it, whatever its index: a gap at the point
 * where the partition resumes cannot be seen, as neither the committed offset nor the reader
 * carries a stream's index across assignments (the failure in the run that met the gap, which
 * kept the partition from committing past it, is the signal).
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { BatchItem } from "../core/batch.ts";
import { ImpelError } from "../core/errors.ts";
import type { StreamEvent } from "../core/event.ts";
import type { StreamName } from "../core/streamName.ts";
import { isSpanMessage, parseSpanMessage } from "../sinks/kafka_span.ts";
import { addKey, createKeyTable, findKey } from "./kafka_keys.ts";

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
 * The meta of an event made from a plain Kafka message (and of an invalid record's item).
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

/**
 * Why a record is not a valid event of its stream.
 *
 * @example
 * ```ts
 * import type { KafkaInvalidReason } from "@impel/impel/sources/kafka";
 * const reason: KafkaInvalidReason = "spanGap";
 * ```
 */
export type KafkaInvalidReason =
  | "corruptSpan"
  | "spanGap"
  | "spanOnPlainStream"
  | "plainOnSpanStream"
  | "afterInvalid";

/**
 * A Kafka record that cannot be a valid event of its stream; carried by the item's `invalid`
 * so that the stream's failure policy (retry, dead letter, fault) deals with it.
 *
 * @example
 * ```ts
 * import { KafkaInvalidRecordError } from "@impel/impel/sources/kafka";
 * const e = new KafkaInvalidRecordError("spanGap", "orders/0", "17", "Order-1", "starts at index 9, expected 5");
 * console.log(e.code, e.reason, e.message); // KafkaInvalidRecord spanGap record orders/0@17 of Order-1 starts at index 9, expected 5
 * ```
 */
export class KafkaInvalidRecordError extends ImpelError {
  /** What is wrong. */
  readonly reason: KafkaInvalidReason;
  /** The partition, `topic/partition`. */
  readonly tranche: string;
  /** The record's offset. */
  readonly offset: string;
  /** The stream its key names. */
  readonly stream: StreamName;
  /** Creates the error; `problem` completes "record {tranche}@{offset} of {stream} ...". */
  constructor(
    reason: KafkaInvalidReason,
    tranche: string,
    offset: string,
    stream: StreamName,
    problem: string,
    options?: ErrorOptions,
  ) {
    super("KafkaInvalidRecord", `record ${tranche}@${offset} of ${stream} ${problem}`, options);
    this.reason = reason;
    this.tranche = tranche;
    this.offset = offset;
    this.stream = stream;
  }
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * The stream a non-empty key names by default (see the module documentation).
 *
 * @example
 * ```ts
 * import { keyStream } from "@impel/impel/sources/kafka";
 * const bytes = (s: string) => new TextEncoder().encode(s);
 * keyStream(bytes("Order-1"), "Kafka"); // "Order-1"
 * keyStream(bytes("x"), "Kafka"); // "Kafka-x"
 * keyStream(bytes("Kafka-x"), "Kafka"); // "Kafka-Kafka-x"
 * keyStream(new Uint8Array([0xff, 0x01]), "Kafka"); // "Kafka-%~_wE"
 * ```
 */
export function keyStream(key: Uint8Array, defaultCategory: string): StreamName {
  let text: string;
  try {
    text = utf8.decode(key);
  } catch {
    return `${defaultCategory}-%~${key.toBase64({ alphabet: "base64url", omitPadding: true })}`;
  }
  const dash = text.indexOf("-");
  if (dash > 0 && dash < text.length - 1 && text.slice(0, dash) !== defaultCategory) return text;
  return `${defaultCategory}-${text.replaceAll("%", "%25")}`;
}

/**
 * The stream of records without a key (null or empty) in one partition.
 *
 * @example
 * ```ts
 * import { noKeyStream } from "@impel/impel/sources/kafka";
 * noKeyStream("orders", 3, "Kafka"); // "Kafka-%none_orders_3"
 * ```
 */
export function noKeyStream(topic: string, partition: number, defaultCategory: string): StreamName {
  return `${defaultCategory}-%none_${topic}_${partition}`;
}

/** What the reader remembers of a stream. */
interface StreamState {
  readonly stream: StreamName;
  /** The next index of a plain message in this assignment. */
  plainNext: number;
  kind: "plain" | "span" | undefined;
  /** The index the next span must start at or below. */
  spanNext: number;
  /** The first invalid record of the stream in this period. */
  brokenAt: string | undefined;
}

/**
 * Turns the messages of one partition into batch items; see {@linkcode createRecordReader}.
 *
 * @example
 * ```ts
 * import { createRecordReader, type RecordReader } from "@impel/impel/sources/kafka";
 * const reader: RecordReader = createRecordReader({ defaultCategory: "Kafka" });
 * ```
 */
export interface RecordReader {
  /**
   * The items of `messages`, read from `topic/partition` in assignment `period`: a number shared
   * by the partitions assigned together, higher for every new assignment. The first call with a
   * higher `period` forgets every key seen before (see the module documentation).
   */
  items(
    topic: string,
    partition: number,
    period: number,
    messages: readonly KafkaIncomingMessage[],
  ): BatchItem[];
  /** How many records were invalid so far. */
  readonly invalid: number;
  /** How many distinct keys (and keyless partitions) the reader remembers now. */
  readonly keys: number;
}

/**
 * Options of {@linkcode createRecordReader}.
 *
 * @example
 * ```ts
 * import type { RecordReaderOptions } from "@impel/impel/sources/kafka";
 * const options: RecordReaderOptions = { defaultCategory: "Kafka" };
 * ```
 */
export interface RecordReaderOptions {
  /** The category of streams for keys that are not stream names. */
  readonly defaultCategory: string;
  /** Maps a non-empty key to its stream instead of {@linkcode keyStream}; called once per key. */
  readonly keyToStream?: (key: Uint8Array) => StreamName;
}

/**
 * Creates the reader that turns messages into items as described in the module documentation.
 * It remembers each distinct key of the current assignment (its bytes and its stream's state).
 *
 * @example
 * ```ts
 * import { createRecordReader } from "@impel/impel/sources/kafka";
 * const reader = createRecordReader({ defaultCategory: "Kafka" });
 * const key = new TextEncoder().encode("Order-1");
 * const items = reader.items("orders", 0, 1, [{ key, value: null, timestamp: "0", offset: "0" }]);
 * console.log(items[0].stream, items[0].event.index); // Order-1 0
 * ```
 */
export function createRecordReader(options: RecordReaderOptions): RecordReader {
  const { defaultCategory } = options;
  const { keyToStream } = options;
  const log = getLogger(["impel", "kafka", "source"]);
  let states = new Map<StreamName, StreamState>();
  let keys = createKeyTable<StreamState>();
  let keyless = new Map<string, StreamState>();
  let keyCount = 0;
  let invalidCount = 0;
  let assignment = -Infinity;

  const stateOf = (stream: StreamName): StreamState => {
    let s = states.get(stream);
    if (s === undefined) {
      s = { stream, plainNext: 0, kind: undefined, spanNext: 0, brokenAt: undefined };
      states.set(stream, s);
    }
    return s;
  };

  // Decoding each key and looking the string up costs several times as much as finding its bytes
  // in a table of their own (./kafka_keys.ts), so keys are interned by their bytes.
  const keyState = (bytes: Uint8Array | null, topic: string, partition: number): StreamState => {
    if (bytes === null || bytes.length === 0) {
      const tranche = `${topic}/${partition}`;
      let s = keyless.get(tranche);
      if (s === undefined) {
        keyless.set(tranche, s = stateOf(noKeyStream(topic, partition, defaultCategory)));
        keyCount++;
      }
      return s;
    }
    let s = findKey(keys, bytes);
    if (s === undefined) {
      // A user's mapping is given a copy, which it may keep; the default only reads the bytes.
      s = stateOf(
        keyToStream === undefined
          ? keyStream(bytes, defaultCategory)
          : keyToStream(Uint8Array.prototype.slice.call(bytes)),
      );
      addKey(keys, bytes, s);
      keyCount++;
    }
    return s;
  };

  return {
    get invalid() {
      return invalidCount;
    },
    get keys() {
      return keyCount;
    },
    items(topic, partition, period, messages) {
      if (period > assignment) {
        // A new assignment: the sink forgot every stream of the previous one (see above).
        assignment = period;
        states = new Map();
        keys = createKeyTable();
        keyless = new Map();
        keyCount = 0;
      }
      const tranche = `${topic}/${partition}`;
      const idPrefix = `${tranche}/`;
      const items: BatchItem[] = [];
      // Messages produced together share a timestamp; a Date per message would be the costliest
      // part of building events, so consecutive equal timestamps share one.
      let timestamp = "", time = new Date(0);
      const rawEvent = (m: KafkaIncomingMessage, index: number): StreamEvent => {
        if (m.timestamp !== timestamp) {
          timestamp = m.timestamp;
          time = new Date(Number(timestamp));
        }
        const meta: KafkaMessageMeta = { topic, partition, offset: m.offset, headers: m.headers };
        return {
          index,
          type: topic,
          data: m.value, // the value's bytes as they are: a view of the fetch, not a copy
          meta,
          id: idPrefix + m.offset, // one concatenation per message, not two
          time,
          size: (m.value?.byteLength ?? 0) + (m.key?.byteLength ?? 0),
        };
      };
      const invalid = (
        s: StreamState,
        m: KafkaIncomingMessage,
        reason: KafkaInvalidReason,
        problem: string,
        cause?: unknown,
      ) => {
        const index = s.kind === "span" ? s.spanNext++ : s.plainNext++;
        s.brokenAt ??= m.offset;
        invalidCount++;
        const error = new KafkaInvalidRecordError(
          reason,
          tranche,
          m.offset,
          s.stream,
          problem,
          cause === undefined ? undefined : { cause },
        );
        log.warn("invalid Kafka record handed to the failure policy of {stream}: {error}", {
          stream: s.stream,
          error: error.message,
        });
        items.push({ stream: s.stream, event: rawEvent(m, index), invalid: error });
      };
      for (const m of messages) {
        const s = keyState(m.key, topic, partition);
        const span = isSpanMessage(m.headers);
        if (s.brokenAt !== undefined) {
          invalid(s, m, "afterInvalid", `follows the invalid record at offset ${s.brokenAt}`);
          continue;
        }
        if (!span) {
          if (s.kind === "span") {
            invalid(s, m, "plainOnSpanStream", "is a plain message on a stream of spans");
            continue;
          }
          s.kind = "plain";
          items.push({ stream: s.stream, event: rawEvent(m, s.plainNext++) });
          continue;
        }
        if (s.kind === "plain") {
          invalid(s, m, "spanOnPlainStream", "is a span on a stream of plain messages");
          continue;
        }
        let events: StreamEvent[];
        try {
          events = parseSpanMessage(m.value);
        } catch (e) {
          invalid(s, m, "corruptSpan", `is not a valid span: ${(e as Error).message}`, e);
          continue;
        }
        const first = events[0].index;
        if (s.kind === "span" && first > s.spanNext) {
          invalid(s, m, "spanGap", `starts at index ${first}, expected ${s.spanNext} (a gap)`);
          continue;
        }
        s.kind = "span";
        // A span starting below the next index repeats events already read (a re-sent span or
        // a re-read after a restart): the scheduler dedups them by index.
        const end = first + events.length;
        if (end > s.spanNext) s.spanNext = end;
        for (const event of events) items.push({ stream: s.stream, event });
      }
      return items;
    },
  };
}
