/**
 * Stopping a reactor process on SIGINT and SIGTERM, the same way on Deno and Bun.
 *
 * @module
 */
import { InvalidArgumentError } from "./errors.ts";

/** The signals a reactor can stop on. */
export type StopSignal = "SIGINT" | "SIGTERM" | "SIGHUP";

const NUMBERS: Record<StopSignal, number> = { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 };

/**
 * Options of {@linkcode stopOnSignals}.
 *
 * @example
 * ```ts
 * import type { StopOnSignalsOptions } from "@impel/impel";
 * const options: StopOnSignalsOptions = {
 *   signals: ["SIGINT", "SIGTERM"],
 *   onSignal: (name) => console.error(`${name}: stopping`),
 * };
 * ```
 *
 * @category Pipeline
 */
export interface StopOnSignalsOptions {
  /** The signals that stop (default SIGINT and SIGTERM). */
  readonly signals?: readonly StopSignal[];
  /** Called with the first signal's name, before the abort. */
  readonly onSignal?: (signal: StopSignal) => void;
  /**
   * A second signal while stopping ends the process at once with exit code 128 + the signal's
   * number, as a shell expects (default true): a handler that ignores its abort signal cannot
   * hold the process forever. Checkpoints not yet committed are read again after a restart.
   */
  readonly exitOnSecond?: boolean;
}

/**
 * An abort signal that fires on the first stop signal, and the means to stop listening.
 *
 * @example
 * ```ts
 * import { type SignalStop, stopOnSignals } from "@impel/impel";
 * const stop: SignalStop = stopOnSignals();
 * console.log(stop.signal.aborted); // false
 * stop.dispose();
 * ```
 *
 * @category Pipeline
 */
export interface SignalStop extends Disposable {
  /** Aborted on the first signal, with the reason `"SIGINT"`, `"SIGTERM"` or `"SIGHUP"`. */
  readonly signal: AbortSignal;
  /** Removes the listeners; the signals then act as they did before. */
  dispose(): void;
}

interface Runtime {
  Deno?: {
    addSignalListener(signal: string, fn: () => void): void;
    removeSignalListener(signal: string, fn: () => void): void;
    exit(code: number): never;
  };
  process?: {
    on(signal: string, fn: () => void): unknown;
    off(signal: string, fn: () => void): unknown;
    exit(code: number): never;
  };
}

/**
 * Listens for SIGINT and SIGTERM (Ctrl-C, `kill`, a container's stop) and aborts the returned
 * signal on the first, so that `run()` drains in-flight handlers and commits its checkpoints;
 * a second signal exits at once. Works on Deno (`Deno.addSignalListener`) and Bun (`process.on`).
 *
 * @example
 * ```ts
 * import { run, stopOnSignals, streamsSink } from "@impel/impel";
 * import { createMemoryStore, memorySource } from "@impel/impel/sources/memory";
 *
 * using stop = stopOnSignals({ onSignal: (name) => console.error(`${name}: stopping`) });
 * const sink = streamsSink({ handler: () => {} });
 * const running = run(memorySource({ store: createMemoryStore() }), sink, { signal: stop.signal });
 * queueMicrotask(() => stop.dispose()); // a real reactor waits for the signal instead
 * await Promise.race([running, new Promise((r) => setTimeout(r, 10))]);
 * ```
 *
 * @category Pipeline
 */
export function stopOnSignals(options: StopOnSignalsOptions = {}): SignalStop {
  const signals: readonly StopSignal[] = options.signals ?? ["SIGINT", "SIGTERM"];
  if (!Array.isArray(options.signals ?? []) || signals.some((s) => !Object.hasOwn(NUMBERS, s))) {
    throw new InvalidArgumentError(
      "signals",
      `must list SIGINT, SIGTERM or SIGHUP, got ${JSON.stringify(signals)}`,
    );
  }
  const runtime = globalThis as Runtime;
  const exit = (code: number) =>
    runtime.Deno ? runtime.Deno.exit(code) : runtime.process?.exit(code);
  const controller = new AbortController();
  const listeners = signals.map((name) => {
    const fn = () => {
      if (!controller.signal.aborted) {
        options.onSignal?.(name);
        controller.abort(name);
      } else if (options.exitOnSecond ?? true) {
        exit(128 + NUMBERS[name]);
      }
    };
    if (runtime.Deno) runtime.Deno.addSignalListener(name, fn);
    else runtime.process?.on(name, fn);
    return { name, fn };
  });
  let disposed = false;
  const dispose = () => {
    if (disposed) return;
    disposed = true;
    for (const { name, fn } of listeners) {
      if (runtime.Deno) runtime.Deno.removeSignalListener(name, fn);
      else runtime.process?.off(name, fn);
    }
  };
  return { signal: controller.signal, dispose, [Symbol.dispose]: dispose };
}
