// Real processes for the fault suites: spawn a script under the current Deno, kill it with
// SIGKILL after a delay, and draw the delays from a seeded generator so that a failing run can be
// repeated. Generic: nothing here knows about a backend.
//
//   const random = seededRandom(Number(Deno.env.get("IMPEL_FAULTS_SEED") ?? Date.now()));
//   const child = spawnScript("tests/faults/x/worker.ts", { env: { ... }, stderrPath: "w.err" });
//   const { killed } = await killAfter(child, 1000 + random() * 2000);

/** A child process started by {@linkcode spawnScript}. */
export interface Child {
  /** The OS process id. */
  readonly pid: number;
  /** When it was spawned (`performance.now()`). */
  readonly startedAt: number;
  /** Resolves when it has exited and its output files are closed. */
  readonly status: Promise<Deno.CommandStatus>;
  /** Sends `signal` (SIGKILL by default); a no-op once it has exited. */
  kill(signal?: Deno.Signal): void;
}

/** Options of {@linkcode spawnScript}. */
export interface SpawnOptions {
  /** Added to the inherited environment. */
  readonly env?: Record<string, string>;
  /** Arguments after the script. */
  readonly args?: readonly string[];
  /** Where standard error goes (appended); discarded when absent. */
  readonly stderrPath?: string;
  /** Where standard output goes (appended); discarded when absent. */
  readonly stdoutPath?: string;
  /** Working directory (default: the repository root). */
  readonly cwd?: string;
}

const root = new URL("../../../", import.meta.url).pathname;

/** Runs `script` (a path relative to the repository root) with `deno run -A`. */
export function spawnScript(script: string, options: SpawnOptions = {}): Child {
  const startedAt = performance.now();
  const proc = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", script, ...(options.args ?? [])],
    cwd: options.cwd ?? root,
    env: options.env,
    stdin: "null",
    stdout: options.stdoutPath ? "piped" : "null",
    stderr: options.stderrPath ? "piped" : "null",
  }).spawn();
  // Output is copied to files as it comes, so that it survives the kill.
  const copies: Promise<void>[] = [];
  const copy = (stream: ReadableStream<Uint8Array> | null, path?: string) => {
    if (!stream || !path) return;
    const file = Deno.openSync(path, { append: true, create: true });
    copies.push(stream.pipeTo(file.writable).catch(() => {}));
  };
  if (options.stdoutPath) copy(proc.stdout, options.stdoutPath);
  if (options.stderrPath) copy(proc.stderr, options.stderrPath);
  let exited = false;
  const status = proc.status.then(async (s) => {
    exited = true;
    await Promise.all(copies);
    return s;
  });
  return {
    pid: proc.pid,
    startedAt,
    status,
    kill(signal: Deno.Signal = "SIGKILL") {
      if (exited) return;
      try {
        proc.kill(signal);
      } catch {
        // it exited in between
      }
    },
  };
}

/** How a child ended under {@linkcode killAfter}. */
export interface Ending {
  /** Whether the kill was sent (false: it exited on its own first). */
  readonly killed: boolean;
  /** Its exit status. */
  readonly status: Deno.CommandStatus;
  /** Milliseconds from spawn to exit. */
  readonly livedMs: number;
}

/** Sends SIGKILL to `child` `ms` after it was spawned unless it exits first; waits for the exit. */
export async function killAfter(child: Child, ms: number): Promise<Ending> {
  let killed = false;
  const wait = Math.max(0, child.startedAt + ms - performance.now());
  const timer = setTimeout(() => {
    killed = true;
    child.kill("SIGKILL");
  }, wait);
  try {
    const status = await child.status;
    return {
      killed: killed && status.signal === "SIGKILL",
      status,
      livedMs: performance.now() - child.startedAt,
    };
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Waits for `child` to exit within `ms`; past that it is killed and the wait rejects, so that a
 * hung child fails the suite instead of stalling it.
 */
export async function exitWithin(
  child: Child,
  ms: number,
  what: string,
): Promise<Deno.CommandStatus> {
  const ending = await killAfter(child, ms);
  if (ending.killed) throw new Error(`${what} did not finish within ${ms} ms (killed)`);
  return ending.status;
}

/** A generator of numbers in [0, 1) from `seed` (mulberry32): the same seed, the same delays. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Appends lines to a file with one unbuffered write each, so that every line written before a
 * SIGKILL is in the file (the kernel has it; nothing waits in a user-space buffer).
 */
export function lineWriter(path: string): { write(line: string): void; close(): void } {
  const file = Deno.openSync(path, { append: true, create: true });
  const encoder = new TextEncoder();
  return {
    write(line: string) {
      const bytes = encoder.encode(line + "\n");
      for (let done = 0; done < bytes.length;) done += file.writeSync(bytes.subarray(done));
    },
    close: () => file.close(),
  };
}

/** Sends SIGKILL to `child` `ms` from now (not from its spawn) unless it exits first. */
export function killIn(child: Child, ms: number): Promise<Ending> {
  return killAfter(child, performance.now() - child.startedAt + ms);
}

/**
 * Sends `signal` (SIGTERM by default) to `child` and waits `ms` from now for it to exit; past
 * that it is killed and the wait rejects, so that a stop that hangs fails the suite.
 */
export async function stopWithin(
  child: Child,
  ms: number,
  what: string,
  signal: Deno.Signal = "SIGTERM",
): Promise<Deno.CommandStatus> {
  child.kill(signal);
  const ending = await killIn(child, ms);
  if (ending.killed) throw new Error(`${what} did not stop within ${ms} ms of ${signal} (killed)`);
  return ending.status;
}

/**
 * Waits until the file at `path` (a child's log) holds a line starting with `prefix`: true, or
 * false if `child` exits first; past `ms` the wait rejects. Polls every 20 ms.
 */
export async function untilLine(
  child: Child,
  path: string,
  prefix: string,
  ms: number,
): Promise<boolean> {
  const deadline = performance.now() + ms;
  let exited = false;
  child.status.then(() => exited = true, () => exited = true);
  for (;;) {
    const text = await Deno.readTextFile(path).catch(() => "");
    if (text.startsWith(prefix) || text.includes(`\n${prefix}`)) return true;
    if (exited) return false;
    if (performance.now() > deadline) throw new Error(`no "${prefix}" line in ${path} in ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
