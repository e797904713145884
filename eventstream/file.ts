/**
 * Event stream storage in local files: the embedded default that persists, for development and
 * single-process use. A directory holds append-only segment files named by the sequence number
 * of their first event (`00000000000000000001.seg`), each a concatenation of frames
 * (`eventstream/frame.ts`), a `LOCK` file naming the process that writes, and the service's
 * snapshots when kept here (`snapshots`: `<Name>.snapshot.json`, each replaced atomically).
 *
 * - One writer: opening a directory whose lock is held by a live process rejects with
 *   {@linkcode StorageLockedError}; a lock left by a process that died (SIGKILL) is taken over.
 *   Readers (`readOnly`) take no lock and see what the writer appended on each `last()`/`read`.
 * - Or several writers on one host (`shared: true`): each append takes the lock for itself
 *   (waiting while another process holds it), reads what others appended (then it is a
 *   conflict, as on blobs) and, as at open, truncates a torn tail a killed writer left, then
 *   writes and lets the lock go. Slower per append (a lock file made and removed each time).
 * - Durability: with `fsync: "always"` (default) an append resolves only after its bytes (and a
 *   new segment's directory entry) are fsynced, so it survives a power loss; with `"never"` it
 *   resolves once the bytes are written to the OS, which survives the process being killed but
 *   not the machine going down.
 * - Crash safety: an append is written as one positional write after the last whole frame. A
 *   process killed during it leaves at most one partial append at the end of the last segment;
 *   opening for writing detects it (a frame or an append that is not wholly present, or bytes of
 *   a last frame that never reached the disk: zeros, a bad checksum ending at the end of file)
 *   and truncates it, logging a warning. It never was acknowledged, and it is never read as an
 *   event. Anything else that does not verify is {@linkcode CorruptFrameError} at its position.
 *
 * @module
 */
import { mkdir, open, readdir, unlink } from "node:fs/promises";
import { syncDir, takeLock } from "../core/localfile.ts";
import type { FileHandle } from "node:fs/promises";
import { getLogger } from "@logtape/logtape";
import { checkNextSegment, readSegment } from "./segment.ts";
import { checkInteger, ImpelError, InvalidArgumentError } from "../core/errors.ts";
import {
  CorruptFrameError,
  crc32,
  decodeFrames,
  DEFAULT_MAX_PAYLOAD,
  encodeFrames,
  FRAME_OVERHEAD,
  type StoredEvent,
} from "./frame.ts";
import { AppendConflictError, type EventStorage, StorageClosedError } from "./storage.ts";
import { fileSnapshots, type SnapshotStore } from "./snapshots.ts";

const log = getLogger(["impel", "eventstream", "file"]);

/**
 * Options of {@linkcode fileStorage}.
 *
 * @example
 * ```ts
 * import { fileStorage, type FileStorageOptions } from "@impel/impel/eventstream";
 * const options: FileStorageOptions = { fsync: "always", segmentBytes: 64 * 1024 * 1024 };
 * const storage = await fileStorage(await Deno.makeTempDir(), options);
 * await storage.close();
 * ```
 */
export interface FileStorageOptions {
  /** Named in logs and errors (default: the directory). */
  readonly name?: string;
  /**
   * `"always"` (default): an append resolves after fsync (survives power loss); `"never"`:
   * after the write reaches the OS (survives the process, not the machine).
   */
  readonly fsync?: "always" | "never";
  /** A new segment file is started before an append that would take one past this (64 MiB). */
  readonly segmentBytes?: number;
  /** The largest event payload in bytes (default 4 MiB). */
  readonly maxPayload?: number;
  /** Open to read only: no lock, no appends, no truncation; sees the writer's appends. */
  readonly readOnly?: boolean;
  /**
   * Several writer processes on this host: the lock is held for each append only, which first
   * reads the others' appends (a conflict when there are any). Default `false`: one writer
   * holds the lock from open to close.
   */
  readonly shared?: boolean;
  /** With `shared`, how long an append waits for the lock before {@linkcode StorageLockedError} (10 s). */
  readonly lockWaitMs?: number;
}

/**
 * Another live process holds the directory's lock (or one on another host, whose liveness
 * cannot be checked). The lock file names it; remove it only if that process is gone.
 *
 * @example
 * ```ts
 * import { fileStorage, StorageLockedError } from "@impel/impel/eventstream";
 * const dir = await Deno.makeTempDir();
 * const first = await fileStorage(dir);
 * await fileStorage(dir).catch((e) => console.log(e instanceof StorageLockedError)); // true
 * await first.close();
 * ```
 */
export class StorageLockedError extends ImpelError {
  /** The lock file. */
  readonly path: string;
  /** The process holding it, as the lock file says. */
  readonly pid: number | undefined;
  /** Creates the error. */
  constructor(path: string, holder: { pid?: number; host?: string }) {
    super(
      "StorageLocked",
      `${path} is held by process ${holder.pid ?? "?"} on ${holder.host ?? "?"}: ` +
        `one writer at a time (open with readOnly to read)`,
    );
    this.path = path;
    this.pid = holder.pid;
  }
}

/**
 * Appends to read-only storage.
 *
 * @example
 * ```ts
 * import { fileStorage, ReadOnlyStorageError } from "@impel/impel/eventstream";
 * const storage = await fileStorage(await Deno.makeTempDir(), { readOnly: true });
 * await storage.append(0, [1]).catch((e) => console.log(e instanceof ReadOnlyStorageError)); // true
 * ```
 */
export class ReadOnlyStorageError extends ImpelError {
  /** Creates the error. */
  constructor(storage: string) {
    super("ReadOnlyStorage", `${storage} was opened read-only: it cannot be appended to`);
  }
}

/**
 * File storage: the contract plus where it lives.
 *
 * @example
 * ```ts
 * import { fileStorage, type FileStorage } from "@impel/impel/eventstream";
 * const storage: FileStorage = await fileStorage(await Deno.makeTempDir());
 * console.log(storage.segments().length); // 0 until the first append
 * await storage.close();
 * ```
 */
export interface FileStorage extends EventStorage {
  /** The directory. */
  readonly dir: string;
  /** The segment files, oldest first, with the sequence number of their first event. */
  segments(): { path: string; first: number }[];
  /**
   * Snapshots beside the segments, `<dir>/<Name>.snapshot.json` (see {@linkcode fileSnapshots});
   * read-only storage loads them, and a save rejects with {@linkcode ReadOnlyStorageError}.
   */
  readonly snapshots: SnapshotStore;
}

interface Segment {
  readonly first: number;
  readonly path: string;
  /** Known (seq, offset) frame starts, ascending, so that a read need not scan from 0. */
  readonly marks: { seq: number; offset: number }[];
  /** Where the last read of this segment ended: the next sequential read starts there. */
  cursor?: { seq: number; offset: number };
}

const SEGMENT = /^(\d{20})\.seg$/;
const MARK_EVERY = 256 * 1024;

/**
 * Opens (creating it if needed) file storage in `dir`: takes the lock, finds the segments and
 * checks the last one, truncating a torn tail left by a crash.
 *
 * @example
 * ```ts
 * import { fileStorage } from "@impel/impel/eventstream";
 * const dir = await Deno.makeTempDir();
 * const storage = await fileStorage(dir, { fsync: "never" });
 * await storage.append(0, [{ word: "a" }, { word: "b" }]);
 * await storage.close();
 * const again = await fileStorage(dir);
 * console.log(await again.last()); // 2
 * await again.close();
 * ```
 */
export async function fileStorage(
  dir: string,
  options: FileStorageOptions = {},
): Promise<FileStorage> {
  if (typeof dir !== "string" || dir.length === 0) {
    throw new InvalidArgumentError("dir", "must be a non-empty path");
  }
  const fsync = options.fsync ?? "always";
  if (fsync !== "always" && fsync !== "never") {
    throw new InvalidArgumentError("fsync", `must be "always" or "never", got ${String(fsync)}`);
  }
  const segmentBytes = checkInteger("segmentBytes", options.segmentBytes ?? 64 * 1024 * 1024, 1);
  const maxPayload = checkInteger("maxPayload", options.maxPayload ?? DEFAULT_MAX_PAYLOAD, 1);
  const readOnly = options.readOnly ?? false;
  const shared = options.shared ?? false;
  if (typeof shared !== "boolean") throw new InvalidArgumentError("shared", "must be a boolean");
  if (readOnly && shared) {
    throw new InvalidArgumentError("shared", "is for writers: a readOnly storage takes no lock");
  }
  const lockWaitMs = checkInteger("lockWaitMs", options.lockWaitMs ?? 10_000, 0);
  const name = options.name ?? dir;
  if (!readOnly) await mkdir(dir, { recursive: true });
  const lockPath = `${dir}/LOCK`;
  const lock = () => takeLock(lockPath, (holder) => new StorageLockedError(lockPath, holder));
  /** Takes the lock, waiting while another live process holds it (shared writers). */
  const lockShared = async () => {
    const deadline = Date.now() + lockWaitMs;
    for (;;) {
      try {
        return await lock();
      } catch (error) {
        if (!(error instanceof StorageLockedError) || Date.now() >= deadline) throw error;
      }
      await new Promise((r) => setTimeout(r, 1 + Math.random() * 4));
    }
  };
  if (!readOnly && !shared) await lock();

  let segments: Segment[] = [];
  // The last segment's whole frames end at `end`; `last` is the last sequence number.
  let end = 0;
  let last = 0;
  let writer: FileHandle | undefined;
  let closed = false;
  let broken: unknown;
  let queue: Promise<unknown> = Promise.resolve();

  const list = async () => {
    let names: string[];
    try {
      names = await readdir(dir);
    } catch (error) {
      if ((error as { code?: string }).code === "ENOENT" && readOnly) names = [];
      else throw error;
    }
    const found = names.flatMap((n) => {
      const m = SEGMENT.exec(n);
      return m ? [{ first: Number(m[1]), path: `${dir}/${n}` }] : [];
    }).sort((a, b) => a.first - b.first);
    // Keep what is known of segments already seen (their marks).
    const known = new Map(segments.map((s) => [s.first, s]));
    segments = found.map((f) => known.get(f.first) ?? { ...f, marks: [] });
  };

  /** Reads the last segment on from `end`, moving `end` and `last` past whole appends. */
  const scanTail = async (repair: boolean) => {
    const seg = segments.at(-1);
    if (seg === undefined) return;
    if (end === 0 && last < seg.first - 1) last = seg.first - 1;
    const fh = await open(seg.path, readOnly ? "r" : "r+");
    try {
      const size = (await fh.stat()).size;
      if (await walkHeaders(fh, seg, size)) return;
      let chunk = Math.max(1024 * 1024, maxPayload + FRAME_OVERHEAD);
      while (end < size) {
        const bytes = await readAt(fh, end, Math.min(chunk, size - end));
        let decoded;
        try {
          decoded = decodeFrames(bytes, {
            where: seg.path,
            expectedSeq: last + 1,
            offset: end,
            maxPayload,
          });
        } catch (error) {
          if (!(error instanceof CorruptFrameError) || !repair) throw error;
          if (!(await tornTail(fh, error, size))) throw error;
          // The whole appends before the bad frame stand; the rest is what a crash left.
          const before = decodeFrames(bytes.subarray(0, error.position - end), {
            where: seg.path,
            expectedSeq: last + 1,
            offset: end,
            maxPayload,
          });
          decoded = { ...before, torn: true };
        }
        if (decoded.events.length > 0) {
          last = decoded.events.at(-1)!.seq;
          end += decoded.end;
          if (!("torn" in decoded)) continue;
        }
        if (end + bytes.length < size && !("torn" in decoded)) {
          chunk *= 2; // one append larger than the chunk
          continue;
        }
        // A partial append at the end of the file: a crash while appending. Unless a whole,
        // valid frame of a later event lies beyond it: then a damaged length made a frame look
        // cut short, and truncating would drop acknowledged events.
        if (repair) {
          const rest = await readAt(fh, end, size - end);
          const later = laterFrame(rest, last);
          if (later !== undefined) {
            throw new CorruptFrameError(
              seg.path,
              end,
              "length",
              `the frame of event ${last + 1} does not fit in the file, yet event ${later.seq} ` +
                `follows at byte ${end + later.offset}: damage, not a torn append`,
            );
          }
          log.warn(
            "{storage}: truncating {bytes} bytes of a torn append at byte {at} of {path}",
            { storage: name, bytes: size - end, at: end, path: seg.path },
          );
          await fh.truncate(end);
          await fh.sync();
        }
        break;
      }
    } finally {
      await fh.close();
    }
  };

  /**
   * The quick way through a segment that ends cleanly: follows the frame headers (lengths and
   * sequence numbers) from `end` without checksums or JSON, then verifies the last append in
   * full. True when that found whole appends up to the end of the file; anything unusual (a bad
   * header, a partial append, a bad last append) returns false and the segment is decoded frame
   * by frame instead, which tells a torn tail from damage. Frames before the last append are
   * verified when they are read, like every frame.
   */
  const walkHeaders = async (fh: FileHandle, seg: Segment, size: number): Promise<boolean> => {
    let at = end;
    let seq = last + 1;
    let appendStart = end;
    let appendSeq = seq;
    let lastAppend: { offset: number; seq: number } | undefined;
    let buf: Uint8Array = new Uint8Array(0);
    let bufAt = end;
    let view: DataView = new DataView(buf.buffer);
    while (at < size) {
      if (at + 16 > bufAt + buf.length) {
        if (at + 16 > size) return false;
        buf = await readAt(fh, at, Math.min(1024 * 1024, size - at));
        bufAt = at;
        view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
        if (buf.length < 16) return false;
      }
      const h = at - bufAt;
      const n = view.getUint32(h, true);
      const got = view.getUint32(h + 4, true) + view.getUint32(h + 8, true) * 0x1_0000_0000;
      const rest = view.getUint32(h + 12, true);
      if (n > maxPayload || got !== seq || at + FRAME_OVERHEAD + n > size) return false;
      at += FRAME_OVERHEAD + n;
      seq++;
      if (rest === 0) {
        lastAppend = { offset: appendStart, seq: appendSeq };
        appendStart = at;
        appendSeq = seq;
      }
    }
    if (appendStart !== size || lastAppend === undefined) return at === end;
    try {
      const bytes = await readAt(fh, lastAppend.offset, size - lastAppend.offset);
      const d = decodeFrames(bytes, {
        where: seg.path,
        expectedSeq: lastAppend.seq,
        offset: lastAppend.offset,
        maxPayload,
      });
      if (d.incomplete || d.end !== bytes.length) return false;
    } catch {
      return false;
    }
    end = size;
    last = seq - 1;
    return true;
  };

  /** A corrupt frame that is the end of the file, bytes of a crash rather than damage. */
  const tornTail = async (fh: FileHandle, error: CorruptFrameError, size: number) => {
    const at = error.position;
    const rest = await readAt(fh, at, size - at);
    if (rest.every((b) => b === 0)) return true;
    if (error.reason !== "checksum" || rest.length < 4) return false;
    if (laterFrame(rest, last) !== undefined) return false;
    const n = new DataView(rest.buffer, rest.byteOffset).getUint32(0, true);
    return at + FRAME_OVERHEAD + n === size;
  };

  if (shared) {
    // Repairing a torn tail is a write: only under the lock.
    await lockShared();
    try {
      await list();
      await scanTail(true);
    } finally {
      await unlink(lockPath);
    }
  } else {
    await list();
    await scanTail(!readOnly);
  }
  const snapshots = fileSnapshots(dir);

  const ready = () => {
    if (closed) throw new StorageClosedError(name);
    if (broken !== undefined) {
      throw new ImpelError("StorageBroken", `${name} failed an append it could not undo`, {
        cause: broken,
      });
    }
  };
  /** Finds what other processes appended (a reader's, or a shared writer's under the lock). */
  const refresh = async (repair = false) => {
    if (!readOnly && !shared) return;
    const before = segments.length;
    await list();
    // A segment started after the one we had: finish the old one by its successor's first seq.
    if (segments.length > before && before > 0) end = 0;
    try {
      await scanTail(repair);
    } catch (error) {
      // A shared writer killed mid-append leaves a torn tail that only the lock may truncate:
      // take it and look again (damage is still a CorruptFrameError then).
      if (!shared || repair || !(error instanceof CorruptFrameError)) throw error;
      await lockShared();
      try {
        await scanTail(true);
      } finally {
        await unlink(lockPath);
      }
    }
  };
  const serial = <T>(fn: () => Promise<T>): Promise<T> => {
    const next = queue.then(fn, fn);
    queue = next.catch(() => {});
    return next;
  };

  const mark = (seg: Segment, seq: number, offset: number) => {
    const prev = seg.marks.at(-1);
    if (prev === undefined ? offset >= MARK_EVERY : offset - prev.offset >= MARK_EVERY) {
      if (prev === undefined || seq > prev.seq) seg.marks.push({ seq, offset });
    }
  };

  const read = async (after: number, maxCount: number): Promise<StoredEvent[]> => {
    const out: StoredEvent[] = [];
    if (after >= last) return out;
    const target = after + 1;
    let i = segments.length - 1;
    while (i > 0 && segments[i].first > target) i--;
    for (; i < segments.length && out.length < maxCount; i++) {
      const seg = segments[i];
      const isLast = i === segments.length - 1;
      let seq = seg.first;
      let pos = 0;
      for (const m of seg.marks) if (m.seq <= target) seq = m.seq, pos = m.offset;
      const c = seg.cursor;
      if (c !== undefined && c.seq <= target && c.seq > seq) seq = c.seq, pos = c.offset;
      const fh = await open(seg.path, "r");
      try {
        const segEnd = isLast ? end : (await fh.stat()).size;
        const read = await readSegment({
          where: seg.path,
          noun: "segment",
          seq,
          pos,
          size: segEnd,
          target,
          out,
          maxCount,
          maxPayload,
          chunk: 256 * 1024,
          fetch: (at, length) => readAt(fh, at, length),
          advanced: (next, at) => {
            mark(seg, next, at);
            seg.cursor = { seq: next, offset: at };
          },
        });
        const next = segments[i + 1];
        checkNextSegment("segment", next && { where: next.path, first: next.first }, read, segEnd);
      } finally {
        await fh.close();
      }
    }
    return out;
  };

  const append = async (after: number, events: readonly unknown[]): Promise<number> => {
    ready();
    if (readOnly) throw new ReadOnlyStorageError(name);
    if (!shared) return await write(after, events);
    if (events.length === 0) {
      await refresh();
      if (after !== last) throw new AppendConflictError(name, after, last);
      return last;
    }
    await lockShared();
    try {
      await refresh(true);
      return await write(after, events);
    } finally {
      // Another writer may start a segment or repair a tail next: hold no handle across appends.
      await writer?.close();
      writer = undefined;
      await unlink(lockPath);
    }
  };

  const write = async (after: number, events: readonly unknown[]): Promise<number> => {
    if (after !== last) throw new AppendConflictError(name, after, last);
    if (events.length === 0) return last;
    const bytes = encodeFrames(last + 1, events, maxPayload);
    let seg = segments.at(-1);
    if (seg === undefined || (end > 0 && end + bytes.length > segmentBytes)) {
      await writer?.close();
      writer = undefined;
      const path = `${dir}/${String(last + 1).padStart(20, "0")}.seg`;
      const fh = await open(path, "wx+");
      if (fsync === "always") {
        await fh.sync();
        await syncDir(dir);
      }
      seg = { first: last + 1, path, marks: [] };
      segments.push(seg);
      writer = fh;
      end = 0;
    }
    writer ??= await open(seg.path, "r+");
    try {
      let done = 0;
      while (done < bytes.length) {
        const { bytesWritten } = await writer.write(bytes, done, bytes.length - done, end + done);
        done += bytesWritten;
      }
      if (fsync === "always") await writer.sync();
    } catch (error) {
      // Undo a partial write so that the next append starts at a frame boundary.
      try {
        await writer.truncate(end);
      } catch (undo) {
        broken = undo;
      }
      throw error;
    }
    mark(seg, last + 1, end);
    end += bytes.length;
    last += events.length;
    return last;
  };

  return {
    name,
    dir,
    segments: () => segments.map(({ path, first }) => ({ path, first })),
    read(after, maxCount = 1000) {
      return serial(async () => {
        ready();
        checkInteger("after", after, 0);
        checkInteger("maxCount", maxCount, 1);
        await refresh();
        return read(after, maxCount);
      });
    },
    last() {
      return serial(async () => {
        ready();
        await refresh();
        return last;
      });
    },
    append(after, events) {
      return serial(() => {
        checkInteger("after", after, 0);
        if (!Array.isArray(events)) throw new InvalidArgumentError("events", "must be an array");
        return append(after, events);
      });
    },
    snapshots: {
      load: (key) => snapshots.load(key),
      save: (key, text) => {
        if (readOnly) return Promise.reject(new ReadOnlyStorageError(name));
        if (!shared) return snapshots.save(key, text); // one writer: its saves only move on
        // Several writers: under the lock, and never an older snapshot over a newer one (a writer
        // whose state is behind saves later), unless the stored one lies beyond the stream.
        return serial(async () => {
          ready();
          await lockShared();
          try {
            await refresh(true);
            const stored = position(await snapshots.load(key));
            const ours = position(text);
            if (
              ours && stored?.name === ours.name && stored.seq >= ours.seq && stored.seq <= last
            ) {
              return;
            }
            await snapshots.save(key, text);
          } finally {
            await unlink(lockPath);
          }
        });
      },
    },
    close() {
      return serial(async () => {
        if (closed) return;
        closed = true;
        await writer?.close();
        writer = undefined;
        if (!readOnly && !shared) await unlink(lockPath).catch(() => {});
      });
    },
  };
}

/** The projection version and sequence number of a snapshot's text, if it has them. */
function position(text: string | undefined): { name: string; seq: number } | undefined {
  try {
    const { name, seq } = JSON.parse(text ?? "");
    return typeof name === "string" && typeof seq === "number" ? { name, seq } : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The first whole frame in `bytes` (after its first byte) that verifies and carries a sequence
 * number after `last`, if any: evidence that what precedes it is damage rather than the end of
 * the stream. Only run when opening finds a tail that does not decode.
 */
function laterFrame(bytes: Uint8Array, last: number): { offset: number; seq: number } | undefined {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const seqAt = (at: number) =>
    view.getUint32(at + 4, true) + view.getUint32(at + 8, true) * 0x1_0000_0000;
  const valid = (at: number) => {
    const n = view.getUint32(at, true);
    return at + FRAME_OVERHEAD + n <= bytes.length &&
      view.getUint32(at + 16 + n, true) === crc32(bytes, at, at + 16 + n);
  };
  // The whole frames of the torn append itself come first: they belong to it, not after it.
  let start = 0;
  let next = last + 1;
  while (start + FRAME_OVERHEAD <= bytes.length && seqAt(start) === next && valid(start)) {
    start += FRAME_OVERHEAD + view.getUint32(start, true);
    next++;
  }
  const most = next + Math.ceil(bytes.length / FRAME_OVERHEAD);
  for (let at = start + 1; at + FRAME_OVERHEAD <= bytes.length; at++) {
    const seq = seqAt(at);
    if (seq < next || seq > most) continue;
    const n = view.getUint32(at, true);
    if (at + FRAME_OVERHEAD + n > bytes.length) continue;
    if (view.getUint32(at + 16 + n, true) === crc32(bytes, at, at + 16 + n)) {
      return { offset: at, seq };
    }
  }
  return undefined;
}

async function readAt(fh: FileHandle, position: number, length: number): Promise<Uint8Array> {
  const bytes = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(bytes, done, length - done, position + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done === length ? bytes : bytes.subarray(0, done);
}
