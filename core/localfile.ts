/**
 * Local-file mechanics shared by the file backends (event stream, checkpoints, park store): a
 * lock file naming the one process that writes a directory, and atomic replacement of a file.
 *
 * @module
 */
import { mkdir, open, readFile, rename, unlink, writeFile } from "node:fs/promises";
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
  const fh = await open(tmp, "wx");
  try {
    await fh.writeFile(text);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await rename(tmp, path);
  } catch (error) {
    await unlink(tmp).catch(() => {});
    throw error;
  }
  await syncDir(dir);
}

function alive(holder: LockHolder): boolean {
  if (holder.host !== hostname() || typeof holder.pid !== "number") return true;
  try {
    process.kill(holder.pid, 0);
    return true;
  } catch (error) {
    return (error as { code?: string }).code === "EPERM";
  }
}

async function readHolder(path: string): Promise<LockHolder | undefined> {
  try {
    return JSON.parse(await readFile(path, "utf8"));
  } catch (error) {
    if ((error as { code?: string }).code === "ENOENT") return undefined;
    return {}; // unreadable: held, by whom we cannot tell
  }
}

/**
 * Creates the lock file `path` exclusively, naming this process; a lock of a dead process on
 * this host is moved aside and checked again after the move, so that two processes taking over
 * the same stale lock cannot both succeed. A lock held by a live process (or one on another
 * host, whose liveness cannot be checked) rejects with what `held` makes of its holder.
 */
export async function takeLock(
  path: string,
  held: (holder: LockHolder) => Error,
): Promise<void> {
  const me = JSON.stringify({ pid: process.pid, host: hostname(), since: new Date() });
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      await writeFile(path, me, { flag: "wx" });
      return;
    } catch (error) {
      if ((error as { code?: string }).code !== "EEXIST") throw error;
    }
    const holder = await readHolder(path);
    if (holder === undefined) continue;
    if (alive(holder)) throw held(holder);
    const aside = `${path}.stale-${crypto.randomUUID()}`;
    try {
      await rename(path, aside);
    } catch {
      continue; // another process moved it first
    }
    const moved = await readHolder(aside);
    if (moved?.pid !== holder.pid || moved?.host !== holder.host) {
      // We moved a fresh lock of the process that took over first: give it back.
      await rename(aside, path).catch(() => {});
      throw held(moved ?? {});
    }
    log.warn("taking over {path} from process {pid}, which is gone", { path, pid: holder.pid });
    await unlink(aside).catch(() => {});
  }
  throw held((await readHolder(path)) ?? {});
}
