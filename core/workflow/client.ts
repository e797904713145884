/**
 * Commands and reads on a workflow's instances over a store, without running anything: the
 * runtime a runner shares, and {@linkcode workflowClient} for a process that only records
 * commands.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { TypedEvent } from "../codec.ts";
import { createDecider, createStateCache, type Decider, type StateCache } from "../decider.ts";
import { checkInteger, describe, InvalidArgumentError } from "../errors.ts";
import type { EventStore } from "../store.ts";
import { checkStreamName, type StreamName } from "../streamName.ts";
import { checkClock, type Clock, systemClock } from "../timers.ts";
import {
  checkId,
  checkInput,
  defineWorkflow,
  type PendingTimer,
  type WorkflowDefinition,
  type WorkflowRoute,
} from "./definition.ts";
import { type Arrival, createDecide, type DecideOn, tracing } from "./decision.ts";
import {
  type Internal,
  internalFold,
  type PendingSend,
  type Stored,
  storedCodec,
} from "./instance.ts";

/**
 * An instance as {@linkcode WorkflowClient.read} returns it.
 *
 * @example
 * ```ts
 * import type { WorkflowInstance } from "@impel/impel/workflow";
 * const instance: WorkflowInstance<string> = {
 *   id: "o1",
 *   stream: "Fulfilment-o1",
 *   state: "waiting",
 *   version: 3,
 *   pending: [],
 *   timers: [{ name: "payment", due: 900_000 }],
 * };
 * ```
 *
 * @category Workflows
 */
export interface WorkflowInstance<S> {
  /** The instance id. */
  readonly id: string;
  /** Its stream. */
  readonly stream: StreamName;
  /** The workflow's state. */
  readonly state: S;
  /** The stream's version (event count). */
  readonly version: number;
  /** Sends not yet delivered. */
  readonly pending: readonly PendingSend[];
  /** Timers pending. */
  readonly timers: readonly PendingTimer[];
}

/**
 * What {@linkcode WorkflowClient.handle} reports.
 *
 * @example
 * ```ts
 * import type { HandleOutcome } from "@impel/impel/workflow";
 * const outcome: HandleOutcome<string> = { state: "waiting", version: 3, appended: 3, duplicate: false };
 * ```
 *
 * @category Workflows
 */
export interface HandleOutcome<S> {
  /** The workflow's state after the input. */
  readonly state: S;
  /** The stream's version after the input. */
  readonly version: number;
  /** Events appended (the workflow's and the runtime's). */
  readonly appended: number;
  /** The input's id was already recorded: nothing was appended. */
  readonly duplicate: boolean;
}

/**
 * Options of {@linkcode WorkflowClient.handle}.
 *
 * @example
 * ```ts
 * import type { HandleOptions } from "@impel/impel/workflow";
 * const options: HandleOptions = { id: "order-o1-placed", correlationId: "req-17" };
 * ```
 *
 * @category Workflows
 */
export interface HandleOptions {
  /**
   * The input's id: a retry with the same id is recorded once (default: a random UUID, so
   * retries are not recognised). The runner's own forms are refused with
   * `InvalidArgumentError`: `{instance stream}#{index}` (its timers' firings) and, from
   * {@linkcode workflowClient}, `{stream of a route's category}@{index}` (routed events).
   */
  readonly id?: string;
  /**
   * The correlation id to carry (default: the one the instance's outbox entries carry, else the
   * instance's stream name).
   */
  readonly correlationId?: string;
}

/**
 * Commands and reads on a workflow's instances, over a store; usable without a runner (e.g. in
 * a web process while another process runs {@linkcode startWorkflow}).
 *
 * @example
 * ```ts
 * import { createCodec } from "@impel/impel";
 * import { defineWorkflow, workflowClient } from "@impel/impel/workflow";
 * import { createMemoryStore } from "@impel/impel/sources/memory";
 *
 * type Event = { type: "Noted"; data: { text: string } };
 * type Input = { type: "Note"; data: { text: string } };
 * const notes = defineWorkflow<Event, number, Input, never>({
 *   category: "Notes",
 *   codec: createCodec<Event>({ Noted: {} }),
 *   initial: 0,
 *   fold: (n, events) => n + events.length,
 *   decide: (_, input) => ({ events: [{ type: "Noted", data: input.data }] }),
 * });
 * const client = workflowClient(notes, { store: createMemoryStore() });
 * await client.handle("n1", { type: "Note", data: { text: "hi" } }, { id: "c1" });
 * const again = await client.handle("n1", { type: "Note", data: { text: "hi" } }, { id: "c1" });
 * console.log(again.duplicate, (await client.read("n1")).state); // true 1
 * ```
 *
 * @category Workflows
 */
export interface WorkflowClient<S, I extends TypedEvent> {
  /** The stream of instance `id`. */
  streamOf(id: string): StreamName;
  /** Decides on `input` for instance `id` and records the decision (once per input id). */
  handle(id: string, input: I, options?: HandleOptions): Promise<HandleOutcome<S>>;
  /** The instance's state, pending sends and timers. */
  read(id: string): Promise<WorkflowInstance<S>>;
}

/**
 * Options of {@linkcode workflowClient}.
 *
 * @example
 * ```ts
 * import { createStateCache } from "@impel/impel";
 * import { manualClock, type WorkflowClientOptions } from "@impel/impel/workflow";
 * import { createMemoryStore } from "@impel/impel/sources/memory";
 * const options: WorkflowClientOptions = {
 *   store: createMemoryStore(),
 *   clock: manualClock(),
 *   cache: createStateCache(),
 *   maxAttempts: 5,
 * };
 * ```
 *
 * @category Workflows
 */
export interface WorkflowClientOptions {
  /** Where instance streams live. */
  readonly store: EventStore;
  /** The clock decisions are told (default {@linkcode systemClock}). */
  readonly clock?: Clock;
  /** Folded instances kept between calls (default: a cache of 10 000 entries). */
  readonly cache?: StateCache;
  /** Decisions tried per input before a conflict fails it (default 10). */
  readonly maxAttempts?: number;
  /**
   * Input ids remembered per instance (default 100; the decider's `idempotencyWindow`): a
   * re-delivered input is recognised only within the instance's last this many keyed appends.
   * Past it, it is decided again as a new input (a command's decision is recorded a second time;
   * a reply or a timer still records nothing, as its send or timer is no longer pending). Size it
   * to the most inputs an instance records between a caller's first try and its last retry.
   */
  readonly idempotencyWindow?: number;
}

/**
 * The internals {@linkcode startWorkflow} shares with {@linkcode workflowClient}.
 *
 * @example
 * ```ts
 * import type { Runtime } from "./client.ts";
 * const categoryOf = (runtime: Runtime<never, null, never>) => runtime.category;
 * ```
 */
export interface Runtime<E extends TypedEvent, S, I extends TypedEvent>
  extends WorkflowClient<S, I> {
  /** The workflow's category and routes, checked. */
  readonly category: string;
  readonly routes: readonly WorkflowRoute<I>[];
  readonly decider: Decider<Stored<E>, Internal<S>>;
  readonly clock: Clock;
  readonly fold: (s: Internal<S>, events: readonly Stored<E>[]) => Internal<S>;
  /** The events a decision on `arrival` records, given instance `s` at `version`. */
  readonly decideOn: DecideOn<E, S>;
  /** Logs and counts an input ignored for `reason`. */
  noteIgnored(stream: StreamName, arrival: Arrival, reason: string): void;
  /** Inputs ignored so far (see {@linkcode WorkflowDecision.ignored}). */
  ignoredInputs(): number;
  /**
   * {@linkcode WorkflowClient.handle} for callers: also refuses the ids the runner gives routed
   * events (`{route stream}@{index}`), which `handle` must take from the runner itself.
   */
  handleCommand(id: string, input: I, options?: HandleOptions): Promise<HandleOutcome<S>>;
}

/**
 * Checks `definition` and `options` and builds the runtime over `options.store`.
 *
 * @example
 * ```ts
 * import { createCodec } from "../codec.ts";
 * import { createMemoryStore } from "../../sources/memory.ts";
 * import { createRuntime } from "./client.ts";
 * const runtime = createRuntime({
 *   category: "Notes",
 *   codec: createCodec<{ type: "Noted"; data: null }>({ Noted: {} }),
 *   initial: 0,
 *   fold: (n: number, es: readonly unknown[]) => n + es.length,
 *   decide: () => ({ events: [{ type: "Noted", data: null }] }),
 * }, { store: createMemoryStore() });
 * console.log(runtime.streamOf("n1")); // "Notes-n1"
 * ```
 */
export function createRuntime<E extends TypedEvent, S, I extends TypedEvent, M extends TypedEvent>(
  definition: WorkflowDefinition<E, S, I, M>,
  options: WorkflowClientOptions,
  sendTypes?: ReadonlySet<string>,
): Runtime<E, S, I> {
  const def = defineWorkflow(definition);
  if (options === null || typeof options !== "object") {
    throw new InvalidArgumentError("options", "must be an object with a store");
  }
  const { store } = options;
  if (typeof store?.readStream !== "function" || typeof store.append !== "function") {
    throw new InvalidArgumentError("store", "must be an EventStore (readStream and append)");
  }
  const clock = checkClock(options.clock ?? systemClock);
  const maxAttempts = checkInteger("maxAttempts", options.maxAttempts ?? 10, 1);
  const idempotencyWindow = checkInteger(
    "idempotencyWindow",
    options.idempotencyWindow ?? 100,
    1,
  );
  const snapshot = def.snapshot;
  const fold = internalFold<E, S>(def.fold, snapshot?.decode);
  const initial: Internal<S> = { state: def.initial, next: 0, pending: [], timers: [] };
  const encodeState = snapshot?.encode ?? ((state: S) => state as unknown);
  const decider = createDecider<Stored<E>, Internal<S>>({
    store,
    codec: storedCodec(def.codec),
    initial,
    fold,
    cache: options.cache ?? createStateCache(),
    maxAttempts,
    idempotencyWindow,
    // Inputs of one instance arrive from several streams at once: back off briefly.
    retry: { initialDelayMs: 5, maxDelayMs: 200 },
    ...(snapshot === undefined ? {} : {
      snapshot: {
        isOrigin: (e: Stored<E>) => e.type === "WorkflowSnapshot",
        toSnapshot: (s: Internal<S>): Stored<E> => ({
          type: "WorkflowSnapshot",
          data: { ...s, state: encodeState(s.state) },
        }),
        every: snapshot.every,
      },
    }),
  });
  const log = getLogger(["impel", "workflow", def.category]);
  const streamOf = (id: string) => checkStreamName(`${def.category}-${checkId(id)}`);
  const decideOn = createDecide(def, clock, sendTypes);

  let ignoredCount = 0;
  function noteIgnored(stream: StreamName, arrival: Arrival, reason: string): void {
    ignoredCount++;
    log.warn("{stream}: input {input} ({inputId}) ignored: {reason}", {
      stream,
      input: arrival.input.type,
      inputId: arrival.id,
      reason,
      correlationId: arrival.correlationId,
      causationId: arrival.id,
    });
  }

  async function handle(id: string, input: I, handleOptions: HandleOptions = {}) {
    const stream = streamOf(id);
    checkInput(input);
    if (handleOptions === null || typeof handleOptions !== "object") {
      throw new InvalidArgumentError(
        "options",
        `must be an object, got ${describe(handleOptions)}`,
      );
    }
    const inputId = checkId(handleOptions.id ?? crypto.randomUUID(), "options.id");
    // A timer's firing is recorded under its id, `{stream}#{index}`: an input with that id would
    // make the firing a duplicate while the timer stays pending and due.
    if (isIndexed(inputId, `${stream}#`)) {
      throw new InvalidArgumentError(
        "options.id",
        `${JSON.stringify(inputId)} has the form of the ids of ${stream}'s timers ` +
          "({stream}#{index}), which the runner records their firings under: choose another id",
      );
    }
    // An input without one joins the instance's correlation (a service that dropped it must not
    // cut the chain), or starts one named after the instance.
    const correlationId = handleOptions.correlationId ??
      (await decider.query(stream, (s) => s.correlationId)) ?? stream;
    if (typeof correlationId !== "string" || correlationId.length === 0) {
      throw new InvalidArgumentError(
        "correlationId",
        `must be a non-empty string, got ${describe(correlationId)}`,
      );
    }
    const arrival = { id: inputId, input, correlationId };
    let ignored: string | undefined;
    const outcome = await decider.transactEx(
      stream,
      (s, { version }) => {
        const decided = decideOn(stream, s, version, arrival);
        ignored = decided.ignored;
        return decided.events;
      },
      { idempotencyKey: inputId, context: tracing(arrival) },
    );
    logDecision(stream, arrival, outcome.appended, outcome.duplicate);
    if (ignored !== undefined && !outcome.duplicate) noteIgnored(stream, arrival, ignored);
    return {
      state: outcome.state.state,
      version: outcome.version,
      appended: outcome.appended,
      duplicate: outcome.duplicate,
    };
  }

  async function handleCommand(id: string, input: I, handleOptions: HandleOptions = {}) {
    const inputId = handleOptions?.id;
    const route = typeof inputId === "string"
      ? (def.routes ?? []).find((r) => inputId.startsWith(`${r.category}-`))
      : undefined;
    // A routed event's input is recorded under `{its stream}@{its index}`.
    if (route !== undefined && /@\d+$/.test(inputId!)) {
      throw new InvalidArgumentError(
        "options.id",
        `${JSON.stringify(inputId)} has the form of the ids of events routed from ` +
          `${route.category} ({stream}@{index}), which the runner records them under: ` +
          "choose another id",
      );
    }
    return await handle(id, input, handleOptions);
  }

  function logDecision(stream: StreamName, arrival: Arrival, appended: number, duplicate: boolean) {
    log.debug("{stream}: input {input} ({inputId}) {outcome}", {
      stream,
      input: arrival.input.type,
      inputId: arrival.id,
      outcome: duplicate ? "already recorded" : `recorded ${appended} events`,
      correlationId: arrival.correlationId,
      causationId: arrival.id,
    });
  }

  return {
    category: def.category,
    routes: def.routes ?? [],
    decider,
    clock,
    fold,
    decideOn,
    noteIgnored,
    ignoredInputs: () => ignoredCount,
    streamOf,
    handle,
    handleCommand,
    async read(id) {
      const stream = streamOf(id);
      return await decider.query(stream, (s, { version }) => ({
        id,
        stream,
        state: s.state,
        version,
        pending: s.pending,
        timers: s.timers.map((t) => ({ name: t.name, due: t.due })),
      }));
    },
  };
}

/** Whether `id` is `prefix` followed by a decimal index. */
function isIndexed(id: string, prefix: string): boolean {
  return id.length > prefix.length && id.startsWith(prefix) &&
    /^\d+$/.test(id.slice(prefix.length));
}

/**
 * Creates a {@linkcode WorkflowClient} for `definition` over `options.store`.
 *
 * @example
 * ```ts
 * import { defineSaga, workflowClient } from "@impel/impel/workflow";
 * import { createMemoryStore } from "@impel/impel/sources/memory";
 *
 * type Order = { orderId: string };
 * type Message = { type: "Ship"; data: Order };
 * const delivery = defineSaga<Order, Message>({
 *   category: "Delivery",
 *   steps: [{ name: "ship", action: (o) => ({ to: `Shipment-${o.orderId}`, type: "Ship", data: o }) }],
 * });
 * // A web process records commands; a runner elsewhere delivers what they send.
 * const orders = workflowClient(delivery, { store: createMemoryStore() });
 * await orders.handle("o1", { type: "Start", data: { orderId: "o1" } }, {
 *   id: "place-o1",
 *   correlationId: "req-17",
 * });
 * console.log((await orders.read("o1")).pending.map((s) => s.type)); // ["Ship"]
 * ```
 *
 * @category Workflows
 */
export function workflowClient<E extends TypedEvent, S, I extends TypedEvent, M extends TypedEvent>(
  definition: WorkflowDefinition<E, S, I, M>,
  options: WorkflowClientOptions,
): WorkflowClient<S, I> {
  const { streamOf, handleCommand, read } = createRuntime(definition, options);
  return { streamOf, handle: handleCommand, read };
}
