/**
 * Workflows (process managers, sagas): long-running processes that span streams and services,
 * resume after a crash and, as sagas ({@linkcode defineSaga}), undo what they did when a later
 * step fails.
 *
 * A workflow is defined like a decider: an instance is a stream `{category}-{id}`, its state is
 * folded from its own events, and on each **input** (a command given to
 * {@linkcode WorkflowClient.handle}, an event of another category mapped to the instance by a
 * route, a send handler's reply, a timer) its `decide` returns what to record, what to **send**
 * and which **timers** to set. {@linkcode startWorkflow} runs it:
 *
 * - **Outbox.** A decision's events, sends and timers are appended to the instance's stream in
 *   one append, at the version it was decided on (conflicts re-decide, as a decider does). A
 *   crash after that append loses nothing: the sends are in the stream.
 * - **Inputs once.** Every input has an id, recorded as the append's idempotency key: a command's
 *   id (the caller's, else a random one), `{stream}@{index}` for a routed event, the send's id for
 *   a reply, the timer's id for a timeout. A re-delivered input appends nothing, if it comes within the
 *   instance's last `idempotencyWindow` keyed appends (default 100,
 *   {@linkcode WorkflowClientOptions.idempotencyWindow}): past that it is decided again as a new
 *   input. (A decision that records nothing leaves no key: a redelivery is decided again, on the
 *   state of that time.)
 * - **Sends at least once, in order per target.** A dispatcher (the same pipeline, over the
 *   workflow's own category) reads each instance's pending sends, hands each to the handler for
 *   its type, and records it delivered, together with what the handler replied (an input decided
 *   in that same append). Sends to one target go one at a time in outbox order; different
 *   targets in parallel. A crash between a handler and the record re-sends: each send has a
 *   deterministic id, `{instance stream}#{outbox index}`, that a handler passes on as the target
 *   decider's idempotency key ({@linkcode deliveryOptions}), so the target appends once.
 * - **Timers fire once.** A timer is an outbox entry with a due time; the dispatcher registers it
 *   in {@linkcode durableTimers} (shard streams of their own category in the same store), which
 *   find it due, also after a restart, and record it due in the instance's stream
 *   (`WorkflowTimerDue`); the dispatcher then fires it: it records the timer fired together with
 *   the decision on its input, keyed by the timer's id, so a second firing records nothing. A
 *   firing that fails (its decision is refused, the store fails) fails the instance's stream
 *   like a send: it shows in the sink's stats (`failing`) and meets the sink's failure policy. Setting
 *   a timer under a name that is pending replaces it; `cancelTimers` cancels by name. A
 *   cancelled (or replaced) timer stays in its shard until due: its firing then finds it no
 *   longer pending, records nothing and removes it.
 * - **Correlation.** Everything a decision records and sends carries the input's correlation id
 *   (when the input has none, the instance's: that of its first outbox entry, else its stream
 *   name) and, as causation id, the input's
 *   id; a send handler gives the target's events the send's id as causation id. Decisions, sends
 *   and timers are logged (category `["impel", "workflow", <category>]`, debug) with both.
 *
 * Sends and inputs are plain `{ type, data }` objects; what a decision keeps (timer inputs,
 * sends) must survive JSON, and is checked before anything is appended.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { Batch } from "./batch.ts";
import { type Codec, createCodec, type EncodeContext, type TypedEvent } from "./codec.ts";
import {
  createDecider,
  createStateCache,
  type Decider,
  type StateCache,
  type TransactOptions,
} from "./decider.ts";
import { checkInteger, checkNumber, describe, ImpelError, InvalidArgumentError } from "./errors.ts";
import type { StreamEvent } from "./event.ts";
import { errorText } from "./failure.ts";
import type { HandlerContext } from "./scheduler.ts";
import { run, type StreamsSink, streamsSink, type StreamsSinkOptions } from "./sink.ts";
import type { EventStore } from "./store.ts";
import { categoryOf, checkCategory, checkStreamName, idOf, type StreamName } from "./streamName.ts";
import { withTimeout } from "./timeout.ts";
import {
  checkClock,
  type Clock,
  type DurableTimers,
  durableTimers,
  systemClock,
} from "./timers.ts";

export {
  type Clock,
  type DurableTimer,
  type DurableTimers,
  durableTimers,
  type DurableTimersOptions,
  type ManualClock,
  manualClock,
  systemClock,
  type TimerStats,
} from "./timers.ts";
export * from "./saga.ts";

/**
 * A message a decision sends: a `{ type, data }` of the workflow's message union, addressed
 * `to` a target (usually a stream name; whatever the handler for its type understands).
 *
 * @example
 * ```ts
 * import type { Outgoing } from "@impel/impel/workflow";
 * type Message = { type: "Reserve"; data: { orderId: string; quantity: number } };
 * const send: Outgoing<Message> = { to: "Stock-sku1", type: "Reserve", data: { orderId: "o1", quantity: 2 } };
 * ```
 *
 * @category Workflows
 */
export type Outgoing<M extends TypedEvent> = M & { readonly to: string };

/**
 * A timer a decision sets: deliver `input` to the instance after `afterMs` (or at `at`, ms since
 * the epoch). A name holds one timer: setting it replaces the timer pending under that name (it
 * never fires), and of two timers of one name in the same decision the last one is kept, as a
 * Durable Functions or Temporal user re-arming a timer would expect.
 *
 * @example
 * ```ts
 * import type { TimerRequest } from "@impel/impel/workflow";
 * type Input = { type: "PaymentOverdue"; data: { orderId: string } };
 * const timer: TimerRequest<Input> = {
 *   name: "payment",
 *   afterMs: 15 * 60_000,
 *   input: { type: "PaymentOverdue", data: { orderId: "o1" } },
 * };
 * ```
 *
 * @category Workflows
 */
export interface TimerRequest<I extends TypedEvent> {
  /** The timer's name within the instance. */
  readonly name: string;
  /** Due this long after the decision (by the runner's clock). */
  readonly afterMs?: number;
  /** Due at this time, ms since the epoch (instead of `afterMs`). */
  readonly at?: number;
  /** The input delivered when it fires (kept as JSON until then). */
  readonly input: I;
}

/**
 * What a workflow decides on an input. Everything is optional; an empty decision records
 * nothing.
 *
 * @example
 * ```ts
 * import type { WorkflowDecision } from "@impel/impel/workflow";
 * type Event = { type: "Placed"; data: { total: number } };
 * type Input = { type: "Overdue"; data: Record<string, never> };
 * type Message = { type: "Charge"; data: { total: number } };
 * const decision: WorkflowDecision<Event, Input, Message> = {
 *   events: [{ type: "Placed", data: { total: 30 } }],
 *   sends: [{ to: "Payment-o1", type: "Charge", data: { total: 30 } }],
 *   timers: [{ name: "payment", afterMs: 60_000, input: { type: "Overdue", data: {} } }],
 * };
 * ```
 *
 * @category Workflows
 */
export interface WorkflowDecision<
  E extends TypedEvent,
  I extends TypedEvent,
  M extends TypedEvent,
> {
  /** Events of the workflow's own union, recorded in the instance's stream. */
  readonly events?: readonly E[];
  /** Messages for the outbox, each delivered by the handler for its type. */
  readonly sends?: readonly Outgoing<M>[];
  /** Timers to set (each replacing the one pending, or set earlier here, under its name). */
  readonly timers?: readonly TimerRequest<I>[];
  /** Names of timers pending before the decision to cancel (unknown names are ignored). */
  readonly cancelTimers?: readonly string[];
  /**
   * Outbox indexes (`seq`, see {@linkcode WorkflowContext.pending}) of pending sends to withdraw:
   * recorded in the same append (`WorkflowWithdrawn`), so they are never delivered, also after a
   * crash. A send whose handler is already running finishes first: what the same decision sends
   * is delivered only after it (unknown or delivered indexes are ignored).
   */
  readonly withdrawSends?: readonly number[];
  /**
   * Why the input was (partly) ignored, when it deserves notice (a confirmation that came too
   * late): the runner logs it at warning level with the input and counts it
   * ({@linkcode WorkflowRunnerStats.ignoredInputs}). What the decision records still is.
   */
  readonly ignored?: string;
}

/**
 * A timer of an instance that has been set and has neither fired nor been cancelled.
 *
 * @example
 * ```ts
 * import type { PendingTimer } from "@impel/impel/workflow";
 * const timer: PendingTimer = { name: "payment", due: Date.parse("2026-03-01T12:15:00Z") };
 * ```
 *
 * @category Workflows
 */
export interface PendingTimer {
  /** Its name. */
  readonly name: string;
  /** When it is due, ms since the epoch. */
  readonly due: number;
}

/**
 * What `decide` is told besides the state and the input.
 *
 * @example
 * ```ts
 * import type { WorkflowContext } from "@impel/impel/workflow";
 * const context: WorkflowContext = {
 *   id: "o1",
 *   stream: "Fulfilment-o1",
 *   now: Date.parse("2026-03-01T12:00:00Z"),
 *   inputId: "cmd-1",
 *   correlationId: "req-17",
 *   version: 0,
 *   timers: [],
 * };
 * ```
 *
 * @category Workflows
 */
export interface WorkflowContext {
  /** The instance id. */
  readonly id: string;
  /** The instance's stream. */
  readonly stream: StreamName;
  /** The runner's clock, ms since the epoch (timers' `afterMs` count from it). */
  readonly now: number;
  /** The input's id (also the causation id of what the decision records and sends). */
  readonly inputId: string;
  /** The correlation id carried to what the decision records and sends. */
  readonly correlationId: string;
  /** The stream's version the state reflects. */
  readonly version: number;
  /** The instance's pending timers. */
  readonly timers: readonly PendingTimer[];
  /** The instance's sends not yet delivered (what `withdrawSends` names by `seq`). */
  readonly pending?: readonly PendingSend[];
}

/**
 * An input mapped to an instance: what a route returns for an event.
 *
 * @example
 * ```ts
 * import type { RoutedInput } from "@impel/impel/workflow";
 * type Input = { type: "PaymentCaptured"; data: { amount: number } };
 * const routed: RoutedInput<Input> = { id: "o1", input: { type: "PaymentCaptured", data: { amount: 30 } } };
 * ```
 *
 * @category Workflows
 */
export interface RoutedInput<I extends TypedEvent> {
  /** The instance the input is for. */
  readonly id: string;
  /** The input. */
  readonly input: I;
}

/**
 * How events of another category become inputs: `route` maps each event (in stream order) to an
 * instance and input, or to nothing.
 *
 * @example
 * ```ts
 * import type { WorkflowRoute } from "@impel/impel/workflow";
 * type Input = { type: "PaymentCaptured"; data: { amount: number } };
 * const payments: WorkflowRoute<Input> = {
 *   category: "Payment",
 *   route: (stream, event) =>
 *     event.type === "Captured"
 *       ? { id: stream.slice("Payment-".length), input: { type: "PaymentCaptured", data: event.data as { amount: number } } }
 *       : undefined,
 * };
 * ```
 *
 * @category Workflows
 */
export interface WorkflowRoute<I extends TypedEvent> {
  /** The category whose events are routed. */
  readonly category: string;
  /** The instance and input for `event` of `stream`, or `undefined` to ignore it. */
  route(stream: StreamName, event: StreamEvent): RoutedInput<I> | undefined;
}

/**
 * A workflow: its category, its events (codec, initial state, fold), its decision, and the
 * routes of events of other categories to its instances. Every part is a plain function, so a
 * workflow's domain is tested without a store: fold the given events, call `decide`, compare.
 *
 * @example
 * ```ts
 * import { createCodec } from "@impel/impel";
 * import { defineWorkflow, type WorkflowDefinition } from "@impel/impel/workflow";
 *
 * type Event = { type: "Requested"; data: { email: string } } | { type: "Confirmed"; data: Record<string, never> };
 * type Input = { type: "Register"; data: { email: string } } | { type: "Clicked"; data: Record<string, never> };
 * type Message = { type: "SendEmail"; data: { email: string } };
 * type State = "new" | "waiting" | "confirmed";
 *
 * const signup: WorkflowDefinition<Event, State, Input, Message> = defineWorkflow<
 *   Event,
 *   State,
 *   Input,
 *   Message
 * >({
 *   category: "Signup",
 *   codec: createCodec<Event>({ Requested: {}, Confirmed: {} }),
 *   initial: "new",
 *   fold: (state, events) => events.reduce<State>((_, e) => e.type === "Requested" ? "waiting" : "confirmed", state),
 *   decide: (state, input) => {
 *     if (input.type === "Register" && state === "new") {
 *       return {
 *         events: [{ type: "Requested", data: input.data }],
 *         sends: [{ to: "Email-1", type: "SendEmail", data: input.data }],
 *       };
 *     }
 *     if (input.type === "Clicked" && state === "waiting") return { events: [{ type: "Confirmed", data: {} }] };
 *     return {};
 *   },
 * });
 * const decision = signup.decide(signup.initial, { type: "Register", data: { email: "a@b.c" } }, {
 *   id: "1", stream: "Signup-1", now: 0, inputId: "c1", correlationId: "c1", version: 0, timers: [],
 * });
 * console.log(decision.sends?.length); // 1
 * ```
 *
 * @category Workflows
 */
export interface WorkflowDefinition<
  E extends TypedEvent,
  S,
  I extends TypedEvent,
  M extends TypedEvent,
> {
  /** The category of instance streams (no `-`). */
  readonly category: string;
  /** The workflow's own events ↔ stored ones (its types must not be {@linkcode WORKFLOW_EVENT_TYPES}). */
  readonly codec: Codec<E>;
  /** The state of an instance with no events. */
  readonly initial: S;
  /** Applies the workflow's events to a state (without mutating it). */
  readonly fold: (state: S, events: readonly E[]) => S;
  /**
   * What to record, send and time on `input`. Must not throw for inputs that do not fit the
   * state (a late or repeated reply): return `{}`.
   */
  readonly decide: (state: S, input: I, context: WorkflowContext) => WorkflowDecision<E, I, M>;
  /** Events of other categories that are inputs. */
  readonly routes?: readonly WorkflowRoute<I>[];
}

/**
 * The event types the runtime records in instance streams, next to the workflow's own: outbox
 * entries (`WorkflowSend`, `WorkflowTimerSet`) and their fate (`WorkflowDelivered`,
 * `WorkflowWithdrawn`, `WorkflowTimerCancelled`, `WorkflowTimerFired`). A workflow's codec must
 * not use them.
 *
 * @example
 * ```ts
 * import { WORKFLOW_EVENT_TYPES } from "@impel/impel/workflow";
 * console.log(WORKFLOW_EVENT_TYPES.includes("WorkflowSend")); // true
 * ```
 *
 * @category Workflows
 */
export const WORKFLOW_EVENT_TYPES: readonly string[] = Object.freeze([
  "WorkflowSend",
  "WorkflowDelivered",
  "WorkflowWithdrawn",
  "WorkflowTimerSet",
  "WorkflowTimerDue",
  "WorkflowTimerCancelled",
  "WorkflowTimerFired",
]);
const RUNTIME_TYPES = new Set(WORKFLOW_EVENT_TYPES);

/**
 * An outbox entry not yet delivered, as an instance's state lists it.
 *
 * @example
 * ```ts
 * import type { PendingSend } from "@impel/impel/workflow";
 * const send: PendingSend = {
 *   seq: 0,
 *   to: "Stock-sku1",
 *   type: "Reserve",
 *   data: { orderId: "o1", quantity: 2 },
 *   correlationId: "req-17",
 *   causationId: "cmd-1",
 * };
 * ```
 *
 * @category Workflows
 */
export interface PendingSend {
  /** Its outbox index in the instance (sends and timers share the count). */
  readonly seq: number;
  /** The target. */
  readonly to: string;
  /** The message type. */
  readonly type: string;
  /** The message body. */
  readonly data: unknown;
  /** The correlation id it carries. */
  readonly correlationId: string;
  /** The id of the input whose decision sent it. */
  readonly causationId: string;
}

/**
 * The runtime's events in an instance stream. See {@linkcode WORKFLOW_EVENT_TYPES}.
 *
 * @example
 * ```ts
 * import type { WorkflowRuntimeEvent } from "@impel/impel/workflow";
 * const delivered: WorkflowRuntimeEvent = { type: "WorkflowDelivered", data: { seq: 0 } };
 * ```
 *
 * @category Workflows
 */
export type WorkflowRuntimeEvent =
  | { readonly type: "WorkflowSend"; readonly data: PendingSend }
  | { readonly type: "WorkflowDelivered"; readonly data: { readonly seq: number } }
  | { readonly type: "WorkflowWithdrawn"; readonly data: { readonly seq: number } }
  | { readonly type: "WorkflowTimerSet"; readonly data: TimerRecord }
  | { readonly type: "WorkflowTimerDue"; readonly data: { readonly seq: number } }
  | { readonly type: "WorkflowTimerCancelled"; readonly data: { readonly seq: number } }
  | { readonly type: "WorkflowTimerFired"; readonly data: { readonly seq: number } };

/**
 * A timer as recorded in an instance stream.
 *
 * @example
 * ```ts
 * import type { TimerRecord } from "@impel/impel/workflow";
 * const timer: TimerRecord = {
 *   seq: 1,
 *   name: "payment",
 *   due: 900_000,
 *   input: { type: "Overdue", data: {} },
 *   correlationId: "req-17",
 * };
 * ```
 *
 * @category Workflows
 */
export interface TimerRecord {
  /** Its outbox index. */
  readonly seq: number;
  /** Its name. */
  readonly name: string;
  /** When it is due, ms since the epoch. */
  readonly due: number;
  /** The input it delivers. */
  readonly input: TypedEvent;
  /** The correlation id its firing carries. */
  readonly correlationId: string;
}

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
   * retries are not recognised).
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
 * A decision broke the workflow contract (an event of a reserved type, a send without a target
 * or without a handler, a timer without a due time); nothing was appended. (Data that is not
 * JSON is refused by the codec, with `EventEncodeError`.) `code` is `"InvalidWorkflowDecision"`.
 *
 * @example
 * ```ts
 * import { InvalidWorkflowDecisionError } from "@impel/impel/workflow";
 * const e = new InvalidWorkflowDecisionError("Fulfilment-o1", "sends[0].to must be a non-empty string");
 * console.log(e.code, e.stream); // "InvalidWorkflowDecision" "Fulfilment-o1"
 * ```
 *
 * @category Workflows
 */
export class InvalidWorkflowDecisionError extends ImpelError {
  /** The instance stream. */
  readonly stream: StreamName;
  /** Creates the error; `problem` says what was wrong. */
  constructor(stream: StreamName, problem: string, options?: ErrorOptions) {
    super("InvalidWorkflowDecision", `decision for ${stream} refused: ${problem}`, options);
    this.stream = stream;
  }
}

/**
 * A pending send has a type no handler delivers (it was recorded by a client or runner with
 * other handlers); the dispatcher fails the instance's stream with it until a runner with the
 * handler takes over. `code` is `"MissingSendHandler"`.
 *
 * @example
 * ```ts
 * import { MissingSendHandlerError } from "@impel/impel/workflow";
 * const e = new MissingSendHandlerError("Fulfilment-o1", "Reserve", ["Ship"]);
 * console.log(e.code, e.type); // "MissingSendHandler" "Reserve"
 * ```
 *
 * @category Workflows
 */
export class MissingSendHandlerError extends ImpelError {
  /** The instance stream. */
  readonly stream: StreamName;
  /** The send's type. */
  readonly type: string;
  /** Creates the error; `known` lists the types that have handlers. */
  constructor(stream: StreamName, type: string, known: readonly string[]) {
    super(
      "MissingSendHandler",
      `${stream} has a pending send of type ${JSON.stringify(type)} but no handler delivers it ` +
        `(handlers: ${known.length === 0 ? "none" : known.join(", ")})`,
    );
    this.stream = stream;
    this.type = type;
  }
}

/**
 * A workflow's `decide` threw (something other than an impel error, which passes as it is):
 * nothing was appended; `cause` is what it threw. `code` is `"WorkflowDecide"`.
 *
 * @example
 * ```ts
 * import { WorkflowDecideError } from "@impel/impel/workflow";
 * const e = new WorkflowDecideError("Notes-n1", "Note", new TypeError("no text"));
 * console.log(e.code, e.stream, e.input); // "WorkflowDecide" "Notes-n1" "Note"
 * ```
 *
 * @category Workflows
 */
export class WorkflowDecideError extends ImpelError {
  /** The instance stream. */
  readonly stream: StreamName;
  /** The input's type. */
  readonly input: string;
  /** Creates the error; `cause` is what `decide` threw. */
  constructor(stream: StreamName, input: string, cause: unknown) {
    super(
      "WorkflowDecide",
      `decide of ${stream} threw on input ${JSON.stringify(input)}: ${errorText(cause)}`,
      { cause },
    );
    this.stream = stream;
    this.input = input;
  }
}

/**
 * Checks a workflow's parts at the boundary and returns it (frozen); errors name the offending
 * field.
 *
 * @example
 * ```ts
 * import { createCodec } from "@impel/impel";
 * import { defineWorkflow } from "@impel/impel/workflow";
 * type Event = { type: "Pinged"; data: Record<string, never> };
 * type Input = { type: "Ping"; data: Record<string, never> };
 * const pinger = defineWorkflow<Event, number, Input, never>({
 *   category: "Pinger",
 *   codec: createCodec<Event>({ Pinged: {} }),
 *   initial: 0,
 *   fold: (n, events) => n + events.length,
 *   decide: () => ({ events: [{ type: "Pinged", data: {} }] }),
 * });
 * console.log(pinger.category); // "Pinger"
 * ```
 *
 * @category Workflows
 */
export function defineWorkflow<
  E extends TypedEvent,
  S,
  I extends TypedEvent,
  M extends TypedEvent,
>(definition: WorkflowDefinition<E, S, I, M>): WorkflowDefinition<E, S, I, M> {
  if (definition === null || typeof definition !== "object") {
    throw new InvalidArgumentError("definition", `must be an object, got ${describe(definition)}`);
  }
  checkCategory(definition.category);
  const { codec } = definition;
  if (
    typeof codec?.encode !== "function" || typeof codec.decode !== "function" ||
    typeof codec.roundTrip !== "function"
  ) {
    throw new InvalidArgumentError("codec", "must be a Codec (from createCodec)");
  }
  checkFunction("fold", definition.fold);
  checkFunction("decide", definition.decide);
  const routes = definition.routes ?? [];
  if (!Array.isArray(routes)) {
    throw new InvalidArgumentError("routes", `must be an array, got ${describe(routes)}`);
  }
  const seen = new Set([definition.category]);
  routes.forEach((r, i) => {
    checkCategory(r?.category);
    checkFunction(`routes[${i}].route`, r.route);
    if (seen.has(r.category)) {
      throw new InvalidArgumentError(
        `routes[${i}].category`,
        `${JSON.stringify(r.category)} is the workflow's own or another route's`,
      );
    }
    seen.add(r.category);
  });
  return Object.freeze({ ...definition, routes: Object.freeze([...routes]) });
}

/**
 * The categories a runner's source must read: the workflow's own, then each route's.
 *
 * @example
 * ```ts
 * import { createCodec } from "@impel/impel";
 * import { defineWorkflow, workflowCategories } from "@impel/impel/workflow";
 * const w = defineWorkflow<{ type: "A"; data: null }, null, { type: "Paid"; data: null }, never>({
 *   category: "Order",
 *   codec: createCodec({ A: {} }),
 *   initial: null,
 *   fold: (s) => s,
 *   decide: () => ({}),
 *   routes: [{ category: "Payment", route: () => undefined }],
 * });
 * console.log(workflowCategories(w)); // ["Order", "Payment"]
 * ```
 *
 * @category Workflows
 */
export function workflowCategories(definition: {
  readonly category: string;
  readonly routes?: readonly { readonly category: string }[];
}): string[] {
  if (definition === null || typeof definition !== "object") {
    throw new InvalidArgumentError(
      "definition",
      `must be a workflow definition, got ${describe(definition)}`,
    );
  }
  return [definition.category, ...(definition.routes ?? []).map((r) => r.category)];
}

/**
 * A send as its handler receives it: the message, plus its id (pass it on as the target's
 * idempotency key), the instance, and the tracing ids.
 *
 * @example
 * ```ts
 * import type { Delivery } from "@impel/impel/workflow";
 * type Reserve = { type: "Reserve"; data: { orderId: string } };
 * const delivery: Delivery<Reserve> = {
 *   id: "Fulfilment-o1#0",
 *   seq: 0,
 *   workflow: "Fulfilment-o1",
 *   to: "Stock-sku1",
 *   type: "Reserve",
 *   data: { orderId: "o1" },
 *   correlationId: "req-17",
 *   causationId: "cmd-1",
 * };
 * ```
 *
 * @category Workflows
 */
export type Delivery<M extends TypedEvent> = Outgoing<M> & {
  /** The send's deterministic id: `{workflow}#{seq}`. */
  readonly id: string;
  /** Its outbox index. */
  readonly seq: number;
  /** The instance stream that sent it. */
  readonly workflow: StreamName;
  /** The correlation id to record on what it causes. */
  readonly correlationId: string;
  /** The id of the input whose decision sent it. */
  readonly causationId: string;
};

/**
 * Delivers sends of type `K`; may return an input for the sending instance (a reply), which is
 * decided in the same append that records the send delivered. Called at least once per send:
 * make its effect idempotent by `send.id` (see {@linkcode deliveryOptions}). A handler that
 * throws is retried by the sink's failure policy; report a permanent failure as a reply.
 *
 * @example
 * ```ts
 * import type { SendHandler } from "@impel/impel/workflow";
 * type Ship = { type: "Ship"; data: { orderId: string } };
 * type Input = { type: "Shipped"; data: { trackingId: string } };
 * const ship: SendHandler<Input, Ship> = async (send) => {
 *   // ... call the shipping service with send.id as its idempotency key
 *   return { type: "Shipped", data: { trackingId: `T-${send.data.orderId}` } };
 * };
 * ```
 *
 * @category Workflows
 */
export type SendHandler<I extends TypedEvent, M extends TypedEvent> = (
  send: Delivery<M>,
  context: HandlerContext,
) => Promise<I | void> | I | void;

/**
 * One handler per message type of the union `M`.
 *
 * @example
 * ```ts
 * import type { SendHandlers } from "@impel/impel/workflow";
 * type Message = { type: "Email"; data: { to: string } } | { type: "Sms"; data: { to: string } };
 * const handlers: SendHandlers<never, Message> = {
 *   Email: (send) => console.log("email", send.data.to),
 *   Sms: (send) => console.log("sms", send.data.to),
 * };
 * ```
 *
 * @category Workflows
 */
export type SendHandlers<I extends TypedEvent, M extends TypedEvent> = {
  readonly [K in M["type"]]: SendHandler<I, Extract<M, { type: K }>>;
};

/**
 * The transact options a send handler gives the target's decider: the send's id as idempotency
 * key, so a re-send after a crash appends nothing, and the send's correlation id with the send's
 * id as causation id on what the target records.
 *
 * @example
 * ```ts
 * import { createCodec, createDecider } from "@impel/impel";
 * import { deliveryOptions, type SendHandler } from "@impel/impel/workflow";
 * import { createMemoryStore } from "@impel/impel/sources/memory";
 *
 * type Event = { type: "Reserved"; data: { orderId: string } };
 * type Reserve = { type: "Reserve"; data: { orderId: string } };
 * const stock = createDecider<Event, number>({
 *   store: createMemoryStore(),
 *   codec: createCodec<Event>({ Reserved: {} }),
 *   initial: 0,
 *   fold: (n, events) => n + events.length,
 * });
 * const reserve: SendHandler<never, Reserve> = async (send) => {
 *   await stock.transact(send.to, () => [{ type: "Reserved", data: send.data }], deliveryOptions(send));
 * };
 * ```
 *
 * @category Workflows
 */
export function deliveryOptions(send: Delivery<TypedEvent>): TransactOptions {
  if (send === null || typeof send !== "object") {
    throw new InvalidArgumentError("send", `must be a Delivery, got ${describe(send)}`);
  }
  checkId(send.id, "send.id");
  return {
    idempotencyKey: send.id,
    context: { correlationId: send.correlationId, causationId: send.id },
  };
}

// ---- the runtime: an instance's internal state and the runtime's own events -------------------

/** An instance's folded state: the workflow's, plus its outbox. */
interface Internal<S> {
  readonly state: S;
  /** The next outbox index. */
  readonly next: number;
  /** Sends recorded and not delivered, by index. */
  readonly pending: readonly PendingSend[];
  /** Timers set, not fired or cancelled. */
  readonly timers: readonly TimerRecord[];
  /** Pending timers found due (`WorkflowTimerDue`), waiting for the dispatcher to fire them. */
  readonly due?: readonly number[];
  /** The correlation id of the instance's first outbox entry. */
  readonly correlationId?: string;
  /** Sends withdrawn (`WorkflowWithdrawn`): a reply to one is ignored, and noted. */
  readonly withdrawn?: readonly number[];
}

type Stored<E> = E | WorkflowRuntimeEvent;

const fieldsOf = (data: unknown): Record<string, unknown> => {
  if (data === null || typeof data !== "object" || Array.isArray(data)) {
    throw new TypeError(`expected an object, got ${describe(data)}`);
  }
  return data as Record<string, unknown>;
};
const text = (f: Record<string, unknown>, key: string): string => {
  const v = f[key];
  if (typeof v !== "string" || v.length === 0) {
    throw new TypeError(`${key} must be a non-empty string`);
  }
  return v;
};
const index = (f: Record<string, unknown>, key: string): number => {
  const v = f[key];
  if (!Number.isSafeInteger(v) || (v as number) < 0) throw new TypeError(`${key} must be an index`);
  return v as number;
};
const typed = (value: unknown, key: string): TypedEvent => {
  const f = fieldsOf(value);
  if (typeof f.type !== "string" || f.type.length === 0) {
    throw new TypeError(`${key}.type must be a non-empty string`);
  }
  return { type: f.type, data: f.data ?? null };
};

const runtimeCodec = createCodec<WorkflowRuntimeEvent>({
  WorkflowSend: {
    parse: (d) => {
      const f = fieldsOf(d);
      return {
        seq: index(f, "seq"),
        to: text(f, "to"),
        type: text(f, "type"),
        data: f.data ?? null,
        correlationId: text(f, "correlationId"),
        causationId: text(f, "causationId"),
      };
    },
  },
  WorkflowDelivered: { parse: (d) => ({ seq: index(fieldsOf(d), "seq") }) },
  WorkflowWithdrawn: { parse: (d) => ({ seq: index(fieldsOf(d), "seq") }) },
  WorkflowTimerSet: {
    parse: (d) => {
      const f = fieldsOf(d);
      const due = f.due;
      if (typeof due !== "number" || !Number.isFinite(due)) {
        throw new TypeError("due must be a number");
      }
      return {
        seq: index(f, "seq"),
        name: text(f, "name"),
        due,
        input: typed(f.input, "input"),
        correlationId: text(f, "correlationId"),
      };
    },
  },
  WorkflowTimerDue: { parse: (d) => ({ seq: index(fieldsOf(d), "seq") }) },
  WorkflowTimerCancelled: { parse: (d) => ({ seq: index(fieldsOf(d), "seq") }) },
  WorkflowTimerFired: { parse: (d) => ({ seq: index(fieldsOf(d), "seq") }) },
});

/** The workflow's codec and the runtime's, as one: runtime types go to the runtime's. */
function storedCodec<E extends TypedEvent>(codec: Codec<E>): Codec<Stored<E>> {
  const runtime = runtimeCodec as unknown as Codec<Stored<E>>;
  const own = codec as unknown as Codec<Stored<E>>;
  const pick = (type: string) => RUNTIME_TYPES.has(type) ? runtime : own;
  return {
    encode: (event, context) => pick(event.type).encode(event, context),
    roundTrip: (event, context) => pick(event.type).roundTrip(event, context),
    decode: (event) => pick(event.type).decode(event),
    get skipped() {
      return codec.skipped;
    },
  };
}

function isRuntime<E extends TypedEvent>(e: Stored<E>): e is WorkflowRuntimeEvent {
  return RUNTIME_TYPES.has(e.type);
}

function internalFold<E extends TypedEvent, S>(
  fold: (state: S, events: readonly E[]) => S,
): (s: Internal<S>, events: readonly Stored<E>[]) => Internal<S> {
  return (s, events) => {
    let { state, next, pending, timers, correlationId } = s;
    let due = s.due ?? [];
    let withdrawn = s.withdrawn ?? [];
    let own: E[] = [];
    const flush = () => {
      if (own.length > 0) state = fold(state, own);
      own = [];
    };
    for (const e of events) {
      if (!isRuntime(e)) {
        own.push(e as E);
        continue;
      }
      flush();
      switch (e.type) {
        case "WorkflowSend":
          pending = [...pending, e.data];
          next = Math.max(next, e.data.seq + 1);
          correlationId ??= e.data.correlationId;
          break;
        case "WorkflowWithdrawn":
          if (pending.some((p) => p.seq === e.data.seq)) withdrawn = [...withdrawn, e.data.seq];
          pending = pending.filter((p) => p.seq !== e.data.seq);
          break;
        case "WorkflowDelivered":
          pending = pending.filter((p) => p.seq !== e.data.seq);
          break;
        case "WorkflowTimerSet":
          timers = [...timers, e.data];
          next = Math.max(next, e.data.seq + 1);
          correlationId ??= e.data.correlationId;
          break;
        case "WorkflowTimerDue":
          if (timers.some((t) => t.seq === e.data.seq) && !due.includes(e.data.seq)) {
            due = [...due, e.data.seq];
          }
          break;
        case "WorkflowTimerCancelled":
        case "WorkflowTimerFired":
          timers = timers.filter((t) => t.seq !== e.data.seq);
          due = due.filter((seq) => seq !== e.data.seq);
          break;
      }
    }
    flush();
    // Optional parts only when present: states stay small and compare equal to earlier ones.
    return {
      state,
      next,
      pending,
      timers,
      ...(due.length === 0 ? {} : { due }),
      ...(correlationId === undefined ? {} : { correlationId }),
      ...(withdrawn.length === 0 ? {} : { withdrawn }),
    };
  };
}

function checkFunction(field: string, value: unknown): void {
  if (typeof value !== "function") {
    throw new InvalidArgumentError(field, `must be a function, got ${describe(value)}`);
  }
}

function checkId(id: unknown, field = "id"): string {
  if (typeof id !== "string" || id.length === 0) {
    throw new InvalidArgumentError(field, `must be a non-empty string, got ${describe(id)}`);
  }
  return id;
}

function checkInput(input: unknown, field = "input"): TypedEvent {
  if (
    input === null || typeof input !== "object" || typeof (input as TypedEvent).type !== "string" ||
    (input as TypedEvent).type.length === 0
  ) {
    throw new InvalidArgumentError(
      field,
      `must be a { type, data } object, got ${describe(input)}`,
    );
  }
  return input as TypedEvent;
}

/** An input with its identity and tracing ids. */
interface Arrival {
  readonly id: string;
  readonly input: TypedEvent;
  readonly correlationId: string;
}

/** The internals {@linkcode startWorkflow} shares with {@linkcode workflowClient}. */
interface Runtime<E extends TypedEvent, S, I extends TypedEvent> extends WorkflowClient<S, I> {
  /** The workflow's category and routes, checked. */
  readonly category: string;
  readonly routes: readonly WorkflowRoute<I>[];
  readonly decider: Decider<Stored<E>, Internal<S>>;
  readonly clock: Clock;
  readonly fold: (s: Internal<S>, events: readonly Stored<E>[]) => Internal<S>;
  /** The events a decision on `arrival` records, given instance `s` at `version`. */
  decideOn(
    stream: StreamName,
    s: Internal<S>,
    version: number,
    arrival: Arrival,
  ): Decided<E>;
  /** Logs and counts an input ignored for `reason`. */
  noteIgnored(stream: StreamName, arrival: Arrival, reason: string): void;
  /** Inputs ignored so far (see {@linkcode WorkflowDecision.ignored}). */
  ignoredInputs(): number;
}

/** What a decision records, and why its input was ignored, if it says. */
interface Decided<E> {
  readonly events: Stored<E>[];
  readonly ignored?: string;
}

function createRuntime<E extends TypedEvent, S, I extends TypedEvent, M extends TypedEvent>(
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
  const fold = internalFold<E, S>(def.fold);
  const initial: Internal<S> = { state: def.initial, next: 0, pending: [], timers: [] };
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
  });
  const log = getLogger(["impel", "workflow", def.category]);
  const streamOf = (id: string) => checkStreamName(`${def.category}-${checkId(id)}`);

  function decideOn(
    stream: StreamName,
    s: Internal<S>,
    version: number,
    arrival: Arrival,
  ): Decided<E> {
    const now = clock.now();
    let decision: WorkflowDecision<E, I, M>;
    try {
      decision = def.decide(s.state, arrival.input as I, {
        id: idOf(stream),
        stream,
        now,
        inputId: arrival.id,
        correlationId: arrival.correlationId,
        version,
        timers: s.timers.map((t) => ({ name: t.name, due: t.due })),
        pending: s.pending,
      });
    } catch (error) {
      if (error instanceof ImpelError) throw error;
      throw new WorkflowDecideError(stream, arrival.input.type, error);
    }
    const refuse = (problem: string): never => {
      throw new InvalidWorkflowDecisionError(stream, problem);
    };
    if (decision === null || typeof decision !== "object" || Array.isArray(decision)) {
      refuse(
        `decide must return { events?, sends?, timers?, cancelTimers? }, got ${describe(decision)}`,
      );
    }
    const list = <T>(key: keyof WorkflowDecision<E, I, M>): readonly T[] => {
      const value = decision[key];
      if (value === undefined) return [];
      if (!Array.isArray(value)) refuse(`${key} must be an array, got ${describe(value)}`);
      return value as readonly T[];
    };
    const events = list<E>("events");
    const sends = list<Outgoing<M>>("sends");
    const timers = list<TimerRequest<I>>("timers");
    const cancels = list<string>("cancelTimers");
    const withdrawals = list<number>("withdrawSends");
    const ignored = decision.ignored;
    if (ignored !== undefined && (typeof ignored !== "string" || ignored.length === 0)) {
      refuse(`ignored must be a non-empty string, got ${describe(ignored)}`);
    }
    const out: Stored<E>[] = [];
    events.forEach((e, i) => {
      if (typeof e?.type === "string" && RUNTIME_TYPES.has(e.type)) {
        refuse(`events[${i}] has the runtime's type ${e.type}`);
      }
      out.push(e);
    });
    const withdrawn = new Set<number>();
    withdrawals.forEach((seq, i) => {
      if (!Number.isSafeInteger(seq)) {
        refuse(`withdrawSends[${i}] must be an outbox index, got ${describe(seq)}`);
      }
      if (withdrawn.has(seq) || !s.pending.some((p) => p.seq === seq)) return;
      withdrawn.add(seq);
      out.push({ type: "WorkflowWithdrawn", data: { seq } });
    });
    let next = s.next;
    const cancelled = new Set<number>();
    const cancel = (name: string) => {
      for (const t of s.timers) {
        if (t.name === name && !cancelled.has(t.seq)) {
          cancelled.add(t.seq);
          out.push({ type: "WorkflowTimerCancelled", data: { seq: t.seq } });
        }
      }
    };
    cancels.forEach((name, i) => {
      if (typeof name !== "string") {
        refuse(`cancelTimers[${i}] must be a string, got ${describe(name)}`);
      }
      cancel(name);
    });
    // A name holds one timer: of several set here under one name, the last is kept.
    const lastOf = new Map<string, number>();
    timers.forEach((t, i) => {
      if (t === null || typeof t !== "object") refuse(`timers[${i}] must be an object`);
      if (typeof t.name !== "string" || t.name.length === 0) {
        refuse(`timers[${i}].name must be a non-empty string, got ${describe(t.name)}`);
      }
      lastOf.set(t.name, i);
    });
    timers.forEach((t, i) => {
      const due = t.at ?? (typeof t.afterMs === "number" ? now + t.afterMs : undefined);
      if (
        typeof due !== "number" || !Number.isFinite(due) ||
        (t.afterMs !== undefined && t.afterMs < 0)
      ) {
        refuse(`timers[${i}] needs afterMs (>= 0) or at (ms since the epoch)`);
      }
      try {
        checkInput(t.input, `timers[${i}].input`);
      } catch (error) {
        refuse((error as Error).message);
      }
      if (lastOf.get(t.name) !== i) return;
      cancel(t.name);
      out.push({
        type: "WorkflowTimerSet",
        data: {
          seq: next++,
          name: t.name,
          due: due!,
          input: { type: t.input.type, data: t.input.data ?? null },
          correlationId: arrival.correlationId,
        },
      });
    });
    sends.forEach((m, i) => {
      if (m === null || typeof m !== "object") refuse(`sends[${i}] must be an object`);
      if (typeof m.to !== "string" || m.to.length === 0) {
        refuse(`sends[${i}].to must be a non-empty string, got ${describe(m.to)}`);
      }
      if (typeof m.type !== "string" || m.type.length === 0) {
        refuse(`sends[${i}].type must be a non-empty string, got ${describe(m.type)}`);
      }
      if (sendTypes !== undefined && !sendTypes.has(m.type)) {
        refuse(
          `sends[${i}] has type ${JSON.stringify(m.type)}, which no handler delivers ` +
            `(handlers: ${[...sendTypes].join(", ") || "none"})`,
        );
      }
      out.push({
        type: "WorkflowSend",
        data: {
          seq: next++,
          to: m.to,
          type: m.type,
          data: m.data ?? null,
          correlationId: arrival.correlationId,
          causationId: arrival.id,
        },
      });
    });
    return ignored === undefined ? { events: out } : { events: out, ignored };
  }

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

const tracing = (arrival: Arrival): EncodeContext => ({
  correlationId: arrival.correlationId,
  causationId: arrival.id,
});

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
  const { streamOf, handle, read } = createRuntime(definition, options);
  return { streamOf, handle, read };
}

/**
 * Options of {@linkcode startWorkflow}.
 *
 * @example
 * ```ts
 * import { createStateCache } from "@impel/impel";
 * import { manualClock, type WorkflowRunnerOptions } from "@impel/impel/workflow";
 * import { createMemoryStore, memorySource } from "@impel/impel/sources/memory";
 * type Message = { type: "Email"; data: { to: string } };
 * const store = createMemoryStore();
 * const options: WorkflowRunnerOptions<never, Message> = {
 *   store,
 *   source: memorySource({ store, categories: ["Signup"] }),
 *   handlers: { Email: (send) => console.log("email", send.data.to) },
 *   clock: manualClock(),
 *   cache: createStateCache(),
 *   maxConcurrentSends: 4,
 *   timers: { category: "SignupTimers", shards: 4 },
 *   sink: { maxConcurrentStreams: 32, statsIntervalMs: 0 },
 * };
 * await options.source.cancel();
 * ```
 *
 * @category Workflows
 */
export interface WorkflowRunnerOptions<I extends TypedEvent, M extends TypedEvent>
  extends WorkflowClientOptions {
  /**
   * Batches of the workflow's categories ({@linkcode workflowCategories}) from `store`, with the
   * runner's checkpoints; streams of other categories are ignored.
   */
  readonly source: ReadableStream<Batch>;
  /** The handler of each message type the workflow sends. */
  readonly handlers: SendHandlers<I, M>;
  /** Sends in flight at once per instance (default 8; one at a time per target). */
  readonly maxConcurrentSends?: number;
  /** Where and how timers are kept (default category `{category}Timers`, 16 shards). */
  readonly timers?: {
    /** The shard streams' category. */
    readonly category?: string;
    /** Shard streams (fixed for the life of the category). */
    readonly shards?: number;
    /** Timers fired at once. */
    readonly maxConcurrentFires?: number;
    /**
     * How often the shards are read again for timers other runners scheduled (default 5 000 ms
     * of real time; 0: only at start). See {@linkcode DurableTimersOptions.reloadIntervalMs}.
     */
    readonly reloadIntervalMs?: number;
  };
  /** The sink's settings (the handler is the runner's; the default group is the category). */
  readonly sink?: Omit<StreamsSinkOptions, "handler">;
  /** Aborting it stops the runner (as {@linkcode WorkflowRunner.stop} does). */
  readonly signal?: AbortSignal;
}

/**
 * A running workflow: the client, the pipeline's sink, the timers.
 *
 * @example
 * ```ts
 * import { defineSaga, startWorkflow, stepSucceeded, workflowCategories } from "@impel/impel/workflow";
 * import { createMemoryStore, memorySource } from "@impel/impel/sources/memory";
 *
 * type Order = { orderId: string };
 * type Message = { type: "Ship"; data: Order };
 * const delivery = defineSaga<Order, Message>({
 *   category: "Delivery",
 *   steps: [{ name: "ship", action: (o) => ({ to: `Shipment-${o.orderId}`, type: "Ship", data: o }) }],
 * });
 * const store = createMemoryStore();
 * const runner = startWorkflow(delivery, {
 *   store,
 *   source: memorySource({ store, categories: workflowCategories(delivery) }),
 *   handlers: { Ship: (send) => stepSucceeded("ship", { trackingId: `T-${send.data.orderId}` }) },
 * });
 * await runner.handle("o1", { type: "Start", data: { orderId: "o1" } });
 * await runner.awaitIdle();
 * console.log((await runner.read("o1")).state.status); // "completed"
 * await runner.stop();
 * ```
 *
 * @category Workflows
 */
export interface WorkflowRunner<S, I extends TypedEvent> extends WorkflowClient<S, I> {
  /** The pipeline's sink: monitor, stats. */
  readonly sink: StreamsSink;
  /** The durable timers. */
  readonly timers: DurableTimers;
  /** Resolves once stopped; rejects if the pipeline faulted. */
  readonly running: Promise<void>;
  /**
   * For in-process sources (memory), where an append reaches the source at once: resolves once
   * every event read so far is handled, the source is at its tail and no timer is due or firing
   * on the clock now, with nothing new arriving meanwhile. Rejects after `timeoutMs` (default
   * 30 s). A polling source needs its own check that it has read the store's head.
   */
  awaitIdle(options?: { readonly timeoutMs?: number }): Promise<void>;
  /** What this runner counted since it started (the sink's and the timers' have their own). */
  stats(): WorkflowRunnerStats;
  /** Stops the pipeline (drain, commit) and the timers. */
  stop(): Promise<void>;
}

/**
 * What {@linkcode WorkflowRunner.stats} reports.
 *
 * @example
 * ```ts
 * import type { WorkflowRunnerStats } from "@impel/impel/workflow";
 * const stats: WorkflowRunnerStats = { ignoredInputs: 0 };
 * ```
 *
 * @category Workflows
 */
export interface WorkflowRunnerStats {
  /**
   * Inputs ignored with notice: a decision that said why ({@linkcode WorkflowDecision.ignored},
   * e.g. a saga's compensation confirmed after its deadline), or a reply to a send withdrawn
   * while its handler ran. Each is also logged at warning level.
   */
  readonly ignoredInputs: number;
}

/**
 * Runs `definition`: one streams sink over `options.source` dispatches the instances' outboxes
 * (streams of the workflow's category) and turns events of the routes' categories into inputs;
 * durable timers fire timeouts. See the module documentation for the guarantees.
 *
 * @example
 * ```ts
 * import { createCodec } from "@impel/impel";
 * import { defineWorkflow, startWorkflow, workflowCategories } from "@impel/impel/workflow";
 * import { createMemoryStore, memorySource } from "@impel/impel/sources/memory";
 *
 * type Event = { type: "Greeted"; data: { name: string } };
 * type Input = { type: "Greet"; data: { name: string } };
 * type Message = { type: "Print"; data: { line: string } };
 * const greeter = defineWorkflow<Event, number, Input, Message>({
 *   category: "Greeter",
 *   codec: createCodec<Event>({ Greeted: {} }),
 *   initial: 0,
 *   fold: (n, events) => n + events.length,
 *   decide: (_, input) => ({
 *     events: [{ type: "Greeted", data: input.data }],
 *     sends: [{ to: "Console-1", type: "Print", data: { line: `hello ${input.data.name}` } }],
 *   }),
 * });
 * const store = createMemoryStore();
 * const lines: string[] = [];
 * const runner = startWorkflow(greeter, {
 *   store,
 *   source: memorySource({ store, categories: workflowCategories(greeter) }),
 *   handlers: { Print: (send) => void lines.push(send.data.line) },
 * });
 * await runner.handle("g1", { type: "Greet", data: { name: "Ann" } });
 * await runner.awaitIdle();
 * console.log(lines); // ["hello Ann"]
 * await runner.stop();
 * ```
 *
 * @category Workflows
 */
export function startWorkflow<E extends TypedEvent, S, I extends TypedEvent, M extends TypedEvent>(
  definition: WorkflowDefinition<E, S, I, M>,
  options: WorkflowRunnerOptions<I, M>,
): WorkflowRunner<S, I> {
  if (options === null || typeof options !== "object") {
    throw new InvalidArgumentError("options", "must be an object with store, source and handlers");
  }
  const { handlers, source } = options;
  if (handlers === null || typeof handlers !== "object") {
    throw new InvalidArgumentError(
      "handlers",
      `must be an object of send handlers, got ${describe(handlers)}`,
    );
  }
  for (const [type, h] of Object.entries(handlers)) checkFunction(`handlers.${type}`, h);
  if (typeof source?.getReader !== "function") {
    throw new InvalidArgumentError("source", "must be a ReadableStream of batches");
  }
  const maxConcurrentSends = checkInteger("maxConcurrentSends", options.maxConcurrentSends ?? 8, 1);
  const sendTypes = new Set(Object.keys(handlers));
  const runtime = createRuntime(definition, options, sendTypes);
  const { decider, clock, fold, category } = runtime;
  const routes = new Map(runtime.routes.map((r) => [r.category, r]));
  const log = getLogger(["impel", "workflow", category]);
  const timerCategory = options.timers?.category ?? `${category}Timers`;
  if (timerCategory === category || routes.has(timerCategory)) {
    throw new InvalidArgumentError(
      "timers.category",
      `must differ from the workflow's categories, got ${JSON.stringify(timerCategory)}`,
    );
  }
  const timerId = (stream: StreamName, seq: number) => `${stream}#${seq}`;

  /** Records timer `seq` fired, with the decision on its input, unless it is no longer pending. */
  async function fireTimer(stream: StreamName, seq: number, id: string): Promise<void> {
    const timer = await decider.query(stream, (s) => s.timers.find((t) => t.seq === seq));
    if (timer === undefined) {
      log.debug("{stream}: timer {timer} was no longer pending", { stream, timer: id });
      return;
    }
    const arrival = { id, input: timer.input, correlationId: timer.correlationId };
    let ignored: string | undefined;
    const outcome = await decider.transactEx(stream, (s, { version }) => {
      ignored = undefined;
      if (!s.timers.some((t) => t.seq === seq)) return [];
      const fired: Stored<E>[] = [{ type: "WorkflowTimerFired", data: { seq } }];
      const decided = runtime.decideOn(stream, fold(s, fired), version, arrival);
      ignored = decided.ignored;
      return [...fired, ...decided.events];
    }, { idempotencyKey: id, context: tracing(arrival) });
    if (ignored !== undefined && !outcome.duplicate) runtime.noteIgnored(stream, arrival, ignored);
    log.debug("{stream}: timer {timer} fired {input}: {outcome}", {
      stream,
      timer: id,
      input: timer.input.type,
      outcome: outcome.appended === 0 ? "already fired" : `recorded ${outcome.appended} events`,
      correlationId: timer.correlationId,
      causationId: id,
    });
  }

  /**
   * What the durable timers do when a timer is due: record it due in the instance's stream (an
   * append that needs no decision), so the dispatcher fires it through the sink, where a firing
   * that fails shows in the sink's stats and meets its failure policy.
   */
  async function markDue(stream: StreamName, seq: number, id: string): Promise<void> {
    const timer = await decider.query(stream, (s) => s.timers.find((t) => t.seq === seq));
    if (timer === undefined) {
      log.debug("{stream}: timer {timer} was no longer pending", { stream, timer: id });
      return;
    }
    const due: Stored<E>[] = [{ type: "WorkflowTimerDue", data: { seq } }];
    await decider.transactEx(
      stream,
      (s) => s.timers.some((t) => t.seq === seq) && !(s.due ?? []).includes(seq) ? due : [],
      { context: { correlationId: timer.correlationId, causationId: id } },
    );
  }

  /** Delivers `send` and records it delivered, with the decision on the handler's reply. */
  async function deliver(stream: StreamName, send: PendingSend, context: HandlerContext) {
    const handler = (handlers as unknown as Record<string, SendHandler<I, M>>)[send.type];
    if (handler === undefined) throw new MissingSendHandlerError(stream, send.type, [...sendTypes]);
    const id = `${stream}#${send.seq}`;
    const delivery = { ...send, id, workflow: stream } as unknown as Delivery<M>;
    const reply = await handler(delivery, context);
    if (reply !== undefined) checkInput(reply, `the reply of handlers.${send.type}`);
    const arrival = reply === undefined ? undefined : {
      id,
      input: reply as TypedEvent,
      correlationId: send.correlationId,
    };
    let ignored: string | undefined;
    const outcome = await decider.transactEx(stream, (s, { version }) => {
      ignored = undefined;
      if (!s.pending.some((p) => p.seq === send.seq)) {
        // Withdrawn while its handler ran (or recorded by another runner): the reply is moot.
        if (arrival !== undefined && (s.withdrawn ?? []).includes(send.seq)) {
          ignored = "its send was withdrawn while the handler ran";
        }
        return [];
      }
      const delivered: Stored<E>[] = [{ type: "WorkflowDelivered", data: { seq: send.seq } }];
      if (arrival === undefined) return delivered;
      const decided = runtime.decideOn(stream, fold(s, delivered), version, arrival);
      ignored = decided.ignored;
      return [...delivered, ...decided.events];
    }, { context: { correlationId: send.correlationId, causationId: id } });
    if (ignored !== undefined && arrival !== undefined) {
      runtime.noteIgnored(stream, arrival, ignored);
    }
    log.debug("{stream}: sent {type} to {to} ({sendId}){reply}", {
      stream,
      type: send.type,
      to: send.to,
      sendId: id,
      reply: arrival === undefined ? "" : `, reply ${arrival.input.type}`,
      recorded: outcome.appended,
      correlationId: send.correlationId,
      causationId: send.causationId,
    });
    return outcome;
  }

  /**
   * The handler for an instance stream: registers its pending timers, delivers its pending sends
   * until none is left, and reports the version it has accounted for.
   */
  async function dispatch(stream: StreamName, context: HandlerContext): Promise<number> {
    let { state: s, version } = await decider.query(stream, (state, { version }) => ({
      state,
      version,
    }));
    for (;;) {
      const due = s.due ?? [];
      if (due.length > 0) {
        // Timers found due: fire them here, so a firing that fails fails the stream.
        for (const seq of due) await fireTimer(stream, seq, timerId(stream, seq));
        ({ state: s, version } = await decider.query(stream, (state, { version }) => ({
          state,
          version,
        })));
        continue;
      }
      await Promise.all(
        s.timers.map((t) => timers.schedule({ id: timerId(stream, t.seq), due: t.due, stream })),
      );
      if (s.pending.length === 0) return version;
      const byTarget = new Map<string, PendingSend[]>();
      for (const p of s.pending) {
        const list = byTarget.get(p.to);
        if (list === undefined) byTarget.set(p.to, [p]);
        else list.push(p);
      }
      const queues = [...byTarget.values()];
      // The latest record made: its state includes every earlier one, and what they decided.
      let latest = { state: s, version };
      const results = await Promise.allSettled(
        Array.from({ length: Math.min(maxConcurrentSends, queues.length) }, async () => {
          for (let q = queues.shift(); q !== undefined; q = queues.shift()) {
            for (const send of q) {
              const outcome = await deliver(stream, send, context);
              if (outcome.version >= latest.version) latest = outcome;
            }
          }
        }),
      );
      const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
      if (failed !== undefined) throw failed.reason;
      ({ state: s, version } = latest);
    }
  }

  /** The handler for a stream of a route's category: its events become inputs, in order. */
  async function routeEvents(stream: StreamName, events: readonly StreamEvent[]): Promise<void> {
    const route = routes.get(categoryOf(stream));
    if (route === undefined) return;
    for (const event of events) {
      const routed = route.route(stream, event);
      if (routed === undefined) continue;
      if (routed === null || typeof routed !== "object") {
        throw new InvalidArgumentError(
          `the route of ${route.category}`,
          `must return { id, input } or undefined, got ${describe(routed)}`,
        );
      }
      await runtime.handle(routed.id, routed.input, {
        id: `${stream}@${event.index}`,
        correlationId: event.correlationId,
      });
    }
  }

  const signal = options.signal;
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw new InvalidArgumentError("signal", "must be an AbortSignal");
  }
  const sink = streamsSink({
    group: category,
    statsIntervalMs: 0,
    ...options.sink,
    handler: (stream, events, context) => {
      let of: string;
      try {
        of = categoryOf(stream);
      } catch {
        return; // not a workflow stream, nor a route's
      }
      return of === category ? dispatch(stream, context) : routeEvents(stream, events);
    },
  });
  let timers: DurableTimers;
  try {
    timers = durableTimers({
      store: options.store,
      category: timerCategory,
      clock,
      shards: options.timers?.shards,
      maxConcurrentFires: options.timers?.maxConcurrentFires,
      reloadIntervalMs: options.timers?.reloadIntervalMs,
      fire: (timer) =>
        markDue(timer.stream, Number(timer.id.slice(timer.id.lastIndexOf("#") + 1)), timer.id),
    });
  } catch (error) {
    void sink.stop(); // it has started its commit timer
    throw error;
  }

  const controller = new AbortController();
  const onAbort = () => controller.abort();
  signal?.addEventListener("abort", onAbort, { once: true });
  if (signal?.aborted) controller.abort();
  const piped = run(source, sink, { signal: controller.signal });
  const running = piped.finally(async () => {
    signal?.removeEventListener("abort", onAbort);
    await timers.stop();
  });
  running.catch((error) =>
    log.error("{category} runner stopped: {error}", { category, error: errorText(error) })
  );

  return {
    streamOf: runtime.streamOf,
    handle: runtime.handle,
    read: runtime.read,
    sink,
    timers,
    running,
    stats: () => ({ ignoredInputs: runtime.ignoredInputs() }),
    async awaitIdle(idleOptions = {}) {
      if (idleOptions === null || typeof idleOptions !== "object") {
        throw new InvalidArgumentError(
          "options",
          `must be an object ({ timeoutMs }), got ${describe(idleOptions)}`,
        );
      }
      const timeoutMs = checkNumber("timeoutMs", idleOptions.timeoutMs ?? 30_000, 0);
      const settle = async () => {
        for (;;) {
          await sink.monitor.awaitCompletion({ tail: true });
          const seen = sink.stats().counters.batches;
          await timers.idle();
          // A macrotask lets what the last fires appended reach the source.
          await new Promise((resolve) => setTimeout(resolve, 0));
          if (
            sink.stats().counters.batches === seen &&
            sink.stats().counters.batchesCompleted === seen
          ) return;
        }
      };
      await withTimeout(settle(), timeoutMs, "awaitIdle");
    },
    stop() {
      controller.abort();
      return running;
    },
  };
}
