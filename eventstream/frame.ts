/**
 * The frame format shared by every event stream backend (memory, local files, append blobs): one
 * frame per event, little-endian, so that a stream is a plain concatenation of frames and a
 * backup is a byte-for-byte copy.
 *
 * ```
 * offset  size  field
 * 0       4     n: payload length in bytes (u32)
 * 4       8     sequence number (u64; the first event is 1, each next one is +1)
 * 12      4     rest: how many frames of the same append follow this one (u32; 0 = last)
 * 16      n     payload: the event as UTF-8 JSON
 * 16+n    4     CRC-32 (IEEE, as zlib and PNG) of bytes [0, 16+n)
 * ```
 *
 * `rest` makes an append of several events atomic on storage that can tear a write (a file
 * after a crash): a reader that finds an append cut short drops all of it, not just its tail.
 *
 * @module
 */
import { ImpelError, InvalidArgumentError } from "../core/errors.ts";

/**
 * Bytes of a frame besides its payload: the 16-byte header and the 4-byte checksum.
 *
 * @example
 * ```ts
 * import { encodeFrames, FRAME_OVERHEAD } from "@impel/impel/eventstream";
 * console.log(encodeFrames(1, [1, 2]).length === 2 * (FRAME_OVERHEAD + 1)); // true
 * ```
 */
export const FRAME_OVERHEAD = 20;

/**
 * The default largest payload (4 MiB); a length above it is read as corruption.
 *
 * @example
 * ```ts
 * import { DEFAULT_MAX_PAYLOAD, memoryStorage } from "@impel/impel/eventstream";
 * const storage = memoryStorage({ maxPayload: DEFAULT_MAX_PAYLOAD / 4 }); // 1 MiB per event
 * await storage.close();
 * ```
 */
export const DEFAULT_MAX_PAYLOAD = 4 * 1024 * 1024;

/**
 * One event of the stream with its sequence number.
 *
 * @example
 * ```ts
 * import type { StoredEvent } from "@impel/impel/eventstream";
 * const e: StoredEvent<{ word: string }> = { seq: 1, event: { word: "hello" } };
 * console.log(e.seq); // 1
 * ```
 */
export interface StoredEvent<E = unknown> {
  /** The sequence number: 1 for the first event of the stream, +1 for each next one. */
  readonly seq: number;
  /** The event, as decoded from its JSON payload. */
  readonly event: E;
}

/**
 * Bytes of a stream that are not a valid frame where one must be: a checksum that does not
 * match, a length beyond the limit, a sequence number out of order, a payload that is not
 * JSON. `position` is the byte offset of the frame in `where` (a segment file, a blob).
 *
 * @example
 * ```ts
 * import { CorruptFrameError, decodeFrames, encodeFrames } from "@impel/impel/eventstream";
 * const bytes = encodeFrames(1, [{ a: 1 }, { b: 2 }]);
 * bytes[20] ^= 0xff; // a byte of the first frame's payload
 * try {
 *   decodeFrames(bytes, { where: "test", expectedSeq: 1 });
 * } catch (e) {
 *   if (e instanceof CorruptFrameError) console.log(e.position, e.reason); // 0 "checksum"
 * }
 * ```
 */
export class CorruptFrameError extends ImpelError {
  /** Where the frame is: a file path, a blob name, `memory`. */
  readonly where: string;
  /** The byte offset of the bad frame within `where`. */
  readonly position: number;
  /** What was wrong: `checksum`, `length`, `sequence`, `payload`, `truncated`. */
  readonly reason: "checksum" | "length" | "sequence" | "payload" | "truncated";
  /** Creates the error. */
  constructor(
    where: string,
    position: number,
    reason: CorruptFrameError["reason"],
    detail: string,
  ) {
    super("CorruptFrame", `corrupt frame in ${where} at byte ${position} (${reason}): ${detail}`);
    this.where = where;
    this.position = position;
    this.reason = reason;
  }
}

const table = /* @__PURE__ */ (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[i] = c >>> 0;
  }
  return t;
})();

/**
 * CRC-32 (IEEE 802.3, the checksum of zlib, gzip and PNG) of `bytes[from, to)`, in plain
 * TypeScript: no web standard offers one, and node:zlib's would tie the format to Node APIs.
 *
 * @example
 * ```ts
 * import { crc32 } from "@impel/impel/eventstream";
 * console.log(crc32(new TextEncoder().encode("123456789")).toString(16)); // "cbf43926"
 * ```
 */
export function crc32(bytes: Uint8Array, from = 0, to = bytes.length): number {
  let c = 0xffffffff;
  for (let i = from; i < to; i++) c = table[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/**
 * Encodes `events` as consecutive frames numbered from `firstSeq`, one append (the last frame
 * has `rest` 0). An event that JSON cannot represent is an {@linkcode InvalidArgumentError}
 * naming it, before anything is encoded.
 *
 * @example
 * ```ts
 * import { encodeFrames, FRAME_OVERHEAD } from "@impel/impel/eventstream";
 * const bytes = encodeFrames(1, ["a"]);
 * console.log(bytes.length === FRAME_OVERHEAD + 3); // true: the payload is `"a"`
 * ```
 */
export function encodeFrames(
  firstSeq: number,
  events: readonly unknown[],
  maxPayload: number = DEFAULT_MAX_PAYLOAD,
): Uint8Array {
  if (!Number.isSafeInteger(firstSeq) || firstSeq < 1) {
    throw new InvalidArgumentError("firstSeq", `must be a positive integer, got ${firstSeq}`);
  }
  const payloads = events.map((e, i) => {
    let text: string | undefined;
    try {
      text = JSON.stringify(e);
    } catch (error) {
      throw new InvalidArgumentError(`events[${i}]`, `cannot be written as JSON: ${error}`);
    }
    if (text === undefined) {
      throw new InvalidArgumentError(`events[${i}]`, `cannot be written as JSON (${typeof e})`);
    }
    const bytes = encoder.encode(text);
    if (bytes.length > maxPayload) {
      throw new InvalidArgumentError(
        `events[${i}]`,
        `is ${bytes.length} bytes of JSON, above the limit of ${maxPayload}`,
      );
    }
    return bytes;
  });
  let size = 0;
  for (const p of payloads) size += FRAME_OVERHEAD + p.length;
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  let at = 0;
  for (const [i, p] of payloads.entries()) {
    const seq = firstSeq + i;
    view.setUint32(at, p.length, true);
    view.setUint32(at + 4, seq % 0x1_0000_0000, true);
    view.setUint32(at + 8, Math.floor(seq / 0x1_0000_0000), true);
    view.setUint32(at + 12, payloads.length - 1 - i, true);
    out.set(p, at + 16);
    view.setUint32(at + 16 + p.length, crc32(out, at, at + 16 + p.length), true);
    at += FRAME_OVERHEAD + p.length;
  }
  return out;
}

/**
 * Options of {@linkcode decodeFrames}.
 *
 * @example
 * ```ts
 * import { decodeFrames, type DecodeOptions, encodeFrames } from "@impel/impel/eventstream";
 * const options: DecodeOptions = { where: "segment 1", expectedSeq: 1, offset: 0 };
 * console.log(decodeFrames(encodeFrames(1, [1, 2]), options).events.length); // 2
 * ```
 */
export interface DecodeOptions {
  /** Named in errors (a path, a blob). */
  readonly where: string;
  /** The sequence number the first frame must carry. */
  readonly expectedSeq: number;
  /** The byte offset of `bytes[0]` within `where`, for the positions in errors (default 0). */
  readonly offset?: number;
  /** The largest payload accepted (default {@linkcode DEFAULT_MAX_PAYLOAD}). */
  readonly maxPayload?: number;
  /** Stop after this many events (default: all); always at the end of a frame. */
  readonly maxCount?: number;
}

/**
 * What {@linkcode decodeFrames} read: whole appends only (a frame with `rest` > 0 is returned
 * only together with the frames after it, up to the one with `rest` 0, unless `maxCount` stops
 * the read inside an append that is wholly present).
 *
 * @example
 * ```ts
 * import { decodeFrames, encodeFrames } from "@impel/impel/eventstream";
 * const bytes = encodeFrames(1, [1, 2]);
 * const cut = decodeFrames(bytes.subarray(0, bytes.length - 1), { where: "x", expectedSeq: 1 });
 * console.log(cut.events.length, cut.end, cut.incomplete); // 0 0 true
 * ```
 */
export interface Decoded<E = unknown> {
  /** The events, in order. */
  readonly events: StoredEvent<E>[];
  /** The byte offset (relative to `bytes`) after the last returned event's frame. */
  readonly end: number;
  /** True when bytes after `end` are the start of a frame or append not wholly present. */
  readonly incomplete: boolean;
}

/**
 * Decodes the frames of `bytes`, verifying each checksum and that sequence numbers run on from
 * `expectedSeq`. Bytes that cannot be a frame are a {@linkcode CorruptFrameError} naming their
 * position; bytes that may be a frame cut short by the end of `bytes` end the read with
 * `incomplete` (the caller decides whether that is a torn write or just the end of a chunk).
 *
 * @example
 * ```ts
 * import { decodeFrames, encodeFrames } from "@impel/impel/eventstream";
 * const { events } = decodeFrames(encodeFrames(5, [{ hello: "world" }]), { where: "x", expectedSeq: 5 });
 * console.log(events); // [{ seq: 5, event: { hello: "world" } }]
 * ```
 */
export function decodeFrames<E = unknown>(bytes: Uint8Array, options: DecodeOptions): Decoded<E> {
  const offset = options.offset ?? 0;
  const maxPayload = options.maxPayload ?? DEFAULT_MAX_PAYLOAD;
  const maxCount = options.maxCount ?? Infinity;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const events: StoredEvent<E>[] = [];
  let pending: StoredEvent<E>[] = [];
  let at = 0;
  let end = 0;
  let seq = options.expectedSeq;
  while (at < bytes.length && events.length + pending.length < maxCount) {
    if (bytes.length - at < 16) return { events, end, incomplete: true };
    const n = view.getUint32(at, true);
    if (n > maxPayload) {
      throw new CorruptFrameError(
        options.where,
        offset + at,
        "length",
        `payload length ${n} is above the limit of ${maxPayload}`,
      );
    }
    if (bytes.length - at < FRAME_OVERHEAD + n) return { events, end, incomplete: true };
    const stored = crc32(bytes, at, at + 16 + n);
    if (view.getUint32(at + 16 + n, true) !== stored) {
      throw new CorruptFrameError(
        options.where,
        offset + at,
        "checksum",
        `CRC-32 ${view.getUint32(at + 16 + n, true).toString(16)} recorded, ${
          stored.toString(16)
        } computed`,
      );
    }
    const got = view.getUint32(at + 4, true) + view.getUint32(at + 8, true) * 0x1_0000_0000;
    if (got !== seq) {
      throw new CorruptFrameError(
        options.where,
        offset + at,
        "sequence",
        `sequence number ${got} where ${seq} was expected`,
      );
    }
    let event: E;
    try {
      event = JSON.parse(decoder.decode(bytes.subarray(at + 16, at + 16 + n)));
    } catch (error) {
      throw new CorruptFrameError(
        options.where,
        offset + at,
        "payload",
        `the payload of event ${seq} is not UTF-8 JSON (${error})`,
      );
    }
    pending.push({ seq, event });
    seq++;
    at += FRAME_OVERHEAD + n;
    const rest = view.getUint32(at - FRAME_OVERHEAD - n + 12, true);
    if (rest === 0 || events.length + pending.length >= maxCount) {
      // Within an append cut by maxCount, the rest is known to be present only if the frame
      // says rest 0; otherwise the caller reads on from `end` next time, which is a frame start.
      if (rest !== 0 && !appendPresent(bytes, view, at, rest, maxPayload)) {
        return { events, end, incomplete: true };
      }
      for (const e of pending) events.push(e);
      pending = [];
      end = at;
    }
  }
  return { events, end, incomplete: pending.length > 0 };
}

/** True when the `rest` frames after `at` are all present in full (checksums checked later). */
function appendPresent(
  bytes: Uint8Array,
  view: DataView,
  at: number,
  rest: number,
  maxPayload: number,
): boolean {
  for (let k = 0; k < rest; k++) {
    if (bytes.length - at < 16) return false;
    const n = view.getUint32(at, true);
    if (n > maxPayload || bytes.length - at < FRAME_OVERHEAD + n) return false;
    at += FRAME_OVERHEAD + n;
  }
  return true;
}
