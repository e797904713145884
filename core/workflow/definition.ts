/**
 * What a workflow is: its parts (category, codec, fold, decide, routes), what `decide` is told
 * and what it returns, and the checks of a definition and of inputs at the public boundary.
 *
 * @module
 */
import type { Codec, TypedEvent } from "../codec.ts";
import { checkInteger, describe, InvalidArgumentError } from "../errors.ts";
import type { StreamEvent } from "../event.ts";
import { checkCategory, type StreamName } from "../streamName.ts";
import type { PendingSend } from "./instance.ts";

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
   * Outbox indexes of pending sends to withdraw as `withdrawSends` does, except that what the
   * same decision sends does not wait for a handler of these still running: its call's signal
   * is aborted and its reply, if any, ignored (e.g. a compensation past its deadline, so the
   * next one starts even while that handler hangs).
   */
  readonly abandonSends?: readonly number[];
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
  /**
   * The message types its decisions may send. When given, {@linkcode startWorkflow} refuses
   * handlers that miss one of them (at start, not when an instance first reaches the send), and
   * a decision sending another type is refused ({@linkcode InvalidWorkflowDecisionError}).
   */
  readonly sends?: readonly M["type"][];
  /**
   * Rolling snapshots of instances (default none): a long instance then loads from its latest
   * snapshot instead of folding its whole stream. Instances written before (without one) load
   * as they did, and get one with their next append past `every`.
   */
  readonly snapshot?: WorkflowSnapshotOptions<S>;
}

/**
 * Rolling snapshots of a workflow's instances: every so often an append also records the
 * instance's whole state (`WorkflowSnapshot`: the workflow's state, its outbox, timers and
 * withdrawn sends, with the recent input ids), from which a load starts (the decider's rolling
 * snapshots).
 *
 * @example
 * ```ts
 * import type { WorkflowSnapshotOptions } from "@impel/impel/workflow";
 * type State = { readonly seen: ReadonlySet<string> };
 * const snapshot: WorkflowSnapshotOptions<State> = {
 *   every: 100,
 *   // A Set does not survive JSON: store it as a list.
 *   encode: (s) => [...s.seen],
 *   decode: (data) => ({ seen: new Set(data as string[]) }),
 * };
 * ```
 *
 * @category Workflows
 */
export interface WorkflowSnapshotOptions<S> {
  /** Record a snapshot when an append leaves at least this many events after the last one. */
  readonly every: number;
  /** The workflow's state as JSON data (default: as it is, which must then survive JSON). */
  readonly encode?: (state: S) => unknown;
  /** The state back from what `encode` gave, read from the store (default: as it is). */
  readonly decode?: (data: unknown) => S;
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
  const snapshot = definition.snapshot;
  if (snapshot !== undefined) {
    if (snapshot === null || typeof snapshot !== "object") {
      throw new InvalidArgumentError(
        "snapshot",
        `must be an object ({ every, encode?, decode? }), got ${describe(snapshot)}`,
      );
    }
    checkInteger("snapshot.every", snapshot.every, 1);
    if (snapshot.encode !== undefined) checkFunction("snapshot.encode", snapshot.encode);
    if (snapshot.decode !== undefined) checkFunction("snapshot.decode", snapshot.decode);
  }
  const sends = definition.sends;
  if (sends !== undefined) {
    if (!Array.isArray(sends)) {
      throw new InvalidArgumentError("sends", `must be an array of types, got ${describe(sends)}`);
    }
    sends.forEach((type, i) => {
      if (typeof type !== "string" || type.length === 0) {
        throw new InvalidArgumentError(
          `sends[${i}]`,
          `must be a non-empty string, got ${describe(type)}`,
        );
      }
    });
  }
  return Object.freeze({
    ...definition,
    routes: Object.freeze([...routes]),
    ...(sends === undefined ? {} : { sends: Object.freeze([...sends]) }),
  });
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
 * Throws {@linkcode InvalidArgumentError} naming `field` unless `value` is a function.
 *
 * @example
 * ```ts
 * import { checkFunction } from "./definition.ts";
 * checkFunction("decide", () => ({})); // passes
 * ```
 */
export function checkFunction(field: string, value: unknown): void {
  if (typeof value !== "function") {
    throw new InvalidArgumentError(field, `must be a function, got ${describe(value)}`);
  }
}

/**
 * Returns `id` if it is a non-empty string; else throws {@linkcode InvalidArgumentError}
 * naming `field`.
 *
 * @example
 * ```ts
 * import { checkId } from "./definition.ts";
 * console.log(checkId("o1")); // "o1"
 * ```
 */
export function checkId(id: unknown, field = "id"): string {
  if (typeof id !== "string" || id.length === 0) {
    throw new InvalidArgumentError(field, `must be a non-empty string, got ${describe(id)}`);
  }
  return id;
}

/**
 * Returns `input` if it is a `{ type, data }` object with a non-empty type; else throws
 * {@linkcode InvalidArgumentError} naming `field`.
 *
 * @example
 * ```ts
 * import { checkInput } from "./definition.ts";
 * console.log(checkInput({ type: "Start", data: {} }).type); // "Start"
 * ```
 */
export function checkInput(input: unknown, field = "input"): TypedEvent {
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
