/**
 * Reading one segment of a stream (a file, a blob) from a known frame boundary: the loop the
 * file and blob backends share. Internal to the event stream backends.
 *
 * @module
 */
import { CorruptFrameError, decodeFrames, type StoredEvent } from "./frame.ts";

/** Where a read of a segment starts and what it collects. */
export interface SegmentRead {
  /** The segment's name, for errors (a path, a blob name). */
  readonly where: string;
  /** What it is called in errors ("segment", "blob"). */
  readonly noun: string;
  /** The event that starts at `pos`. */
  readonly seq: number;
  /** A frame boundary to read from. */
  readonly pos: number;
  /** How far the segment's bytes go. */
  readonly size: number;
  /** The first event wanted; earlier ones are decoded and passed over. */
  readonly target: number;
  /** Collects the events read; the read stops once it holds `maxCount`. */
  readonly out: StoredEvent[];
  /** Most events to collect. */
  readonly maxCount: number;
  /** The largest payload a frame may have. */
  readonly maxPayload: number;
  /** Bytes fetched at once to begin with; doubled while a chunk holds no whole frame. */
  readonly chunk: number;
  /** The bytes at `[pos, pos + length)`. */
  fetch(pos: number, length: number): Promise<Uint8Array>;
  /** Called before a fetch twice as large (a cache of the last chunk is then stale). */
  grown?(): void;
  /** Called after each decoded chunk with the next event and its frame boundary. */
  advanced(seq: number, pos: number): void;
}

/**
 * Reads events from `r.pos` to the end of the segment (or until `r.out` is full); returns the
 * next event and where it starts. A chunk that ends inside a frame is read again larger; the
 * segment ending inside one is a {@linkcode CorruptFrameError}.
 *
 * @example
 * ```ts ignore
 * const { seq, pos } = await readSegment({ where, noun: "segment", seq: 1, pos: 0, size, ... });
 * ```
 */
export async function readSegment(r: SegmentRead): Promise<{ seq: number; pos: number }> {
  let { seq, pos, chunk } = r;
  while (pos < r.size && r.out.length < r.maxCount) {
    const bytes = await r.fetch(pos, Math.min(chunk, r.size - pos));
    const decoded = decodeFrames(bytes, {
      where: r.where,
      expectedSeq: seq,
      offset: pos,
      maxPayload: r.maxPayload,
      maxCount: r.maxCount - r.out.length + Math.max(0, r.target - seq),
    });
    if (decoded.events.length === 0) {
      if (pos + bytes.length >= r.size) {
        throw new CorruptFrameError(
          r.where,
          pos,
          "truncated",
          `the ${r.noun} ends inside a frame (event ${seq})`,
        );
      }
      chunk *= 2;
      r.grown?.();
      continue;
    }
    for (const e of decoded.events) if (e.seq >= r.target) r.out.push(e);
    seq = decoded.events.at(-1)!.seq + 1;
    pos += decoded.end;
    r.advanced(seq, pos);
  }
  return { seq, pos };
}

/** The next segment must start with the event after this one's last, once this one is read. */
export function checkNextSegment(
  noun: string,
  next: { readonly where: string; readonly first: number } | undefined,
  read: { readonly seq: number; readonly pos: number },
  size: number,
): void {
  if (next !== undefined && read.pos >= size && read.seq !== next.first) {
    throw new CorruptFrameError(
      next.where,
      0,
      "sequence",
      `the previous ${noun} ends at event ${read.seq - 1}, this one starts at ${next.first}`,
    );
  }
}
