/**
 * A park store in one local directory, for development and single-process runs that should
 * keep what they park across restarts. It is the memory store's logic (`parked/state.ts`) over
 * a state loaded from `parked.json` at open and saved after each change, before the change is
 * answered: written to a temporary file, fsynced, renamed over the file and the directory
 * fsynced, so that what a call acknowledged survives the process being killed (or the machine
 * going down), and a crash leaves the state before the call or after it, never part of it.
 *
 * - One process: the directory's `LOCK` file names the process that has it open; a second
 *   opener gets {@linkcode ParkStoreLockedError}. A lock left by a process that died (SIGKILL)
 *   is taken over. Several sinks of one group in several processes need a shared store
 *   (PostgreSQL, DynamoDB).
 * - Each change rewrites the whole file: fine for the handful of parked streams of a
 *   development run, not for thousands of parked events.
 * - A file that cannot be read or is not one this store wrote is
 *   {@linkcode CorruptParkFileError}, never an empty store.
 *
 * @module
 */
import { mkdir, readFile, unlink } from "node:fs/promises";
import type { ParkedStream, ParkStore } from "../core/park.ts";
import { ImpelError, InvalidArgumentError } from "../core/errors.ts";
import { takeLock, writeFileAtomic } from "../core/localfile.ts";
import { asyncParkStore, type Episode, type ParkState, parkStateStore } from "./state.ts";

/**
 * The park file could not be read, or not as one this store wrote. The store is not opened:
 * repair or move the file (an empty store would silently forget parked streams).
 *
 * @example
 * ```ts
 * import { CorruptParkFileError, fileParkStore } from "@impel/impel/parked/file";
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${dir}/parked.json`, "{ not json");
 * await fileParkStore(dir).catch((e) => console.log(e instanceof CorruptParkFileError)); // true
 * ```
 *
 * @category Parked streams
 */
export class CorruptParkFileError extends ImpelError {
  /** The file. */
  readonly path: string;
  /** Creates the error. */
  constructor(path: string, problem: string) {
    super("CorruptParkFile", `park file ${path}: ${problem}`);
    this.path = path;
  }
}

/**
 * Another live process has the park store's directory open (or one on another host, whose
 * liveness cannot be checked). The lock file names it; remove it only if that process is gone.
 *
 * @example
 * ```ts
 * import { fileParkStore, ParkStoreLockedError } from "@impel/impel/parked/file";
 * const dir = await Deno.makeTempDir();
 * await using _first = await fileParkStore(dir);
 * await fileParkStore(dir).catch((e) => console.log(e instanceof ParkStoreLockedError)); // true
 * ```
 *
 * @category Parked streams
 */
export class ParkStoreLockedError extends ImpelError {
  /** The lock file. */
  readonly path: string;
  /** The process holding it, as the lock file says. */
  readonly pid: number | undefined;
  /** Creates the error. */
  constructor(path: string, holder: { pid?: number; host?: string }) {
    super(
      "ParkStoreLocked",
      `${path} is held by process ${holder.pid ?? "?"} on ${holder.host ?? "?"}: ` +
        `a file park store is open in one process at a time`,
    );
    this.path = path;
    this.pid = holder.pid;
  }
}

/**
 * A call on a {@linkcode FileParkStore} after `close`.
 *
 * @example
 * ```ts
 * import { fileParkStore, ParkStoreClosedError } from "@impel/impel/parked/file";
 * const store = await fileParkStore(await Deno.makeTempDir());
 * await store.close();
 * await store.list().catch((e) => console.log(e instanceof ParkStoreClosedError)); // true
 * ```
 *
 * @category Parked streams
 */
export class ParkStoreClosedError extends ImpelError {
  /** Creates the error for the store in `dir`. */
  constructor(dir: string) {
    super("ParkStoreClosed", `the park store in ${dir} is closed`);
  }
}

/**
 * A {@linkcode ParkStore} kept in a directory, from {@linkcode fileParkStore}; `close` (or
 * `await using`) releases the directory's lock.
 *
 * @example
 * ```ts
 * import { type FileParkStore, fileParkStore } from "@impel/impel/parked/file";
 * const store: FileParkStore = await fileParkStore(await Deno.makeTempDir());
 * console.log(store.path.endsWith("parked.json")); // true
 * await store.close();
 * ```
 *
 * @category Parked streams
 */
export interface FileParkStore extends ParkStore, AsyncDisposable {
  /** The file the state is kept in. */
  readonly path: string;
  /** Waits for the call in progress, then releases the lock; later calls reject. */
  close(): Promise<void>;
}

const MUTATING = new Set<keyof ParkStore>(["park", "request", "claim", "resolve"]);

/**
 * Opens (creating it if needed) the park store in the directory `dir`: takes its lock and
 * loads `parked.json`. Rejects with {@linkcode ParkStoreLockedError} if another process has it
 * open and {@linkcode CorruptParkFileError} if the file cannot be used. For one process; see
 * the module documentation.
 *
 * @example
 * ```ts
 * import { fileParkStore } from "@impel/impel/parked/file";
 * const dir = await Deno.makeTempDir();
 * const store = await fileParkStore(dir);
 * await store.park("billing", [{
 *   stream: "Payment-1",
 *   events: [{ index: 0, type: "Paid", data: {}, meta: null, id: "e0", time: new Date(), size: 2 }],
 *   failure: { error: "Error: declined", attempts: 3, firstFailedAt: 0, lastFailedAt: 1 },
 * }]);
 * await store.close();
 * await using again = await fileParkStore(dir);
 * console.log((await again.get("billing", "Payment-1"))?.events); // 1
 * ```
 *
 * @category Parked streams
 */
export async function fileParkStore(dir: string): Promise<FileParkStore> {
  if (typeof dir !== "string" || dir.length === 0) {
    throw new InvalidArgumentError("dir", "must be a non-empty directory path");
  }
  const path = `${dir}/parked.json`;
  const lockPath = `${dir}/LOCK`;
  await mkdir(dir, { recursive: true });
  await takeLock(lockPath, (holder) => new ParkStoreLockedError(lockPath, holder));
  let state: ParkState;
  try {
    state = await load(path);
  } catch (error) {
    await unlink(lockPath).catch(() => {});
    throw error;
  }
  // What the file holds now: a change that could not be saved is undone back to it.
  let saved = encodeState(state);
  let closed = false;
  // One call at a time, so that no call sees a change that is not saved yet.
  let queue: Promise<unknown> = Promise.resolve();
  const serial = <T>(fn: () => Promise<T>): Promise<T> => {
    const next = queue.then(fn, fn);
    queue = next.catch(() => {});
    return next;
  };
  const restore = () => {
    const back = decodeState(path, saved);
    state.groups.clear();
    for (const [g, streams] of back.groups) state.groups.set(g, streams);
    state.episodes = back.episodes;
  };
  const store = asyncParkStore(parkStateStore(state), (method, call) =>
    serial(async () => {
      if (closed) throw new ParkStoreClosedError(dir);
      if (!MUTATING.has(method)) return call();
      let answer;
      try {
        answer = call();
      } catch (error) {
        if (encodeState(state) !== saved) restore();
        throw error;
      }
      const text = encodeState(state);
      if (text !== saved) {
        try {
          await writeFileAtomic(path, text);
        } catch (error) {
          restore();
          throw error;
        }
        saved = text;
      }
      return answer;
    }));
  const close = () =>
    serial(async () => {
      if (closed) return;
      closed = true;
      await unlink(lockPath).catch(() => {});
    });
  return { ...store, path, close, [Symbol.asyncDispose]: close };
}

async function load(path: string): Promise<ParkState> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    if ((error as { code?: string }).code === "ENOENT") return decodeState(path, undefined);
    throw new CorruptParkFileError(path, `unreadable (${error})`);
  }
  return decodeState(path, text);
}

interface StoredStream {
  group: string;
  stream: string;
  episodes: Episode[];
}

function encodeState(state: ParkState): string {
  const streams: StoredStream[] = [];
  for (const [group, byStream] of state.groups) {
    for (const [stream, episodes] of byStream) streams.push({ group, stream, episodes });
  }
  return JSON.stringify({ version: 1, episodes: state.episodes, streams });
}

function decodeState(path: string, text: string | undefined): ParkState {
  const state: ParkState = { groups: new Map(), episodes: 0 };
  if (text === undefined) return state;
  let file: { version?: unknown; episodes?: unknown; streams?: unknown };
  try {
    file = JSON.parse(text);
  } catch (error) {
    throw new CorruptParkFileError(path, `not JSON (${error})`);
  }
  const bad = (problem: string) => new CorruptParkFileError(path, problem);
  if (file === null || typeof file !== "object") throw bad("not an object");
  if (file.version !== 1) throw bad(`unknown version ${JSON.stringify(file.version)}`);
  if (!Number.isSafeInteger(file.episodes) || (file.episodes as number) < 0) {
    throw bad(`bad episode count ${JSON.stringify(file.episodes)}`);
  }
  if (!Array.isArray(file.streams)) throw bad("no streams array");
  state.episodes = file.episodes as number;
  for (const s of file.streams as StoredStream[]) {
    const where = `${JSON.stringify(s?.group)}/${JSON.stringify(s?.stream)}`;
    if (
      typeof s?.group !== "string" || typeof s.stream !== "string" ||
      !Array.isArray(s.episodes) || s.episodes.length === 0
    ) throw bad(`bad stream entry ${where}`);
    for (const e of s.episodes) {
      if (!validEntry(e?.entry, s.group, s.stream)) throw bad(`bad episode of ${where}`);
      if (
        !Array.isArray(e.events) ||
        !e.events.every((x) => Number.isSafeInteger(x?.index) && typeof x.text === "string")
      ) throw bad(`bad events of ${where} episode ${e.entry.episode}`);
    }
    let streams = state.groups.get(s.group);
    if (streams === undefined) state.groups.set(s.group, streams = new Map());
    if (streams.has(s.stream)) throw bad(`stream ${where} twice`);
    streams.set(s.stream, s.episodes);
  }
  return state;
}

function validEntry(entry: ParkedStream | undefined, group: string, stream: string): boolean {
  return typeof entry === "object" && entry !== null && entry.group === group &&
    entry.stream === stream && typeof entry.episode === "string" &&
    ["parked", "released", "skipped", "failed"].includes(entry.state) &&
    Number.isSafeInteger(entry.first) && Number.isSafeInteger(entry.next) &&
    Number.isSafeInteger(entry.events);
}
