/**
 * Where the CLI reads its arguments and environment and writes its output: the real process on
 * Deno or Bun. Internal to the `impel` command line.
 *
 * @module
 */

/**
 * Where the CLI reads its environment and writes its output; the real process by default.
 *
 * @example
 * ```ts
 * import { type CliIo, EXIT, main } from "@impel/impel/cli";
 * // Runs a command in-process with its own environment, capturing its output, as a test or a
 * // wrapper script would. Nothing listens on port 1, so the command cannot connect.
 * const env: Record<string, string> = { IMPEL_PG_URL: "postgres://postgres@127.0.0.1:1/impel" };
 * let err = "";
 * const io: CliIo = {
 *   out: (text) => console.log(text),
 *   err: (text) => void (err += text),
 *   env: (name) => env[name],
 *   isTerminal: false,
 * };
 * const code = await main(["checkpoints", "show", "--source", "messagedb"], io);
 * console.log(code === EXIT.connection, err); // true "impel checkpoints show: cannot connect to …"
 * ```
 */
export interface CliIo {
  /** Writes to standard output (no newline added). */
  out(text: string): void;
  /** Writes to standard error (no newline added). */
  err(text: string): void;
  /** An environment variable. */
  env(name: string): string | undefined;
  /** Whether standard output is a terminal (progress bars are drawn only then). */
  readonly isTerminal: boolean;
  /** Aborted to stop a long-running command (Ctrl-C). */
  readonly signal?: AbortSignal;
}

interface DenoLike {
  readonly args: string[];
  exit(code: number): never;
  readonly env: { get(name: string): string | undefined };
  readonly stdout: { writeSync(p: Uint8Array): number; isTerminal(): boolean };
  readonly stderr: { writeSync(p: Uint8Array): number };
  addSignalListener(signal: "SIGINT" | "SIGTERM", handler: () => void): void;
}
interface ProcessLike {
  readonly argv: string[];
  exit(code: number): never;
  readonly env: Record<string, string | undefined>;
  readonly stdout: { write(s: string): boolean; readonly isTTY?: boolean };
  readonly stderr: { write(s: string): boolean };
  on(signal: "SIGINT" | "SIGTERM", handler: () => void): void;
}
const runtime = globalThis as unknown as { Deno?: DenoLike; process?: ProcessLike };

function writeAll(w: { writeSync(p: Uint8Array): number }, text: string) {
  let bytes = new TextEncoder().encode(text);
  while (bytes.length > 0) bytes = bytes.subarray(w.writeSync(bytes));
}

/**
 * The real process's output, environment and Ctrl-C, on Deno or Bun. Ctrl-C is taken over only
 * once a command asks for `signal` (tail, to stop cleanly and print a summary); a second Ctrl-C,
 * or one during any other command, ends the process with 130.
 */
export function processIo(): CliIo {
  const deno = runtime.Deno;
  const proc = runtime.process;
  let ac: AbortController | undefined;
  const onSignal = () => {
    if (ac === undefined || ac.signal.aborted) return deno ? deno.exit(130) : proc!.exit(130);
    ac.abort();
  };
  const signal = () => {
    if (ac === undefined) {
      ac = new AbortController();
      for (const s of ["SIGINT", "SIGTERM"] as const) {
        deno ? deno.addSignalListener(s, onSignal) : proc!.on(s, onSignal);
      }
    }
    return ac.signal;
  };
  if (deno) {
    return {
      out: (t) => writeAll(deno.stdout, t),
      err: (t) => writeAll(deno.stderr, t),
      env: (name) => deno.env.get(name),
      isTerminal: deno.stdout.isTerminal(),
      get signal() {
        return signal();
      },
    };
  }
  return {
    out: (t) => void proc!.stdout.write(t),
    err: (t) => void proc!.stderr.write(t),
    env: (name) => proc!.env[name],
    isTerminal: proc!.stdout.isTTY === true,
    get signal() {
      return signal();
    },
  };
}

/** The process's arguments without the program (and script) name, on Deno or Bun. */
export function processArgs(): string[] {
  return runtime.Deno ? runtime.Deno.args : runtime.process!.argv.slice(2);
}

/** Ends the process with `code`, on Deno or Bun. */
export function exitProcess(code: number): never {
  return runtime.Deno ? runtime.Deno.exit(code) : runtime.process!.exit(code);
}
