/**
 * Events and spans, and the per-stream merge and dedup rules the scheduler relies on.
 *
 * @module
 */
import type { StreamName } from "./streamName.ts";

/**
 * One event of a stream. `index` is its 0-based position in the stream; `size` is an estimate
 * of its bytes, used for batching limits.
 *
 * @example
 * ```ts
 * import type { StreamEvent } from "@impel/impel";
 * import { createMemoryStore } from "@impel/impel/sources/memory";
 * const store = createMemoryStore();
 * await store.append("Order-1", [{ type: "Placed", data: { total: 3 } }], 0);
 * const [placed]: StreamEvent[] = await store.readStream("Order-1");
 * console.log(placed.index, placed.type, placed.data); // 0 "Placed" { total: 3 }
 * ```
 *
 * @category Events
 */
export interface StreamEvent<Data = unknown, Meta = unknown> {
  /** 0-based position of the event in its stream. */
  readonly index: number;
  /** The event type, e.g. `CheckedIn`. */
  readonly type: string;
  /** The event body. */
  readonly data: Data;
  /** Metadata, if any. */
  readonly meta: Meta;
  /** A unique id of the event (a UUID where the store has one). */
  readonly id: string;
  /** When the event was written. */
  readonly time: Date;
  /** Correlation id, if recorded. */
  readonly correlationId?: string;
  /** Causation id, if recorded. */
  readonly causationId?: string;
  /** Approximate size in bytes, used by the byte limits of batching. */
  readonly size: number;
}

/**
 * Consecutive events of one stream: `events[i].index === index + i`, ending before `next`.
 *
 * @example
 * ```ts
 * import { type Span, spanNext } from "./event.ts";
 * const span: Span = { stream: "Order-1", index: 0, events: [] };
 * spanNext(span); // 0
 * ```
 *
 * @category Events
 */
export interface Span<E = StreamEvent> {
  /** The stream the events belong to. */
  readonly stream: StreamName;
  /** The index of the first event. */
  readonly index: number;
  /** The events, contiguous by index. */
  readonly events: readonly E[];
}

/**
 * The index after the last event of a span.
 *
 * @example
 * ```ts
 * import { spanNext } from "./event.ts";
 * spanNext({ stream: "A-1", index: 3, events: [] }); // 3
 * ```
 *
 * @category Events
 */
export function spanNext(span: Span<unknown>): number {
  return span.index + span.events.length;
}

/**
 * Estimates the bytes of an event body for batching limits: strings by their UTF-8 length, byte
 * arrays by length, other values by the UTF-8 length of their JSON form. Cheap enough for sources
 * to call once per event.
 *
 * @example
 * ```ts
 * import { estimateSize } from "@impel/impel";
 * estimateSize("abc"); // 3
 * estimateSize("€"); // 3
 * ```
 *
 * @category Events
 */
export function estimateSize(value: unknown): number {
  if (value === undefined || value === null) return 0;
  if (typeof value === "string") return utf8Length(value);
  if (value instanceof Uint8Array) return value.byteLength;
  try {
    return utf8Length(JSON.stringify(value) ?? "");
  } catch {
    return 0;
  }
}

/**
 * The length of `text` in UTF-8 bytes, without encoding it: limits are bytes (a `€` is three),
 * and a loop over char codes costs about a nanosecond a character.
 *
 * @example
 * ```ts
 * import { utf8Length } from "./event.ts";
 * console.log(utf8Length("abc"), utf8Length("€"), utf8Length("😀")); // 3 3 4
 * ```
 */
export function utf8Length(text: string): number {
  let bytes = text.length;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) continue;
    if (c < 0x800) bytes += 1;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
      const d = text.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        bytes += 2; // a surrogate pair: 2 UTF-16 units, 4 bytes
        i++;
      } else bytes += 2;
    } else bytes += 2;
  }
  return bytes;
}

/**
 * Inserts `event` into `events` (kept sorted by index, no duplicates), ignoring it if its index
 * is below `writePos` or already present. Returns whether it was added. Appending the next
 * index is O(1); an out-of-order arrival costs a binary search and a splice.
 *
 * @example
 * ```ts
 * import { insertEvent, type StreamEvent } from "./event.ts";
 * const ev = (index: number) => ({ index, type: "T", data: null, meta: null, id: `${index}`, time: new Date(0), size: 0 });
 * const buf: StreamEvent[] = [ev(2)];
 * insertEvent(buf, ev(1), 0); // true: buf holds 1, 2
 * insertEvent(buf, ev(2), 0); // false: duplicate
 * ```
 *
 * @category Events
 */
export function insertEvent<E extends { readonly index: number }>(
  events: E[],
  event: E,
  writePos: number,
): boolean {
  const index = event.index;
  if (index < writePos) return false;
  const n = events.length;
  if (n === 0 || events[n - 1].index < index) {
    events.push(event);
    return true;
  }
  let lo = 0, hi = n;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (events[mid].index < index) lo = mid + 1;
    else hi = mid;
  }
  if (events[lo].index === index) return false;
  events.splice(lo, 0, event);
  return true;
}

/**
 * Merges spans of one stream that may overlap, repeat or arrive out of order into contiguous
 * spans, dropping every event below `writePos`. The result is sorted and has no duplicates;
 * a gap between indexes starts a new span.
 *
 * @example
 * ```ts
 * import { mergeSpans, type StreamEvent } from "./event.ts";
 * const ev = (index: number) => ({ index, type: "T", data: null, meta: null, id: `${index}`, time: new Date(0), size: 0 });
 * const merged = mergeSpans([
 *   { stream: "A-1", index: 2, events: [ev(2), ev(3)] },
 *   { stream: "A-1", index: 0, events: [ev(0), ev(1), ev(2)] },
 * ], 1);
 * // one span: index 1, events 1, 2, 3
 * ```
 *
 * @category Events
 */
export function mergeSpans<E extends { readonly index: number }>(
  spans: readonly Span<E>[],
  writePos = 0,
): Span<E>[] {
  if (spans.length === 0) return [];
  const stream = spans[0].stream;
  const all: E[] = [];
  for (const span of spans) for (const e of span.events) insertEvent(all, e, writePos);
  const out: Span<E>[] = [];
  let start = 0;
  for (let i = 1; i <= all.length; i++) {
    if (i === all.length || all[i].index !== all[i - 1].index + 1) {
      out.push({ stream, index: all[start].index, events: all.slice(start, i) });
      start = i;
    }
  }
  return out;
}
