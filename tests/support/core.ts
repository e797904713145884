// Fixtures for the tests of the core and of the memory and feed sources (not a test file itself).
import {
  type Batch,
  type CheckpointKey,
  run,
  type StreamEvent,
  streamsSink,
  type StreamsSinkOptions,
} from "../../mod.ts";

/**
 * Registers a test with Deno's op and resource sanitizers on. Deno 2 turns them off by default;
 * on, a timer or stream left behind by a stopped pipeline fails the test that stopped it.
 */
export function test(name: string, fn: (t: Deno.TestContext) => void | Promise<void>): void {
  Deno.test({ name, fn, sanitizeOps: true, sanitizeResources: true });
}

/** The checkpoint key of a `memorySource` read under group "g". */
export const KEY: CheckpointKey = { source: "memory", tranche: "all", group: "g" };

/** An event at `index` with no data, id `${index}` and an estimated size of `size` bytes. */
export const ev = (index: number, size = 1): StreamEvent => ({
  index,
  type: "T",
  data: null,
  meta: null,
  id: `${index}`,
  time: new Date(0),
  size,
});

/** The items of a batch as [stream, event index] pairs. */
export type Items = Array<[string, number]>;

/** A batch of tranche "0" at `position`, each item an `ev(index, size)`. */
export const batch = (position: number, items: Items, isTail: boolean, size = 1): Batch => ({
  tranche: "0",
  position: BigInt(position),
  isTail,
  items: items.map(([stream, i]) => ({ stream, event: ev(i, size) })),
});

/** A file's own `batch`, whose `isTail` defaults to what that file's tests mostly need. */
export type BatchOf = (position: number, items: Items, isTail?: boolean) => Batch;

/** `batch` with `isTail` defaulting to `defaults.isTail` and events of `defaults.size` bytes. */
export const batchBuilder =
  (defaults: { isTail: boolean; size?: number }): BatchOf =>
  (position, items, isTail = defaults.isTail) => batch(position, items, isTail, defaults.size);

/** Resolves after `ms` milliseconds. */
export const sleep = (ms: number): Promise<unknown> => new Promise((r) => setTimeout(r, ms));

/** A promise with its resolver, for handlers that wait on the test. */
export function gate(): { open: () => void; opened: Promise<void> } {
  let open!: () => void;
  const opened = new Promise<void>((r) => (open = r));
  return { open, opened };
}

/** Settles `p`, or reports that it did not settle within `ms` (a fault must never be a stall). */
export function within<T>(
  p: Promise<T>,
  ms: number,
): Promise<{ value?: T; error?: unknown; timedOut?: true }> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<{ timedOut: true }>((
    resolve,
  ) => (timer = setTimeout(() => resolve({ timedOut: true }), ms)));
  return Promise.race([p.then((value) => ({ value }), (error) => ({ error })), timeout]).finally(
    () => clearTimeout(timer),
  );
}

/**
 * Runs a source into a sink until every tranche is at its tail, then stops the pipeline; returns
 * `stream@index` of each event handled, in order, appended to `seen`. The sink is made before the
 * source, because a source starts reading as soon as it exists.
 */
export async function handleToTail(
  source: () => ReadableStream<Batch>,
  options: {
    timeoutMs: number;
    sink?: Omit<StreamsSinkOptions, "handler">;
    seen?: string[];
  },
): Promise<string[]> {
  const seen = options.seen ?? [];
  const sink = streamsSink({
    statsIntervalMs: 0,
    ...options.sink,
    handler: (stream, events) => void seen.push(...events.map((e) => `${stream}@${e.index}`)),
  });
  const ac = new AbortController();
  const running = run(source(), sink, { signal: ac.signal });
  try {
    await sink.monitor.awaitCompletion({ tail: true, timeoutMs: options.timeoutMs });
  } finally {
    ac.abort();
    await running;
  }
  return seen;
}
