// An example file run as a real process under Deno or Bun, its stdout collected so that a test can
// wait for a line and then stop it.
const root = new URL("../..", import.meta.url).pathname;

/** The Bun of node_modules, or undefined where it is not installed (its tests then show ignored). */
export const bun: string | undefined = await Deno.stat(`${root}node_modules/.bin/bun`).then(
  () => `${root}node_modules/.bin/bun`,
  () => undefined,
);

/** A running example: what it printed so far, a wait for a line, and its end. */
export interface ExampleProcess {
  readonly child: Deno.ChildProcess;
  /** stdout so far. */
  out(): string;
  /** Resolves once stdout matches `what`; throws with the output after `timeoutMs`. */
  until(what: RegExp): Promise<void>;
  /** The exit code, once the process has ended and its stdout is read. */
  ended(): Promise<number>;
  /** SIGKILL, if still running. */
  kill(): void;
}

/** Runs `path` (from the repository root) under `runtime` with `env`. */
export function spawnExample(
  path: string,
  runtime: "deno" | "bun",
  env: Record<string, string>,
  timeoutMs: number,
): ExampleProcess {
  const file = `${root}${path}`;
  const child = new Deno.Command(runtime === "deno" ? Deno.execPath() : bun!, {
    args: runtime === "deno" ? ["run", "-A", file] : ["run", file],
    cwd: root,
    env: { ...env, NO_COLOR: "1" },
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  let out = "";
  const reading = child.stdout.pipeThrough(new TextDecoderStream()).pipeTo(
    new WritableStream({ write: (chunk) => void (out += chunk) }),
  );
  return {
    child,
    out: () => out,
    until: async (what) => {
      const deadline = Date.now() + timeoutMs;
      while (!what.test(out)) {
        if (Date.now() > deadline) throw new Error(`no ${what} in:\n${out}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
    ended: async () => {
      const { code } = await child.status;
      await reading;
      return code;
    },
    kill: () => {
      try {
        child.kill("SIGKILL");
      } catch { /* already exited */ }
    },
  };
}
