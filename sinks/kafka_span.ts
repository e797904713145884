/**
 * The span format shared by the Kafka sinks and the Kafka source: how consecutive events of one
 * stream travel as one message (key = stream name, header `impel-span`, value = JSON with the
 * first index and the events), and how a consumed message is read back into events. Rendering
 * and parsing live together so that the two sides cannot drift apart.
 *
 * @module
 */
import { ImpelError } from "../core/errors.ts";
import type { StreamEvent } from "../core/event.ts";
import type { StreamName } from "../core/streamName.ts";

/**
 * A message to produce: the shape of a kafkajs `Message`.
 *
 * @example
 * ```ts
 * import type { KafkaOutgoingMessage } from "@impel/impel/sinks/kafka";
 * const message: KafkaOutgoingMessage = { key: "Order-1", value: "{}" };
 * ```
 */
export interface KafkaOutgoingMessage {
  /** The key; impel's sinks use the stream name, so that a stream stays in one partition. */
  readonly key?: string | Uint8Array | null;
  /** The value. */
  readonly value: string | Uint8Array | null;
  /** Headers, if any. */
  readonly headers?: Readonly<
    Record<string, string | Uint8Array | (string | Uint8Array)[] | undefined>
  >;
  /** An explicit partition (default: chosen by the producer's partitioner from the key). */
  readonly partition?: number;
}

/**
 * The header that marks a message whose value is a span rendered by impel.
 *
 * @example
 * ```ts
 * import { SPAN_HEADER } from "@impel/impel/sinks/kafka";
 * const isSpan = (headers: Record<string, unknown>) => headers[SPAN_HEADER] !== undefined;
 * ```
 */
export const SPAN_HEADER = "impel-span";
/** The version of the rendering, written as the header's value. */
const SPAN_VERSION = "1";

/**
 * A message would exceed the producer's size limit even on its own (one event larger than
 * `maxBytesPerMessage`).
 *
 * @example
 * ```ts
 * import { KafkaMessageTooLargeError } from "@impel/impel/sinks/kafka";
 * const e = new KafkaMessageTooLargeError("Order-1", 3, 2_000_000, 900_000);
 * console.log(e.code); // "KafkaMessageTooLarge"
 * ```
 */
export class KafkaMessageTooLargeError extends ImpelError {
  /** The stream whose event is too large. */
  readonly stream: StreamName;
  /** The index of the event. */
  readonly index: number;
  /** Creates the error for event `index` of `stream` rendered to `bytes` (limit `limit`). */
  constructor(stream: StreamName, index: number, bytes: number, limit: number) {
    super(
      "KafkaMessageTooLarge",
      `event ${index} of ${stream} renders to ${bytes} bytes, over maxBytesPerMessage ${limit}`,
    );
    this.stream = stream;
    this.index = index;
  }
}

interface RenderedEvent {
  t: string;
  id: string;
  ts: number;
  d?: unknown;
  b?: string;
  m?: unknown;
  c?: string;
  k?: string;
}

/** One event as the JSON text that goes into a span message; bytes are base64 in `b`. */
function renderEvent(e: StreamEvent): string {
  const r: RenderedEvent = { t: e.type, id: e.id, ts: e.time.getTime() };
  if (e.data instanceof Uint8Array) r.b = e.data.toBase64();
  else if (e.data !== undefined) r.d = e.data;
  if (e.meta !== undefined && e.meta !== null) r.m = e.meta;
  if (e.correlationId !== undefined) r.c = e.correlationId;
  if (e.causationId !== undefined) r.k = e.causationId;
  return JSON.stringify(r);
}

const spanHeaders = { [SPAN_HEADER]: SPAN_VERSION };

function spanMessage(
  stream: StreamName,
  index: number,
  rendered: readonly string[],
): KafkaOutgoingMessage {
  return { key: stream, value: `{"i":${index},"e":[${rendered.join(",")}]}`, headers: spanHeaders };
}

/**
 * Renders consecutive events of one stream into messages of at most `maxEvents` events and about
 * `maxBytes` bytes each (string length of the JSON value), in index order.
 *
 * @example
 * ```ts
 * import { renderSpanMessages } from "@impel/impel/sinks/kafka";
 * const ev = { index: 0, type: "Placed", data: { total: 3 }, meta: null, id: "e0", time: new Date(0), size: 12 };
 * const messages = renderSpanMessages("Order-1", [ev], 100, 100_000);
 * // one message: key "Order-1", header impel-span, value {"i":0,"e":[...]}
 * ```
 */
export function renderSpanMessages(
  stream: StreamName,
  events: readonly StreamEvent[],
  maxEvents: number,
  maxBytes: number,
): KafkaOutgoingMessage[] {
  const messages: KafkaOutgoingMessage[] = [];
  let chunk: string[] = [];
  let chunkIndex = events.length > 0 ? events[0].index : 0;
  let bytes = 0;
  const envelope = 16 + String(chunkIndex).length;
  for (const e of events) {
    const part = renderEvent(e);
    if (part.length + envelope > maxBytes) {
      throw new KafkaMessageTooLargeError(stream, e.index, part.length + envelope, maxBytes);
    }
    if (
      chunk.length > 0 &&
      (chunk.length >= maxEvents || bytes + part.length + 1 + envelope > maxBytes)
    ) {
      messages.push(spanMessage(stream, chunkIndex, chunk));
      chunk = [];
      bytes = 0;
      chunkIndex = e.index;
    }
    chunk.push(part);
    bytes += part.length + 1;
  }
  if (chunk.length > 0) messages.push(spanMessage(stream, chunkIndex, chunk));
  return messages;
}

/**
 * Whether a consumed message's headers mark it as a span rendered by impel.
 *
 * @example
 * ```ts
 * import { isSpanMessage } from "@impel/impel/sinks/kafka";
 * isSpanMessage({ "impel-span": "1" }); // true
 * isSpanMessage({}); // false
 * ```
 */
export function isSpanMessage(headers: Readonly<Record<string, unknown>> | undefined): boolean {
  return headers !== undefined && headers[SPAN_HEADER] !== undefined;
}

const decoder = new TextDecoder("utf-8", { fatal: true });

/**
 * A message marked `impel-span` whose value is not a span this version can read: not UTF-8 JSON,
 * no first index, no events, or an event without its type, id or time.
 *
 * @example
 * ```ts
 * import { InvalidSpanMessageError, parseSpanMessage } from "@impel/impel/sinks/kafka";
 * try {
 *   parseSpanMessage(new TextEncoder().encode("{}"));
 * } catch (e) {
 *   console.log(e instanceof InvalidSpanMessageError, (e as InvalidSpanMessageError).code); // true "InvalidSpanMessage"
 * }
 * ```
 */
export class InvalidSpanMessageError extends ImpelError {
  /** Creates the error; `problem` says what is wrong with the value. */
  constructor(problem: string, options?: ErrorOptions) {
    super("InvalidSpanMessage", `a message marked ${SPAN_HEADER} ${problem}`, options);
  }
}

/**
 * Parses the value of a span message back into the events it carries, with their original
 * indexes. Throws {@linkcode InvalidSpanMessageError} if the value is not a span.
 *
 * @example
 * ```ts
 * import { parseSpanMessage, renderSpanMessages } from "@impel/impel/sinks/kafka";
 * const ev = { index: 4, type: "Placed", data: { total: 3 }, meta: null, id: "e4", time: new Date(0), size: 12 };
 * const [message] = renderSpanMessages("Order-1", [ev], 100, 100_000);
 * const events = parseSpanMessage(new TextEncoder().encode(message.value as string));
 * console.log(events[0].index); // 4
 * ```
 */
export function parseSpanMessage(value: Uint8Array | null): StreamEvent[] {
  if (value === null) throw new InvalidSpanMessageError("has no value");
  let parsed: { i?: unknown; e?: unknown } | null;
  try {
    parsed = JSON.parse(decoder.decode(value));
  } catch (e) {
    throw new InvalidSpanMessageError("is not UTF-8 JSON", { cause: e });
  }
  const first = parsed?.i, list = parsed?.e;
  if (typeof first !== "number" || !Number.isSafeInteger(first) || first < 0) {
    throw new InvalidSpanMessageError("lacks a first index (a non-negative integer)");
  }
  if (!Array.isArray(list) || list.length === 0) {
    throw new InvalidSpanMessageError("carries no events");
  }
  // The rendered length spread over the events is close enough for batching limits and avoids
  // re-serialising every event.
  const size = Math.ceil(value.byteLength / list.length);
  const events: StreamEvent[] = new Array(list.length);
  for (let n = 0; n < list.length; n++) {
    const r = list[n] as RenderedEvent | null;
    if (
      typeof r !== "object" || r === null || typeof r.t !== "string" || typeof r.id !== "string" ||
      typeof r.ts !== "number" || (r.b !== undefined && typeof r.b !== "string") ||
      (r.c !== undefined && typeof r.c !== "string") ||
      (r.k !== undefined && typeof r.k !== "string")
    ) {
      throw new InvalidSpanMessageError(`has a malformed event at position ${n}`);
    }
    let data: unknown = r.d;
    if (r.b !== undefined) {
      try {
        data = Uint8Array.fromBase64(r.b);
      } catch (e) {
        throw new InvalidSpanMessageError(`has bad base64 data at position ${n}`, { cause: e });
      }
    }
    events[n] = {
      index: first + n,
      type: r.t,
      data,
      meta: r.m ?? null,
      id: r.id,
      time: new Date(r.ts),
      correlationId: r.c,
      causationId: r.k,
      size,
    };
  }
  return events;
}
