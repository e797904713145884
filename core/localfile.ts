/**
 * Local-file mechanics shared by the file backends (event stream, checkpoints, park store): a
 * lock file naming the one process that writes a directory, and atomic replacement of a file.
 *
 * @module
 */
import { link, mkdir, open, readFile, rename, unlink } from "node:fs/promises";
import { dirname } from "node:path";
import { hostname } from "node:os";
import process from "node:process";
import { getLogger } from "@logtape/logtape";

const log = getLogger(["impel", "localfile"]);

/** Who holds a lock file, as it says. */
export interface LockHolder {
  /** The process. */
  pid?: number;
  /** Its host. */
  host?: string;
  /** The host's boot (Linux's boot_id), so that a lock from before a reboot is known stale. */
  boot?: string;
  /** When the process started (Linux's /proc/<pid>/stat), so that a reused pid is known. */
  start?: string;
}

// Linux only; elsewhere these stay undefined and only the pid is checked. Read when first needed,
// not at import: a module that starts I/O when loaded leaks it into whatever runs next.
let boot: Promise<string | undefined> | undefined;
const bootId = (): Promise<string | undefined> =>
  boot ??= readFile("/proc/sys/kernel/random/boot_id", "utf8").then(
    (s) => s.trim(),
    () => undefined,
  );

/** A process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat). */
function startOf(pid: number): Promise<string | undefined> {
  return readFile(`/proc/${pid}/stat`, "utf8").then(
    (s) => s.slice(s.lastIndexOf(")") + 2).split(" ")[19],
    () => undefined,
  );
}

/** Fsyncs a directory, so that entries created or renamed in it survive a power loss. */
export async function syncDir(dir: string): Promise<void> {
  const d = await open(dir, "r");
  try {
    await d.sync();
  } finally {
    await d.close();
  }
}

/**
 * Replaces `path` with `text` so that a crash leaves the old content or the new, never part of
 * either: a temporary file in the same directory, fsynced, renamed over `path`, and the
 * directory fsynced so that the rename itself is durable.
 */
export async function writeFileAtomic(path: string, text: string): Promise<void> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true });
  const tmp = `${path}.${crypto.randomUUID()}.tmp`;
  try {
    await writeSynced(tmp, text);
    await rename(tmp, path);
  } catch (error) {
    await unlink(tmp).catch(() => {});
    throw error;
  }
  // The new content is in place: failing now would tell the caller it is not, and a restart would
  // find it. Only its survival of a power loss is unconfirmed, which is worth a warning.
  await syncDir(dir).catch((error) =>
    log.warn("{path} replaced, but its directory could not be fsynced: {error}", { path, error })
  );
}

async function writeSynced(path: string, text: string): Promise<void> {
  const fh = await open(path, "wx");
  try {
    await fh.writeFile(text);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

// Lock files this process took: a lock naming this pid that is not among them was left by an
// earlier process that had the same pid (a container restarted after a kill).
const taken = new Set<string>();

async function alive(path: string, holder: LockHolder & { stale?: true }): Promise<boolean> {
  if (holder.stale) return false;
  if (holder.host !== hostname() || typeof holder.pid !== "number") return true;
  if (holder.boot !== undefined && holder.boot !== await bootId()) return false;
  if (holder.pid === process.pid) return taken.has(path);
  try {
    process.kill(holder.pid, 0);
  } catch (error) {
    return (error as { code?: string }).code === "EPERM";
  }
  return holder.start === undefined || holder.start === await startOf(holder.pid);
}

async function readHolder(path: string): Promise<(LockHolder & { stale?: true }) | undefined> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    if ((error as { code?: string }).code === "ENOENT") return undefined;
    return {}; // unreadable: held, by whom we cannot tell
  }
  // Locks are linked into place whole, so an empty one is a crash of an older writer's create.
  if (text === "") return { stale: true };
  try {
    return JSON.parse(text);
  } catch {
    return {};
  }
}

/** Links a new file holding `text` into place at `path`; false if `path` exists. */
async function linkNew(path: string, text: string): Promise<boolean> {
  // Written whole to a file of its own, then linked into place: never seen half-written.
  const tmp = `${path}.${crypto.randomUUID()}.tmp`;
  try {
    await writeSynced(tmp, text);
    await link(tmp, path);
    return true;
  } catch (error) {
    if ((error as { code?: string }).code !== "EEXIST") throw error;
    return false;
  } finally {
    await unlink(tmp).catch(() => {});
  }
}

/**
 * Creates the lock file `path` exclusively, naming this process. A lock of a dead process on this
 * host is removed only by the process that holds `path.takeover` (linked exclusively too), after
 * reading the holder again: so no process ever removes a live lock, however many race to take
 * over one stale lock (moving a lock aside to check it, as before, could move a fresh one and let
 * a third process in meanwhile). A lock held by a live process (or one on another host, whose
 * liveness cannot be checked) rejects with what `held` makes of its holder.
 */
export async function takeLock(
  path: string,
  held: (holder: LockHolder) => Error,
): Promise<void> {
  const me = JSON.stringify({
    pid: process.pid,
    host: hostname(),
    boot: await bootId(),
    start: await startOf(process.pid),
    since: new Date(),
  });
  const takeover = `${path}.takeover`;
  for (let attempt = 0; attempt < 3; attempt++) {
    if (await linkNew(path, me)) {
      taken.add(path);
      return;
    }
    const holder = await readHolder(path);
    if (holder === undefined) continue;
    if (await alive(path, holder)) throw held(holder);
    // Throws `held(holder)` while a live process takes over; a taker that died meanwhile left a
    // stale claim, taken over in turn the same way (one level deeper per such crash).
    await takeLock(takeover, () => held(holder));
    try {
      const again = await readHolder(path);
      if (again !== undefined && await alive(path, again)) throw held(again);
      if (again !== undefined) {
        log.warn("taking over {path} from process {pid}, which is gone", { path, pid: again.pid });
        await unlink(path).catch(() => {});
      }
    } finally {
      taken.delete(takeover);
      await unlink(takeover).catch(() => {});
    }
  }
  throw held((await readHolder(path)) ?? {});
}
