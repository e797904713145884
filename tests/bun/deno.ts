/**
 * The part of the `Deno` namespace that the test suite uses, on Bun: `Deno.test` on `bun:test`,
 * the rest on Bun's own APIs and node: modules. Loaded by `tests/bun/preload.ts`, which makes it
 * the `Deno` of the test files only: `globalThis.Deno` stays undefined, so the library under test
 * takes its Bun paths, as it would in a Bun application.
 *
 * Deno's op sanitizer is emulated for timers only (a test registered with `sanitizeOps: true`
 * fails if a timer it started is still pending when it ends); the resource sanitizer is not.
 * Permissions are ignored: Bun has none.
 */
import { test as bunTest } from "bun:test";
import { constants } from "node:os";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as fs from "node:fs/promises";
import { closeSync, existsSync, openSync, realpathSync, writeSync } from "node:fs";

// Deno's tests have no time limit and Bun's default (5 s) is too short for the backend tests; a
// test that hangs still fails, after five minutes. (bunfig.toml cannot set it: Bun ignores it.)
const TIMEOUT_MS = 300_000;

type Fn = (t: TestContext) => void | Promise<void>;
type TestOptions = {
  name?: string;
  fn?: Fn;
  ignore?: boolean;
  only?: boolean;
  sanitizeOps?: boolean;
  sanitizeResources?: boolean;
  sanitizeExit?: boolean;
  permissions?: unknown;
};
type StepOptions = { name?: string; fn?: Fn; ignore?: boolean };

/** Deno's `TestContext`: steps run inline, in order; a failed step fails its test at the end. */
export class TestContext {
  readonly #failed: string[];
  constructor(
    readonly name: string,
    readonly origin: string,
    failed: string[],
    readonly parent?: TestContext,
  ) {
    this.#failed = failed;
  }

  async step(a: string | StepOptions | Fn, b?: Fn): Promise<boolean> {
    const def: StepOptions = typeof a === "string"
      ? { name: a, fn: b }
      : typeof a === "function"
      ? { name: a.name, fn: a }
      : a;
    if (def.ignore) return false;
    const name = `${this.name} > ${def.name}`;
    try {
      await def.fn!(new TestContext(name, this.origin, this.#failed, this));
      return true;
    } catch (e) {
      // Deno reports a failed step and carries on with the next one; so does this.
      console.error(`step failed: ${name}\n`, e);
      this.#failed.push(def.name ?? "(unnamed)");
      return false;
    }
  }
}

// Timers started since the shim loaded and still pending, for the op sanitizer.
const pending = new Set<unknown>();
const real = {
  setTimeout: globalThis.setTimeout,
  setInterval: globalThis.setInterval,
  clearTimeout: globalThis.clearTimeout,
  clearInterval: globalThis.clearInterval,
};
type TimerFn = (...args: unknown[]) => void;
const timers = globalThis as unknown as Record<string, unknown>;
timers.setTimeout = (fn: TimerFn, ms?: number, ...args: unknown[]) => {
  const id = real.setTimeout(
    (...a: unknown[]) => {
      pending.delete(id);
      fn(...a);
    },
    ms,
    ...args,
  );
  pending.add(id);
  return id;
};
timers.setInterval = (fn: TimerFn, ms?: number, ...args: unknown[]) => {
  const id = real.setInterval(fn, ms, ...args);
  pending.add(id);
  return id;
};
timers.clearTimeout = timers.clearInterval = (id?: unknown) => {
  pending.delete(id);
  real.clearTimeout(id as number);
};

async function sanitized(name: string, fn: () => Promise<void>): Promise<void> {
  const before = new Set(pending);
  await fn();
  // Like Deno's sanitizer, give callbacks already due a turn before counting what is left.
  for (let i = 0; i < 2; i++) await new Promise((r) => real.setTimeout(r, 0));
  const leaked = [...pending].filter((t) => !before.has(t)).length;
  if (leaked) {
    throw new Error(`"${name}" left ${leaked} timer(s) pending (emulated Deno op sanitizer)`);
  }
}

function register(only: boolean, def: TestOptions) {
  const name = def.name || "(unnamed)";
  // A function of arity 0: bun:test waits for a `done` callback when the function takes one.
  const body = async () => {
    const failed: string[] = [];
    const run = async () => await def.fn!(new TestContext(name, "", failed));
    await (def.sanitizeOps ? sanitized(name, run) : run());
    if (failed.length) throw new Error(`${failed.length} step(s) failed: ${failed.join(", ")}`);
  };
  if (def.ignore) bunTest.skip(name, body);
  else if (only || def.only) bunTest.only(name, body, TIMEOUT_MS);
  else bunTest(name, body, TIMEOUT_MS);
}

function resolveDeno(): string {
  const local = new URL("../../node_modules/.bin/deno", import.meta.url).pathname;
  if (existsSync(local)) return realpathSync(local);
  const found = (globalThis as unknown as { Bun: { which(c: string): string | null } }).Bun
    .which("deno");
  if (found) return found;
  throw new Error("Deno.execPath() under Bun: no deno binary in node_modules/.bin or on PATH");
}

type Stdio = "piped" | "inherit" | "null";
type CommandOptions = {
  args?: string[];
  cwd?: string | URL;
  env?: Record<string, string>;
  clearEnv?: boolean;
  stdin?: Stdio;
  stdout?: Stdio;
  stderr?: Stdio;
};
type CommandStatus = { success: boolean; code: number; signal: string | null };
type CommandOutput = CommandStatus & { stdout: Uint8Array; stderr: Uint8Array };
type BunProcess = {
  pid: number;
  stdout: ReadableStream<Uint8Array>;
  stderr: ReadableStream<Uint8Array>;
  exited: Promise<number>;
  signalCode: string | null;
  kill(signal?: string | number): void;
};
type BunSpawn = (cmd: string[], options: Record<string, unknown>) => BunProcess;
const spawnBun: BunSpawn = (cmd, options) =>
  (globalThis as unknown as { Bun: { spawn: BunSpawn } }).Bun.spawn(cmd, options);
const bunStdio = (s: Stdio) => s === "piped" ? "pipe" : s === "null" ? "ignore" : "inherit";

/** Deno's `ChildProcess` on `Bun.spawn`: piped output as web ReadableStreams, `status`, `kill`. */
class ChildProcess {
  readonly #proc: BunProcess;
  readonly status: Promise<CommandStatus>;
  constructor(proc: BunProcess) {
    this.#proc = proc;
    this.status = proc.exited.then((exit) => {
      const signal = proc.signalCode;
      // Deno reports a process ended by a signal with code 128 + its number.
      const code = signal ? 128 + (constants.signals as Record<string, number>)[signal] : exit;
      return { success: code === 0, code, signal };
    });
  }
  get pid(): number {
    return this.#proc.pid;
  }
  get stdout(): ReadableStream<Uint8Array> {
    return this.#proc.stdout;
  }
  get stderr(): ReadableStream<Uint8Array> {
    return this.#proc.stderr;
  }
  kill(signal = "SIGTERM"): void {
    this.#proc.kill(signal);
  }
  async output(): Promise<CommandOutput> {
    const bytes = async (s: unknown) =>
      s instanceof ReadableStream
        ? new Uint8Array(await new Response(s).arrayBuffer())
        : new Uint8Array();
    const [stdout, stderr, status] = await Promise.all([
      bytes(this.#proc.stdout),
      bytes(this.#proc.stderr),
      this.status,
    ]);
    return { ...status, stdout, stderr };
  }
}

/** Deno's `Command` on `Bun.spawn`; the child's environment extends this one's unless `clearEnv`. */
class Command {
  constructor(readonly command: string | URL, readonly options: CommandOptions = {}) {}
  spawn(): ChildProcess {
    return this.#start("inherit");
  }
  output(): Promise<CommandOutput> {
    return this.#start("piped").output();
  }
  #start(defaultOut: Stdio): ChildProcess {
    const o = this.options;
    if (o.stdin === "piped") throw new Error("Deno.Command shim: piped stdin is not supported");
    const cwd = o.cwd instanceof URL ? o.cwd.pathname : o.cwd;
    const env = o.clearEnv ? { ...o.env } : { ...process.env, ...o.env };
    const command = this.command instanceof URL ? this.command.pathname : this.command;
    return new ChildProcess(spawnBun([command, ...(o.args ?? [])], {
      cwd,
      env,
      stdin: bunStdio(o.stdin ?? "inherit"),
      stdout: bunStdio(o.stdout ?? defaultOut),
      stderr: bunStdio(o.stderr ?? defaultOut),
    }));
  }
}

type Path = string | URL;
type FileInfo = { isFile: boolean; isDirectory: boolean; isSymlink: boolean; size: number };

type BunServer = { port: number; hostname: string; stop(force?: boolean): Promise<void> };
type BunListener = { port: number; hostname: string; stop(force?: boolean): void };
type BunNet = {
  serve(o: Record<string, unknown>): BunServer;
  listen(o: Record<string, unknown>): BunListener;
};
const bunNet = () => (globalThis as unknown as { Bun: BunNet }).Bun;
type Addr = { transport: "tcp"; hostname: string; port: number };
type ServeOptions = { hostname?: string; port?: number; onListen?: (addr: Addr) => void };
type Handler = (req: Request) => Response | Promise<Response>;

export const Deno = {
  test: Object.assign(
    (a: string | TestOptions | Fn, b?: TestOptions | Fn, c?: Fn) =>
      register(false, normalise(a, b, c)),
    {
      ignore: (a: string | TestOptions | Fn, b?: TestOptions | Fn, c?: Fn) =>
        register(false, { ...normalise(a, b, c), ignore: true }),
      only: (a: string | TestOptions | Fn, b?: TestOptions | Fn, c?: Fn) =>
        register(true, normalise(a, b, c)),
    },
  ),
  env: {
    get: (k: string): string | undefined => process.env[k],
    set: (k: string, v: string): void => void (process.env[k] = v),
    delete: (k: string): void => void delete process.env[k],
    has: (k: string): boolean => k in process.env,
    toObject: (): Record<string, string> => ({ ...process.env }) as Record<string, string>,
  },
  execPath: resolveDeno,
  Command,
  uid: (): number | null => process.getuid?.() ?? null,
  memoryUsage: (): NodeJS.MemoryUsage => process.memoryUsage(),
  readTextFile: (p: Path): Promise<string> => fs.readFile(p, "utf8"),
  writeTextFile: (p: Path, data: string): Promise<void> => fs.writeFile(p, data),
  makeTempDir: (o: { prefix?: string } = {}): Promise<string> =>
    fs.mkdtemp(join(tmpdir(), o.prefix ?? "")),
  makeTempFile: async (
    o: { dir?: string; prefix?: string; suffix?: string } = {},
  ): Promise<string> => {
    const path = join(
      o.dir ?? tmpdir(),
      `${o.prefix ?? ""}${crypto.randomUUID()}${o.suffix ?? ""}`,
    );
    await fs.writeFile(path, "", { flag: "wx" });
    return path;
  },
  mkdir: async (p: Path, o: { recursive?: boolean } = {}): Promise<void> =>
    void await fs.mkdir(p, o),
  remove: (p: Path, o: { recursive?: boolean } = {}): Promise<void> =>
    fs.rm(p, { recursive: o.recursive ?? false }),
  copyFile: (from: Path, to: Path): Promise<void> => fs.copyFile(from, to),
  symlink: (target: Path, path: Path): Promise<void> => fs.symlink(target, path),
  stat: async (p: Path): Promise<FileInfo> => {
    const s = await fs.stat(p);
    return { isFile: s.isFile(), isDirectory: s.isDirectory(), isSymlink: false, size: s.size };
  },
  /** For writing only: the file's `writable` (which closes it when it closes) and `close`. */
  openSync: (p: Path, o: { append?: boolean; create?: boolean; truncate?: boolean } = {}) => {
    const fd = openSync(p, o.append ? "a" : o.truncate ? "w" : "r+");
    let closed = false;
    const close = () => void (closed || (closed = true, closeSync(fd)));
    const writable = new WritableStream<Uint8Array>({
      write: (chunk) => void writeSync(fd, chunk),
      close,
      abort: close,
    });
    return { writable, close };
  },
  readDir: async function* (p: Path): AsyncGenerator<{ name: string } & Omit<FileInfo, "size">> {
    for (const e of await fs.readdir(p, { withFileTypes: true })) {
      yield {
        name: e.name,
        isFile: e.isFile(),
        isDirectory: e.isDirectory(),
        isSymlink: e.isSymbolicLink(),
      };
    }
  },
  /** On `Bun.serve`: the handler is served by Bun's own HTTP server. */
  serve: (o: ServeOptions, handler: Handler) => {
    const server = bunNet().serve({ hostname: o.hostname, port: o.port ?? 8000, fetch: handler });
    const addr: Addr = { transport: "tcp", hostname: server.hostname, port: server.port };
    o.onListen?.(addr);
    return { addr, shutdown: () => server.stop(true) };
  },
  /** On `Bun.listen`: a bound TCP listener (accepting is not supported). */
  listen: (o: { hostname?: string; port: number }) => {
    const listener = bunNet().listen({
      hostname: o.hostname ?? "0.0.0.0",
      port: o.port,
      socket: { data() {} },
    });
    const addr: Addr = { transport: "tcp", hostname: listener.hostname, port: listener.port };
    return { addr, close: () => listener.stop(true) };
  },
};

function normalise(a: string | TestOptions | Fn, b?: TestOptions | Fn, c?: Fn): TestOptions {
  if (typeof a === "function") return { name: a.name, fn: a };
  if (typeof a === "string") {
    return typeof b === "function" ? { name: a, fn: b } : { ...b, name: a, fn: c };
  }
  return typeof b === "function" ? { name: b.name, ...a, fn: b } : a;
}
