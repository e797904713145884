/**
 * Given / when / then specifications for deciders and reactors, run on the real parts (a decider
 * over the memory store with your codec; a reactor as a pipeline of memory source and
 * `streamsSink`), so a spec also catches events your codec cannot read back.
 *
 * ```ts
 * import { deciderSpec } from "@impel/impel/testing";
 * import { createCodec } from "@impel/impel";
 *
 * type Event = { type: "Charged"; data: { amount: number } };
 * const spec = deciderSpec<Event, number>({
 *   codec: createCodec<Event>({ Charged: {} }),
 *   initial: 0,
 *   fold: (total, events) => events.reduce((t, e) => t + e.data.amount, total),
 * });
 * await spec
 *   .given([{ type: "Charged", data: { amount: 5 } }])
 *   .when((total) => total < 10 ? [{ type: "Charged", data: { amount: 1 } }] : [])
 *   .then([{ type: "Charged", data: { amount: 1 } }]);
 * ```
 *
 * @module
 */
import { deepStrictEqual, fail, match } from "node:assert/strict";
import type { Codec, TypedEvent } from "./core/codec.ts";
import { createDecider, type DecideContext, type Decision } from "./core/decider.ts";
import { InvalidArgumentError } from "./core/errors.ts";
import type { StreamEvent } from "./core/event.ts";
import type { Handler } from "./core/scheduler.ts";
import { run, streamsSink } from "./core/sink.ts";
import type { EventData, EventStore } from "./core/store.ts";
import { categoryOf } from "./core/streamName.ts";
import { createMemoryStore, memorySource } from "./sources/memory.ts";

/**
 * What a decider spec needs: the decider's codec, initial state and fold.
 *
 * @example
 * ```ts
 * import type { DeciderSpecOptions } from "@impel/impel/testing";
 * import { createCodec } from "@impel/impel";
 * type Event = { type: "Opened"; data: Record<string, never> };
 * const options: DeciderSpecOptions<Event, boolean> = {
 *   codec: createCodec<Event>({ Opened: {} }),
 *   initial: false,
 *   fold: (open, events) => open || events.length > 0,
 * };
 * ```
 *
 * @category Testing
 */
export interface DeciderSpecOptions<E extends TypedEvent, S> {
  /** The codec the decider stores events with. */
  readonly codec: Codec<E>;
  /** The state of an empty stream. */
  readonly initial: S;
  /** Applies events to a state. */
  readonly fold: (state: S, events: readonly E[]) => S;
  /** The stream the spec runs on (default `Spec-1`). */
  readonly stream?: string;
}

/**
 * A decision under test, with the assertions that end a spec. Each returns a promise that
 * rejects with an `AssertionError` describing the difference.
 *
 * @example
 * ```ts
 * import { deciderSpec, type DecisionSpec } from "@impel/impel/testing";
 * import { createCodec } from "@impel/impel";
 * type Event = { type: "Opened"; data: Record<string, never> };
 * const spec = deciderSpec<Event, boolean>({
 *   codec: createCodec<Event>({ Opened: {} }),
 *   initial: false,
 *   fold: (open, events) => open || events.length > 0,
 * });
 * const opening: DecisionSpec<Event, string> = spec.given([]).when((open) =>
 *   open ? { events: [], result: "already" } : { events: [{ type: "Opened", data: {} }], result: "opened" }
 * );
 * await opening.thenResult("opened");
 * ```
 *
 * @category Testing
 */
export interface DecisionSpec<E extends TypedEvent, R> {
  /** The decision appended exactly these events (decoded back through the codec). */
  then(expected: readonly E[]): Promise<void>;
  /** The decision appended nothing. */
  thenNothing(): Promise<void>;
  /** The decision's result equals `expected` (deeply); `events` too when given. */
  thenResult(expected: R, events?: readonly E[]): Promise<void>;
  /** The decision threw: an instance of the class, or an error whose message matches. */
  thenThrows(expected: (new (...args: never[]) => Error) | RegExp): Promise<void>;
}

/**
 * The start of a spec: the events already in the stream.
 *
 * @example
 * ```ts
 * import { deciderSpec, type GivenSpec } from "@impel/impel/testing";
 * import { createCodec } from "@impel/impel";
 * type Event = { type: "Opened"; data: Record<string, never> };
 * const spec: GivenSpec<Event, boolean> = deciderSpec<Event, boolean>({
 *   codec: createCodec<Event>({ Opened: {} }),
 *   initial: false,
 *   fold: (open, events) => open || events.length > 0,
 * });
 * await spec.given([{ type: "Opened", data: {} }]).when(() => []).thenNothing();
 * ```
 *
 * @category Testing
 */
export interface GivenSpec<E extends TypedEvent, S> {
  /** The stream's history, appended through the codec before the decision. */
  given(events: readonly E[]): {
    /** The decision under test, run by a real decider's `transact`. */
    when<R = void>(
      decide: (state: S, context: DecideContext) => Decision<E, R> | Promise<Decision<E, R>>,
    ): DecisionSpec<E, R>;
  };
}

/**
 * A given/when/then specification of a decision (Emmett's style): `given` events are appended
 * to a fresh memory store through the codec, `when` runs the decision through a real decider
 * (so state is folded from decoded events), and `then…` compares what was appended, decoded
 * back, with what you expect.
 *
 * @example
 * ```ts
 * import { deciderSpec } from "@impel/impel/testing";
 * import { createCodec } from "@impel/impel";
 *
 * type Event = { type: "Charged"; data: { amount: number } };
 * const spec = deciderSpec<Event, number>({
 *   codec: createCodec<Event>({ Charged: {} }),
 *   initial: 0,
 *   fold: (total, events) => events.reduce((t, e) => t + e.data.amount, total),
 * });
 * const charge = (amount: number) => (total: number) => {
 *   if (total + amount > 10) throw new RangeError("over the limit");
 *   return [{ type: "Charged" as const, data: { amount } }];
 * };
 * await spec.given([{ type: "Charged", data: { amount: 9 } }]).when(charge(5)).thenThrows(RangeError);
 * await spec.given([]).when(charge(5)).then([{ type: "Charged", data: { amount: 5 } }]);
 * ```
 *
 * @category Testing
 */
export function deciderSpec<E extends TypedEvent, S>(
  options: DeciderSpecOptions<E, S>,
): GivenSpec<E, S> {
  if (typeof options?.fold !== "function") {
    throw new InvalidArgumentError("fold", "must be a function");
  }
  const stream = options.stream ?? "Spec-1";
  return {
    given: (history) => ({
      when<R>(
        decide: (state: S, context: DecideContext) => Decision<E, R> | Promise<Decision<E, R>>,
      ): DecisionSpec<E, R> {
        const outcome = (async () => {
          const store = createMemoryStore();
          const decider = createDecider<E, S>({ ...options, store, maxTurnMs: 0 });
          if (history.length > 0) {
            await store.append(stream, history.map((e) => options.codec.encode(e)), 0);
          }
          try {
            const result = await decider.transact(stream, decide);
            const appended = await store.readStream(stream, { fromIndex: history.length });
            const events = appended.map((e) => decodeOrFail(options.codec, e));
            return { ok: true as const, result, events };
          } catch (error) {
            return { ok: false as const, error };
          }
        })();
        const succeeded = async () => {
          const o = await outcome;
          if (!o.ok) fail(`the decision threw ${describeError(o.error)}`);
          return o;
        };
        return {
          then: async (expected) => deepStrictEqual((await succeeded()).events, expected),
          thenNothing: async () => deepStrictEqual((await succeeded()).events, []),
          thenResult: async (expected, events) => {
            const o = await succeeded();
            deepStrictEqual(o.result, expected);
            if (events !== undefined) deepStrictEqual(o.events, events);
          },
          thenThrows: async (expected) => {
            const o = await outcome;
            if (o.ok) fail(`the decision succeeded, appending ${JSON.stringify(o.events)}`);
            if (expected instanceof RegExp) match(String((o.error as Error)?.message), expected);
            else if (!(o.error instanceof expected)) {
              fail(`expected a ${expected.name}, got ${describeError(o.error)}`);
            }
          },
        };
      },
    }),
  };
}

function decodeOrFail<E extends TypedEvent>(codec: Codec<E>, event: StreamEvent): E {
  try {
    return codec.decode(event) as E;
  } catch (error) {
    return fail(
      `the decision appended an event its codec cannot read back: ${describeError(error)}`,
    );
  }
}

const describeError = (error: unknown) =>
  error instanceof Error ? `${error.name}: ${error.message}` : String(error);

/**
 * Streams and their events, as a reactor spec's `given`, `when` and `then` take them.
 *
 * @example
 * ```ts
 * import type { StreamEvents } from "@impel/impel/testing";
 * const events: StreamEvents = { "Order-1": [{ type: "Placed", data: { total: 5 } }] };
 * ```
 *
 * @category Testing
 */
export type StreamEvents = Readonly<Record<string, readonly EventData[]>>;

/**
 * A reactor under test, with the assertions that end a spec.
 *
 * @example
 * ```ts
 * import { reactorSpec, type ReactorOutcome } from "@impel/impel/testing";
 * const outcome: ReactorOutcome = reactorSpec({ handler: () => () => {} })
 *   .given({})
 *   .when({ "Order-1": [{ type: "Placed", data: {} }] });
 * await outcome.thenNothing();
 * ```
 *
 * @category Testing
 */
export interface ReactorOutcome {
  /**
   * Exactly these events were appended while handling (by stream; types and data compared,
   * metadata ignored), and no stream failed.
   */
  then(expected: StreamEvents): Promise<void>;
  /** Nothing was appended while handling, and no stream failed. */
  thenNothing(): Promise<void>;
  /** Checks of your own, on the store after handling (e.g. a read model's state). */
  thenStore(check: (store: EventStore) => void | Promise<void>): Promise<void>;
  /** The handler kept failing on `stream`, with an error whose message matches `error`. */
  thenFails(stream: string, error: RegExp): Promise<void>;
}

/**
 * The start of a reactor spec: the store's history, then the events the reactor handles.
 *
 * @example
 * ```ts
 * import { reactorSpec, type ReactorSpec } from "@impel/impel/testing";
 * const spec: ReactorSpec = reactorSpec({ handler: () => () => {} });
 * await spec.given({}).when({ "Order-1": [{ type: "Placed", data: {} }] }).thenNothing();
 * ```
 *
 * @category Testing
 */
export interface ReactorSpec {
  /** The store's history before the reactor starts (the reactor does not handle it). */
  given(history: StreamEvents): {
    /** The events the reactor handles. */
    when(events: StreamEvents): ReactorOutcome;
  };
}

/**
 * What a reactor spec runs: a handler made on the store it writes to.
 *
 * @example
 * ```ts
 * import type { ReactorSpecOptions } from "@impel/impel/testing";
 * const options: ReactorSpecOptions = {
 *   handler: (store) => async (stream, events) => {
 *     await store.append(`Audit-${stream}`, events.map((e) => ({ type: e.type, data: e.data })), "any");
 *   },
 * };
 * ```
 *
 * @category Testing
 */
export interface ReactorSpecOptions {
  /** Makes the handler, given the store the spec runs on. */
  readonly handler: (store: EventStore) => Handler;
  /** Categories the reactor reads (default: those of the `when` streams). */
  readonly categories?: readonly string[];
  /** How long to wait for the reactor to finish (default 5 000 ms). */
  readonly timeoutMs?: number;
}

/**
 * A given/when/then specification of a reactor: `given` events are the store's history (the
 * reactor starts after them, as if it had handled them), `when` events are appended and handled
 * by a real pipeline (memory source, `streamsSink`, the default failure policy's retries), and
 * `then…` compares what the handler appended, stream by stream.
 *
 * @example
 * ```ts
 * import { reactorSpec } from "@impel/impel/testing";
 *
 * const spec = reactorSpec({
 *   handler: (store) => async (stream, events) => {
 *     const total = events.reduce((t, e) => t + (e.data as { total: number }).total, 0);
 *     await store.append(`Invoice-${stream.split("-")[1]}`, [{ type: "Raised", data: { total } }], "any");
 *   },
 * });
 * await spec
 *   .given({ "Invoice-1": [{ type: "Raised", data: { total: 3 } }] })
 *   .when({ "Order-1": [{ type: "Placed", data: { total: 5 } }] })
 *   .then({ "Invoice-1": [{ type: "Raised", data: { total: 5 } }] });
 * ```
 *
 * @category Testing
 */
export function reactorSpec(options: ReactorSpecOptions): ReactorSpec {
  if (typeof options?.handler !== "function") {
    throw new InvalidArgumentError("handler", "must be a function of the store");
  }
  const timeoutMs = options.timeoutMs ?? 5_000;
  return {
    given: (history) => ({
      when(events) {
        const outcome = (async () => {
          const store = createMemoryStore();
          for (const [stream, list] of Object.entries(history)) {
            if (list.length > 0) await store.append(stream, list, "any");
          }
          const categories = options.categories ??
            [...new Set(Object.keys(events).map(categoryOf))];
          const sink = streamsSink({
            statsIntervalMs: 0,
            retry: { initialDelayMs: 1, maxDelayMs: 10 },
            handler: options.handler(store),
          });
          const stop = new AbortController();
          const running = run(memorySource({ store, categories, startFrom: "tail" }), sink, {
            signal: stop.signal,
          });
          try {
            await sink.monitor.awaitCompletion({ tail: true, timeoutMs });
            for (const [stream, list] of Object.entries(events)) {
              if (list.length > 0) await store.append(stream, list, "any");
            }
            const handled = store.head; // what the handler appends comes after this
            const failing = () => sink.stats().failing;
            let settled = false;
            try {
              await Promise.race([
                sink.monitor.awaitCompletion({ tail: true, timeoutMs }),
                // A stream that keeps failing never completes: stop waiting once it has retried.
                (async () => {
                  while (!settled && !failing().some((f) => f.attempts >= 3)) {
                    await new Promise((r) => setTimeout(r, 5));
                  }
                })(),
              ]);
            } finally {
              settled = true; // the other one stops polling, so nothing keeps the process alive
            }
            const appended: Record<string, EventData[]> = {};
            for (const { stream, event } of store.readLog(handled, store.head)) {
              (appended[stream] ??= []).push({ type: event.type, data: event.data });
            }
            return { store, appended, failing: failing() };
          } finally {
            stop.abort();
            await running.catch(() => {});
          }
        })();
        const healthy = async () => {
          const o = await outcome;
          if (o.failing.length > 0) {
            const f = o.failing[0];
            fail(`the handler kept failing on ${f.stream}: ${describeError(f.error)}`);
          }
          return o;
        };
        return {
          then: async (expected) => {
            const strip = (m: StreamEvents) =>
              Object.fromEntries(
                Object.entries(m).map((
                  [s, l],
                ) => [s, l.map((e) => ({ type: e.type, data: e.data }))]),
              );
            deepStrictEqual((await healthy()).appended, strip(expected));
          },
          thenNothing: async () => deepStrictEqual((await healthy()).appended, {}),
          thenStore: async (check) => await check((await healthy()).store),
          thenFails: async (stream, error) => {
            const f = (await outcome).failing.find((f) => f.stream === stream);
            if (f === undefined) fail(`${stream} did not fail`);
            match(describeError(f.error), error);
          },
        };
      },
    }),
  };
}
