/**
 * Sagas: a workflow of steps, each an action and, optionally, its compensation.
 *
 * A saga instance starts on a `Start` input carrying its data and runs its steps in order: each
 * step sends its action (through the workflow's outbox) and waits for its outcome, an input of
 * type `StepSucceeded` or `StepFailed` naming the step (a send handler's reply, or an event of a
 * route). When a step fails for good, the steps that succeeded are compensated in reverse order,
 * one at a time, each compensation sent and then confirmed by `StepCompensated` (or reported
 * with `CompensationFailed`). A compensation is delivered at least once, so it must be
 * idempotent by design (releasing a reservation twice releases it once).
 *
 * - A step with `timeoutMs` fails if no outcome arrives in time; its outcome is then unknown, so
 *   it is compensated too, first. An outcome that comes once the deadline is due is late: before
 *   the deadline's firing it takes the same path (the reason says "outcome late"), after it it is
 *   ignored; either way the decision says so (`ignored`). `Cancel` fails the running step too.
 *   Its action, if not yet delivered, is withdrawn from the outbox in the same append (never
 *   delivered, also after a crash); an action whose handler is already running finishes (or
 *   times out, the runner's `sendTimeoutMs`) before the compensation is sent. A compensation
 *   therefore never takes effect before its action, whatever the targets, given one runner per
 *   instance stream.
 * - A compensation with `compensationTimeoutMs` that is not confirmed in time counts as failed
 *   (`CompensationFailed`, "not confirmed within N ms") and the saga moves on to the next one.
 *   Its send, if not yet delivered, is withdrawn in the same append (never delivered after its
 *   deadline, also after a crash); if its handler is running (or hangs), the send is abandoned:
 *   its call's signal is aborted, its reply ignored, and the next compensation does not wait
 *   for it. A confirmation that comes once the deadline is due is late:
 *   if it arrives before the deadline's firing, it takes the same timeout path (the reason says
 *   "confirmed late"); after it, it is ignored. Either way the decision says so
 *   (`ignored`), which the runner logs at warning and counts (`runner.stats().ignoredInputs`).
 * - A step whose action returns no send (`[]`) has nothing to do: it succeeds at once (result
 *   `null`), in the same decision, and the next step starts. A compensation that returns no send
 *   has nothing to undo: it counts as confirmed at once.
 * - An outcome that does not fit the state (a late reply, a repeat, another step's) is ignored.
 *   A `Start` of an instance already started (under a new input id) and a `Cancel` with no step
 *   running are ignored with notice (`ignored`: logged and counted by the runner).
 *   An outcome naming a step the saga does not have (a typo) is refused with
 *   {@linkcode UnknownStepError}: the caller's `handle` rejects, and a reply or routed event
 *   fails its stream (sink stats, failure policy) instead of leaving the instance waiting.
 * - Inputs are checked before anything is decided: a `Start` without data (`null` counts as
 *   none when there is no `parse`), or whose data
 *   `parse` refuses), an outcome without its reason, an input type a saga does not take, are
 *   refused with {@linkcode InvalidSagaInputError}; an action or compensation that throws or
 *   returns something other than sends, with {@linkcode SagaStepError}. Nothing is recorded.
 * - The instance ends `completed` (every step succeeded), `compensated` (a step failed and
 *   every compensation was confirmed) or `failed` (a compensation failed or was not confirmed
 *   within `compensationTimeoutMs`; the other compensations still ran), with the reason.
 *
 * @module
 */
import { createCodec, type TypedEvent } from "./codec.ts";
import { checkNumber, describe, ImpelError, InvalidArgumentError } from "./errors.ts";
import { errorText } from "./failure.ts";
import {
  defineWorkflow,
  type Outgoing,
  type TimerRequest,
  type WorkflowContext,
  type WorkflowDecision,
  type WorkflowDefinition,
  type WorkflowRoute,
} from "./workflow/definition.ts";

/**
 * A step's outcome, or a compensation's, as a saga input: build them with
 * {@linkcode stepSucceeded}, {@linkcode stepFailed}, {@linkcode stepCompensated} and
 * {@linkcode compensationFailed}.
 *
 * @example
 * ```ts
 * import { type SagaReply, stepFailed } from "@impel/impel/workflow";
 * const reply: SagaReply = stepFailed("pay", "card declined");
 * console.log(reply); // { type: "StepFailed", data: { step: "pay", reason: "card declined" } }
 * ```
 *
 * @category Workflows
 */
export type SagaReply =
  | {
    readonly type: "StepSucceeded";
    readonly data: { readonly step: string; readonly result?: unknown };
  }
  | {
    readonly type: "StepFailed";
    readonly data: { readonly step: string; readonly reason: string };
  }
  | { readonly type: "StepCompensated"; readonly data: { readonly step: string } }
  | {
    readonly type: "CompensationFailed";
    readonly data: { readonly step: string; readonly reason: string };
  };

/**
 * The inputs of a saga with data `D`: its start, the outcomes, a cancellation, and the deadline
 * timers the saga sets itself.
 *
 * @example
 * ```ts
 * import type { SagaInput } from "@impel/impel/workflow";
 * type Order = { orderId: string };
 * const start: SagaInput<Order> = { type: "Start", data: { orderId: "o1" } };
 * const cancel: SagaInput<Order> = { type: "Cancel", data: { reason: "customer changed their mind" } };
 * ```
 *
 * @category Workflows
 */
export type SagaInput<D> =
  | { readonly type: "Start"; readonly data: D }
  | SagaReply
  | { readonly type: "Cancel"; readonly data: { readonly reason: string } }
  | {
    readonly type: "Deadline";
    readonly data: { readonly step: string; readonly phase: "action" | "compensation" };
  };

/**
 * What a saga records in its stream.
 *
 * @example
 * ```ts
 * import type { SagaEvent } from "@impel/impel/workflow";
 * const events: SagaEvent<{ orderId: string }>[] = [
 *   { type: "Started", data: { orderId: "o1" } },
 *   { type: "StepSucceeded", data: { step: "reserve", result: null } },
 *   { type: "StepFailed", data: { step: "pay", reason: "card declined", compensate: false } },
 *   { type: "StepCompensated", data: { step: "reserve" } },
 *   { type: "Compensated", data: { reason: "pay: card declined" } },
 * ];
 * ```
 *
 * @category Workflows
 */
export type SagaEvent<D> =
  | { readonly type: "Started"; readonly data: D }
  | {
    readonly type: "StepSucceeded";
    readonly data: { readonly step: string; readonly result: unknown };
  }
  | {
    readonly type: "StepFailed";
    /** `timedOut`: no outcome within the step's `timeoutMs` (a later outcome is late). */
    readonly data: {
      readonly step: string;
      readonly reason: string;
      readonly compensate: boolean;
      readonly timedOut?: true;
    };
  }
  | { readonly type: "StepCompensated"; readonly data: { readonly step: string } }
  | {
    readonly type: "CompensationFailed";
    /** `timedOut`: not confirmed within `compensationTimeoutMs` (a later confirmation is late). */
    readonly data: { readonly step: string; readonly reason: string; readonly timedOut?: true };
  }
  | { readonly type: "Completed"; readonly data: Record<string, never> }
  | { readonly type: "Compensated"; readonly data: { readonly reason: string } }
  | { readonly type: "Failed"; readonly data: { readonly reason: string } };

/**
 * Where a saga instance is.
 *
 * @example
 * ```ts
 * import type { SagaStatus } from "@impel/impel/workflow";
 * const ended = (status: SagaStatus) => ["completed", "compensated", "failed"].includes(status);
 * console.log(ended("compensating")); // false
 * ```
 *
 * @category Workflows
 */
export type SagaStatus =
  | "new"
  | "running"
  | "compensating"
  | "completed"
  | "compensated"
  | "failed";

/**
 * The folded state of a saga instance.
 *
 * @example
 * ```ts
 * import type { SagaState } from "@impel/impel/workflow";
 * const state: SagaState<{ orderId: string }> = {
 *   status: "running",
 *   data: { orderId: "o1" },
 *   step: "pay",
 *   done: ["reserve"],
 *   results: { reserve: null },
 *   undo: [],
 *   failures: [],
 * };
 * ```
 *
 * @category Workflows
 */
export interface SagaState<D> {
  /** Where it is. */
  readonly status: SagaStatus;
  /** The data it started with. */
  readonly data?: D;
  /** The step running, or being compensated. */
  readonly step?: string;
  /** Steps that succeeded, in order. */
  readonly done: readonly string[];
  /** What each succeeded step reported. */
  readonly results: Readonly<Record<string, unknown>>;
  /** Steps still to compensate, the current one first. */
  readonly undo: readonly string[];
  /** Why it is compensating, or how it ended. */
  readonly reason?: string;
  /** Compensations that failed, as `step: reason`. */
  readonly failures: readonly string[];
  /** Steps whose compensation missed its `compensationTimeoutMs` (their confirmations are late). */
  readonly expired?: readonly string[];
  /** The step whose action had no outcome within its `timeoutMs` (a later outcome is late). */
  readonly timedOut?: string;
}

/**
 * What a step's action and compensation are told besides the saga's data.
 *
 * @example
 * ```ts
 * import type { StepContext } from "@impel/impel/workflow";
 * const context: StepContext = { id: "o1", results: { pay: { paymentId: "p1" } } };
 * ```
 *
 * @category Workflows
 */
export interface StepContext {
  /** The instance id. */
  readonly id: string;
  /** What the steps that succeeded reported, by step name. */
  readonly results: Readonly<Record<string, unknown>>;
}

/**
 * One step of a saga: the message(s) that perform it and, if it can be undone, those that undo
 * it.
 *
 * @example
 * ```ts
 * import type { SagaStep } from "@impel/impel/workflow";
 * type Order = { orderId: string; sku: string; quantity: number };
 * type Message =
 *   | { type: "Reserve"; data: { orderId: string; quantity: number } }
 *   | { type: "Release"; data: { orderId: string } };
 * const reserve: SagaStep<Order, Message> = {
 *   name: "reserve",
 *   action: (o) => ({ to: `Stock-${o.sku}`, type: "Reserve", data: { orderId: o.orderId, quantity: o.quantity } }),
 *   compensation: (o) => ({ to: `Stock-${o.sku}`, type: "Release", data: { orderId: o.orderId } }),
 *   timeoutMs: 60_000,
 * };
 * ```
 *
 * @category Workflows
 */
export interface SagaStep<D, M extends TypedEvent> {
  /** The step's name, unique in the saga. */
  readonly name: string;
  /** What performs the step. */
  readonly action: (data: D, context: StepContext) => Outgoing<M> | readonly Outgoing<M>[];
  /** What undoes it (none: there is nothing to undo). */
  readonly compensation?: (data: D, context: StepContext) => Outgoing<M> | readonly Outgoing<M>[];
  /** No outcome within this long fails the step and compensates it too (default: wait). */
  readonly timeoutMs?: number;
  /** No confirmation of the compensation within this long counts as a failed compensation. */
  readonly compensationTimeoutMs?: number;
}

/**
 * Options of {@linkcode defineSaga}.
 *
 * @example
 * ```ts
 * import { defineSaga, type SagaOptions } from "@impel/impel/workflow";
 * type Order = { orderId: string };
 * type Message = { type: "Ship"; data: { orderId: string } };
 * const options: SagaOptions<Order, Message> = {
 *   category: "Delivery",
 *   steps: [{ name: "ship", action: (o) => ({ to: `Shipment-${o.orderId}`, type: "Ship", data: o }) }],
 *   parse: (d) => {
 *     if (typeof (d as Order)?.orderId !== "string") throw new TypeError("orderId must be a string");
 *     return d as Order;
 *   },
 * };
 * const delivery = defineSaga(options);
 * ```
 *
 * @category Workflows
 */
export interface SagaOptions<D, M extends TypedEvent> {
  /** The category of instance streams. */
  readonly category: string;
  /** The steps, in order. */
  readonly steps: readonly SagaStep<D, M>[];
  /** Events of other categories that report outcomes (or start or cancel instances). */
  readonly routes?: readonly WorkflowRoute<SagaInput<D>>[];
  /**
   * Checks a `Start`'s data before anything is recorded, and a stored `Started` event's (default:
   * taken as it is). Throwing refuses it ({@linkcode InvalidSagaInputError}).
   */
  readonly parse?: (data: unknown) => D;
  /**
   * The message types the steps' actions and compensations send: when given, a runner without a
   * handler for one is refused at start, and a step sending another type fails its decision.
   */
  readonly sends?: readonly M["type"][];
  /**
   * Rolling snapshots of instances (see {@linkcode WorkflowDefinition.snapshot}): every this many
   * events an append also records the saga's state; a snapshot's data goes through `parse` as a
   * `Started` event's does. Sagas are usually short: worth it for one with many inputs (routes).
   */
  readonly snapshot?: { readonly every: number };
}

/**
 * An outcome (`StepSucceeded`, `StepFailed`, `StepCompensated`, `CompensationFailed`) or a
 * `Deadline` names a step the saga does not have; nothing is recorded. `code` is `"UnknownStep"`.
 *
 * @example
 * ```ts
 * import { UnknownStepError } from "@impel/impel/workflow";
 * const e = new UnknownStepError("Delivery", "shipping", ["ship"]);
 * console.log(e.code, e.step); // "UnknownStep" "shipping"
 * ```
 *
 * @category Workflows
 */
export class UnknownStepError extends ImpelError {
  /** The saga's category. */
  readonly category: string;
  /** The step named. */
  readonly step: unknown;
  /** Creates the error; `known` lists the saga's steps. */
  constructor(category: string, step: unknown, known: readonly string[]) {
    super(
      "UnknownStep",
      `saga ${category} has no step ${describe(step)} (steps: ${known.join(", ") || "none"})`,
    );
    this.category = category;
    this.step = step;
  }
}

/**
 * An input a saga cannot take: a `Start` without data (or whose data the saga's `parse`
 * refuses), an outcome or `Cancel` without its reason, a `Deadline` of no known phase, an input
 * type no saga takes. Nothing is recorded; `step` is the step the input was for (for a `Start`,
 * the first step, which its data would feed). `code` is `"InvalidSagaInput"`.
 *
 * @example
 * ```ts
 * import { InvalidSagaInputError } from "@impel/impel/workflow";
 * const e = new InvalidSagaInputError("Fulfilment", "Start", "reserve", "data is missing");
 * console.log(e.code, e.step); // "InvalidSagaInput" "reserve"
 * ```
 *
 * @category Workflows
 */
export class InvalidSagaInputError extends ImpelError {
  /** The saga's category. */
  readonly category: string;
  /** The input's type. */
  readonly input: string;
  /** The step it was for, if any. */
  readonly step: string | undefined;
  /** Creates the error; `problem` says what was wrong. */
  constructor(
    category: string,
    input: string,
    step: string | undefined,
    problem: string,
    options?: ErrorOptions,
  ) {
    super(
      "InvalidSagaInput",
      `saga ${category}: ${input} refused${
        step === undefined ? "" : ` (step ${step})`
      }: ${problem}`,
      options,
    );
    this.category = category;
    this.input = input;
    this.step = step;
  }
}

/**
 * A step's action or compensation threw, or returned something other than a send or an array of
 * sends; nothing is recorded (the caller's `handle` rejects; a reply, routed event or timer
 * fails its stream). `cause` is what it threw. `code` is `"SagaStep"`.
 *
 * @example
 * ```ts
 * import { SagaStepError } from "@impel/impel/workflow";
 * const e = new SagaStepError("Fulfilment", "pay", "action", "threw TypeError: no amount");
 * console.log(e.code, e.step, e.phase); // "SagaStep" "pay" "action"
 * ```
 *
 * @category Workflows
 */
export class SagaStepError extends ImpelError {
  /** The saga's category. */
  readonly category: string;
  /** The step. */
  readonly step: string;
  /** Which of its functions failed. */
  readonly phase: "action" | "compensation";
  /** Creates the error; `problem` says what went wrong. */
  constructor(
    category: string,
    step: string,
    phase: "action" | "compensation",
    problem: string,
    options?: ErrorOptions,
  ) {
    super("SagaStep", `saga ${category}, step ${step}: the ${phase} ${problem}`, options);
    this.category = category;
    this.step = step;
    this.phase = phase;
  }
}

/** The name of the one timer a saga keeps: the running step's or compensation's deadline. */
const DEADLINE = "deadline";
/** The inputs that name a step. */
const NAMED = new Set([
  "StepSucceeded",
  "StepFailed",
  "StepCompensated",
  "CompensationFailed",
  "Deadline",
]);

/**
 * The input reporting that `step` succeeded, with what it produced (kept in the state's
 * `results` and given to later steps).
 *
 * @example
 * ```ts
 * import { stepSucceeded } from "@impel/impel/workflow";
 * stepSucceeded("ship", { trackingId: "T-1" }); // { type: "StepSucceeded", data: { step: "ship", result: { trackingId: "T-1" } } }
 * ```
 *
 * @category Workflows
 */
export function stepSucceeded(step: string, result?: unknown): SagaReply {
  checkText("step", step);
  if (result !== undefined) checkJson("result", result, new Set());
  return { type: "StepSucceeded", data: result === undefined ? { step } : { step, result } };
}

/**
 * The input reporting that `step` failed for good, and why.
 *
 * @example
 * ```ts
 * import { stepFailed } from "@impel/impel/workflow";
 * stepFailed("reserve", "out of stock"); // { type: "StepFailed", data: { step: "reserve", reason: "out of stock" } }
 * ```
 *
 * @category Workflows
 */
export function stepFailed(step: string, reason: string): SagaReply {
  checkText("step", step);
  checkText("reason", reason);
  return { type: "StepFailed", data: { step, reason } };
}

/**
 * The input confirming that `step` has been compensated.
 *
 * @example
 * ```ts
 * import { stepCompensated } from "@impel/impel/workflow";
 * stepCompensated("reserve"); // { type: "StepCompensated", data: { step: "reserve" } }
 * ```
 *
 * @category Workflows
 */
export function stepCompensated(step: string): SagaReply {
  checkText("step", step);
  return { type: "StepCompensated", data: { step } };
}

/**
 * The input reporting that `step`'s compensation failed for good: the saga will end `failed`.
 *
 * @example
 * ```ts
 * import { compensationFailed } from "@impel/impel/workflow";
 * compensationFailed("pay", "refund refused"); // { type: "CompensationFailed", data: { step: "pay", reason: "refund refused" } }
 * ```
 *
 * @category Workflows
 */
export function compensationFailed(step: string, reason: string): SagaReply {
  checkText("step", step);
  checkText("reason", reason);
  return { type: "CompensationFailed", data: { step, reason } };
}

/**
 * Whether a saga instance has ended (completed, compensated or failed).
 *
 * @example
 * ```ts
 * import { sagaEnded } from "@impel/impel/workflow";
 * sagaEnded({ status: "compensated", done: [], results: {}, undo: [], failures: [] }); // true
 * ```
 *
 * @category Workflows
 */
export function sagaEnded(state: SagaState<unknown>): boolean {
  if (state === null || typeof state !== "object") {
    throw new InvalidArgumentError("state", `must be a saga's state, got ${describe(state)}`);
  }
  return state.status === "completed" || state.status === "compensated" ||
    state.status === "failed";
}

/** Refuses what JSON would drop or cannot hold, so a result fails here, not at the append. */
function checkJson(path: string, value: unknown, seen: Set<object>): void {
  const bad = (what: string): never => {
    throw new InvalidArgumentError(path, `must be JSON data (it is stored), got ${what}`);
  };
  switch (typeof value) {
    case "string":
    case "boolean":
      return;
    case "number":
      if (!Number.isFinite(value)) bad(String(value));
      return;
    case "object":
      break;
    default:
      return bad(typeof value === "bigint" ? `the bigint ${value}n` : `a ${typeof value}`);
  }
  if (value === null) return;
  if (seen.has(value)) bad("a cycle");
  seen.add(value);
  if (Array.isArray(value)) {
    value.forEach((v, i) => checkJson(`${path}[${i}]`, v, seen));
  } else {
    const proto = Object.getPrototypeOf(value);
    if (proto !== Object.prototype && proto !== null) {
      bad(`a ${(value as object).constructor?.name ?? "class instance"}`);
    }
    for (const [k, v] of Object.entries(value)) {
      if (v !== undefined) checkJson(`${path}.${k}`, v, seen);
    }
  }
  seen.delete(value);
}

function checkText(field: string, value: unknown): void {
  if (typeof value !== "string" || value.length === 0) {
    throw new InvalidArgumentError(field, `must be a non-empty string, got ${describe(value)}`);
  }
}

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

/**
 * Builds the workflow of a saga: its events, state, decision and deadline timers. Run it with
 * {@linkcode startWorkflow} like any workflow; its `decide` and `fold` are plain functions for
 * domain tests.
 *
 * @example
 * ```ts
 * import { defineSaga, stepFailed, stepSucceeded } from "@impel/impel/workflow";
 *
 * type Trip = { tripId: string };
 * type Message =
 *   | { type: "BookFlight"; data: Trip }
 *   | { type: "CancelFlight"; data: Trip }
 *   | { type: "BookHotel"; data: Trip };
 * const trip = defineSaga<Trip, Message>({
 *   category: "Trip",
 *   steps: [
 *     {
 *       name: "flight",
 *       action: (t) => ({ to: `Flight-${t.tripId}`, type: "BookFlight", data: t }),
 *       compensation: (t) => ({ to: `Flight-${t.tripId}`, type: "CancelFlight", data: t }),
 *     },
 *     { name: "hotel", action: (t) => ({ to: `Hotel-${t.tripId}`, type: "BookHotel", data: t }) },
 *   ],
 * });
 * const context = { id: "t1", stream: "Trip-t1", now: 0, inputId: "i", correlationId: "c", version: 0, timers: [] };
 * let state = trip.fold(trip.initial, [
 *   { type: "Started", data: { tripId: "t1" } },
 *   { type: "StepSucceeded", data: { step: "flight", result: null } },
 * ]);
 * const decision = trip.decide(state, stepFailed("hotel", "full"), context);
 * console.log(decision.sends?.map((s) => s.type)); // ["CancelFlight"]
 * state = trip.fold(state, decision.events ?? []);
 * console.log(state.status, trip.decide(state, stepSucceeded("hotel"), context).events); // "compensating" undefined
 * ```
 *
 * @category Workflows
 */
export function defineSaga<D, M extends TypedEvent>(
  options: SagaOptions<D, M>,
): WorkflowDefinition<SagaEvent<D>, SagaState<D>, SagaInput<D>, M> {
  if (options === null || typeof options !== "object") {
    throw new InvalidArgumentError("options", `must be an object, got ${describe(options)}`);
  }
  const { steps, parse } = options;
  if (!Array.isArray(steps)) {
    throw new InvalidArgumentError("steps", `must be an array of steps, got ${describe(steps)}`);
  }
  const byName = new Map<string, SagaStep<D, M>>();
  steps.forEach((step, i) => {
    if (step === null || typeof step !== "object") {
      throw new InvalidArgumentError(`steps[${i}]`, `must be an object, got ${describe(step)}`);
    }
    if (typeof step.name !== "string" || step.name.length === 0) {
      throw new InvalidArgumentError(
        `steps[${i}].name`,
        `must be a non-empty string, got ${describe(step.name)}`,
      );
    }
    if (byName.has(step.name)) {
      throw new InvalidArgumentError(
        `steps[${i}].name`,
        `${JSON.stringify(step.name)} is used twice`,
      );
    }
    if (typeof step.action !== "function") {
      throw new InvalidArgumentError(`steps[${i}].action`, "must be a function");
    }
    if (step.compensation !== undefined && typeof step.compensation !== "function") {
      throw new InvalidArgumentError(`steps[${i}].compensation`, "must be a function");
    }
    if (step.timeoutMs !== undefined) checkNumber(`steps[${i}].timeoutMs`, step.timeoutMs, 1);
    if (step.compensationTimeoutMs !== undefined) {
      checkNumber(`steps[${i}].compensationTimeoutMs`, step.compensationTimeoutMs, 1);
    }
    byName.set(step.name, step);
  });
  if (parse !== undefined && typeof parse !== "function") {
    throw new InvalidArgumentError("parse", `must be a function, got ${describe(parse)}`);
  }
  const undoable = (name: string) => byName.get(name)?.compensation !== undefined;

  const codec = createCodec<SagaEvent<D>>({
    Started: { parse: (d) => (parse ? parse(d) : d) as D },
    StepSucceeded: {
      parse: (d) => {
        const f = fieldsOf(d);
        return { step: text(f, "step"), result: f.result ?? null };
      },
    },
    StepFailed: {
      parse: (d) => {
        const f = fieldsOf(d);
        if (typeof f.compensate !== "boolean") throw new TypeError("compensate must be a boolean");
        const failed = {
          step: text(f, "step"),
          reason: text(f, "reason"),
          compensate: f.compensate,
        };
        return f.timedOut === true ? { ...failed, timedOut: true } : failed;
      },
    },
    StepCompensated: { parse: (d) => ({ step: text(fieldsOf(d), "step") }) },
    CompensationFailed: {
      parse: (d) => {
        const f = fieldsOf(d);
        const failed = { step: text(f, "step"), reason: text(f, "reason") };
        return f.timedOut === true ? { ...failed, timedOut: true } : failed;
      },
    },
    Completed: { parse: () => ({}) },
    Compensated: { parse: (d) => ({ reason: text(fieldsOf(d), "reason") }) },
    Failed: { parse: (d) => ({ reason: text(fieldsOf(d), "reason") }) },
  });

  const initial: SagaState<D> = { status: "new", done: [], results: {}, undo: [], failures: [] };

  function evolve(s: SagaState<D>, e: SagaEvent<D>): SagaState<D> {
    switch (e.type) {
      case "Started":
        return { ...s, status: "running", data: e.data, step: steps[0]?.name };
      case "StepSucceeded": {
        const done = [...s.done, e.data.step];
        return {
          ...s,
          done,
          results: { ...s.results, [e.data.step]: e.data.result },
          step: steps[done.length]?.name,
        };
      }
      case "StepFailed": {
        const undo = [
          ...(e.data.compensate && undoable(e.data.step) ? [e.data.step] : []),
          ...[...s.done].reverse().filter(undoable),
        ];
        return {
          ...s,
          status: "compensating",
          reason: `${e.data.step}: ${e.data.reason}`,
          undo,
          step: undo[0],
          ...(e.data.timedOut ? { timedOut: e.data.step } : {}),
        };
      }
      case "StepCompensated":
      case "CompensationFailed": {
        const undo = s.undo[0] === e.data.step ? s.undo.slice(1) : s.undo;
        const failures = e.type === "CompensationFailed"
          ? [...s.failures, `${e.data.step}: ${e.data.reason}`]
          : s.failures;
        if (e.type === "CompensationFailed" && e.data.timedOut) {
          return {
            ...s,
            undo,
            failures,
            step: undo[0],
            expired: [...s.expired ?? [], e.data.step],
          };
        }
        return { ...s, undo, failures, step: undo[0] };
      }
      case "Completed":
        return { ...s, status: "completed", step: undefined };
      case "Compensated":
        return { ...s, status: "compensated", step: undefined, reason: e.data.reason };
      case "Failed":
        return { ...s, status: "failed", step: undefined, reason: e.data.reason };
    }
  }

  const fold = (state: SagaState<D>, events: readonly SagaEvent<D>[]) =>
    events.reduce(evolve, state);

  const category = options.category;
  const firstStep = steps[0]?.name;
  const refuse = (input: string, step: string | undefined, problem: string, cause?: unknown) => {
    throw new InvalidSagaInputError(
      category,
      input,
      step,
      problem,
      cause === undefined ? undefined : { cause },
    );
  };

  /** Checks an input's shape at the boundary; a Start's data is parsed, as the fold would. */
  function checked(input: SagaInput<D>): SagaInput<D> {
    if (input === null || typeof input !== "object" || typeof input.type !== "string") {
      return refuse(String(describe(input)), undefined, "an input must be a { type, data } object");
    }
    const data = (input as { data?: unknown }).data;
    if (input.type === "Start") {
      const what = firstStep === undefined ? "the saga" : `step ${firstStep}'s action`;
      // null too: a saga's data is what its steps read fields of (parse may accept it).
      if (data === undefined || (data === null && parse === undefined && firstStep !== undefined)) {
        return refuse(
          "Start",
          firstStep,
          `data is missing: a Start carries the saga's data (what ${what} is given), got ` +
            describe(data),
        );
      }
      if (parse === undefined) return input;
      try {
        return { type: "Start", data: parse(data) };
      } catch (error) {
        return refuse("Start", firstStep, `data refused by parse: ${errorText(error)}`, error);
      }
    }
    if (!NAMED.has(input.type) && input.type !== "Cancel") {
      return refuse(
        input.type,
        undefined,
        "a saga takes Start, StepSucceeded, StepFailed, StepCompensated, CompensationFailed, " +
          "Cancel and Deadline",
      );
    }
    const f = data !== null && typeof data === "object" ? data as Record<string, unknown> : {};
    if (input.type !== "Cancel" && !byName.has(f.step as string)) {
      throw new UnknownStepError(category, f.step, [...byName.keys()]);
    }
    const step = f.step as string | undefined;
    const needsReason = input.type === "StepFailed" || input.type === "CompensationFailed" ||
      input.type === "Cancel";
    if (needsReason && (typeof f.reason !== "string" || f.reason.length === 0)) {
      return refuse(
        input.type,
        step,
        `data.reason must be a non-empty string, got ${describe(f.reason)}`,
      );
    }
    if (input.type === "Deadline" && f.phase !== "action" && f.phase !== "compensation") {
      return refuse(
        "Deadline",
        step,
        `data.phase must be "action" or "compensation", got ${describe(f.phase)}`,
      );
    }
    return input;
  }

  const actionDeadline = (step: string) => `no outcome within ${byName.get(step)?.timeoutMs} ms`;
  const compensationDeadline = (step: string) =>
    `compensation not confirmed within ${byName.get(step)?.compensationTimeoutMs} ms`;

  /** The event an input records, if it fits the state. */
  function recorded(
    s: SagaState<D>,
    input: SagaInput<D>,
    context: WorkflowContext,
  ): SagaEvent<D> | undefined {
    const running = s.status === "running" ? s.step : undefined;
    const undoing = s.status === "compensating" ? s.step : undefined;
    switch (input.type) {
      case "Start":
        return s.status === "new" ? { type: "Started", data: input.data } : undefined;
      case "StepSucceeded":
      case "StepFailed":
        if (running === undefined || running !== input.data.step) return undefined;
        // Its deadline is due, its firing not yet decided: the outcome is late all the same, so
        // the step takes the deadline's path (a success an hour late does not complete it).
        if (lateBy(context) !== undefined) {
          const reason = `${actionDeadline(running)} (outcome late)`;
          return {
            type: "StepFailed",
            data: { step: running, reason, compensate: true, timedOut: true },
          };
        }
        return input.type === "StepSucceeded"
          ? { type: "StepSucceeded", data: { step: running, result: input.data.result ?? null } }
          : {
            type: "StepFailed",
            data: { step: running, reason: input.data.reason, compensate: false },
          };
      case "Cancel":
        return running !== undefined
          ? {
            type: "StepFailed",
            data: { step: running, reason: input.data.reason, compensate: true },
          }
          : undefined;
      case "Deadline":
        if (input.data.phase === "action" && running === input.data.step) {
          const reason = actionDeadline(running);
          return {
            type: "StepFailed",
            data: { step: running, reason, compensate: true, timedOut: true },
          };
        }
        if (input.data.phase === "compensation" && undoing === input.data.step) {
          const reason = compensationDeadline(undoing);
          return { type: "CompensationFailed", data: { step: undoing, reason, timedOut: true } };
        }
        return undefined;
      case "StepCompensated":
      case "CompensationFailed": {
        if (undoing === undefined || undoing !== input.data.step) return undefined;
        // Its deadline is due, its firing not yet decided: the confirmation is late all the same.
        if (lateBy(context) !== undefined) {
          const reason = `${compensationDeadline(undoing)} (confirmed late)`;
          return { type: "CompensationFailed", data: { step: undoing, reason, timedOut: true } };
        }
        return input.type === "StepCompensated"
          ? { type: "StepCompensated", data: { step: undoing } }
          : { type: "CompensationFailed", data: { step: undoing, reason: input.data.reason } };
      }
    }
  }

  /** How long past the running action's or compensation's deadline `context.now` is, if due. */
  function lateBy(context: WorkflowContext): number | undefined {
    const deadline = context.timers.find((t) => t.name === DEADLINE);
    return deadline !== undefined && deadline.due <= context.now
      ? context.now - deadline.due
      : undefined;
  }

  /** Why an outcome or a confirmation is ignored as late, if it is one. */
  function late(s: SagaState<D>, input: SagaInput<D>, context: WorkflowContext) {
    if (input.type === "StepSucceeded" || input.type === "StepFailed") {
      const step = input.data.step;
      if (s.status === "running" && s.step === step && lateBy(context) !== undefined) {
        return `${input.type} of ${step} came late (its deadline was due): counted as no outcome`;
      }
      if (s.timedOut === step) {
        const ms = byName.get(step)?.timeoutMs;
        return `${input.type} of ${step} came late (after its ${ms} ms deadline): the step stays ` +
          "failed and compensated";
      }
      return undefined;
    }
    if (input.type !== "StepCompensated" && input.type !== "CompensationFailed") return undefined;
    const step = input.data.step;
    if (s.status === "compensating" && s.step === step && lateBy(context) !== undefined) {
      return `${input.type} of ${step} came late (its deadline was due): counted as not confirmed`;
    }
    if ((s.expired ?? []).includes(step)) {
      const ms = byName.get(step)?.compensationTimeoutMs;
      return `${input.type} of ${step} came late (after its ${ms} ms deadline): it stays not confirmed`;
    }
    return undefined;
  }

  /** The sends of a step's action or compensation, checked. */
  function sendsOf(
    step: SagaStep<D, M>,
    phase: "action" | "compensation",
    data: D,
    context: StepContext,
  ): readonly Outgoing<M>[] {
    const fn = phase === "action" ? step.action : step.compensation!;
    let sends: unknown;
    try {
      sends = fn(data, context);
    } catch (error) {
      if (error instanceof ImpelError) throw error;
      throw new SagaStepError(category, step.name, phase, `threw ${errorText(error)}`, {
        cause: error,
      });
    }
    if (Array.isArray(sends)) return sends;
    if (sends !== null && typeof sends === "object") return [sends as Outgoing<M>];
    throw new SagaStepError(
      category,
      step.name,
      phase,
      `must return a send or an array of sends, got ${describe(sends)}`,
    );
  }

  function decide(
    s: SagaState<D>,
    raw: SagaInput<D>,
    context: WorkflowContext,
  ): WorkflowDecision<SagaEvent<D>, SagaInput<D>, M> {
    const input = checked(raw);
    const ignored = late(s, input, context);
    const note = ignored === undefined ? {} : { ignored };
    const first = recorded(s, input, context);
    if (first === undefined) {
      // A command that does not fit deserves notice (a reply that does not is routine).
      if (input.type === "Start" && s.status !== "new") {
        return { ignored: `Start ignored: the instance has already started (${s.status})` };
      }
      if (input.type === "Cancel") {
        return { ignored: `Cancel ignored: no step is running (${s.status})` };
      }
      return note;
    }
    const events: SagaEvent<D>[] = [first];
    let after = evolve(s, first);
    const deadline = (step: string, phase: "action" | "compensation", ms: number | undefined) =>
      ms === undefined ? [] : [
        {
          name: DEADLINE,
          afterMs: ms,
          input: { type: "Deadline", data: { step, phase } },
        } satisfies TimerRequest<SagaInput<D>>,
      ];
    const stop = { cancelTimers: [DEADLINE] };
    // A step compensated without its outcome (timed out, cancelled), or a compensation past its
    // deadline: its sends may still wait in the outbox; withdraw them, so a compensation never
    // takes effect before its action, nor a compensation after its deadline (a handler already
    // running finishes first).
    const withdrawable = (first.type === "StepFailed" && first.data.compensate) ||
        (first.type === "CompensationFailed" && first.data.timedOut)
      ? (context.pending ?? []).map((p) => p.seq)
      : [];
    // A compensation past its deadline is abandoned: the next one starts even while its handler
    // hangs (a late reply is ignored). An action is only withdrawn: its compensation waits for a
    // handler of it still running.
    const withdraw = withdrawable.length === 0
      ? {}
      : first.type === "CompensationFailed"
      ? { abandonSends: withdrawable }
      : { withdrawSends: withdrawable };
    // Steps and compensations with nothing to send are done at once, in this same decision.
    for (;;) {
      const stepContext = { id: context.id, results: after.results };
      const step = after.step === undefined ? undefined : byName.get(after.step)!;
      let done: SagaEvent<D>;
      if (after.status === "running") {
        if (step === undefined) {
          return { events: [...events, { type: "Completed", data: {} }], ...stop, ...note };
        }
        const sends = sendsOf(step, "action", after.data as D, stepContext);
        if (sends.length > 0) {
          return {
            events,
            sends,
            ...(step.timeoutMs === undefined ? stop : {}),
            timers: deadline(step.name, "action", step.timeoutMs),
            ...note,
          };
        }
        done = { type: "StepSucceeded", data: { step: step.name, result: null } };
      } else {
        if (step === undefined) {
          const end: SagaEvent<D> = after.failures.length > 0
            ? {
              type: "Failed",
              data: {
                reason: `${after.reason}; compensation failed: ${after.failures.join("; ")}`,
              },
            }
            : { type: "Compensated", data: { reason: after.reason ?? "" } };
          return { events: [...events, end], ...stop, ...withdraw, ...note };
        }
        const sends = sendsOf(step, "compensation", after.data as D, stepContext);
        if (sends.length > 0) {
          return {
            events,
            ...withdraw,
            sends,
            ...(step.compensationTimeoutMs === undefined ? stop : {}),
            timers: deadline(step.name, "compensation", step.compensationTimeoutMs),
            ...note,
          };
        }
        done = { type: "StepCompensated", data: { step: step.name } };
      }
      events.push(done);
      after = evolve(after, done);
    }
  }

  return defineWorkflow<SagaEvent<D>, SagaState<D>, SagaInput<D>, M>({
    category: options.category,
    codec,
    initial,
    fold,
    decide,
    routes: options.routes,
    ...(options.sends === undefined ? {} : { sends: options.sends }),
    ...(options.snapshot === undefined ? {} : {
      snapshot: {
        every: options.snapshot?.every,
        // The saga's data is what `parse` made of the stored JSON: a snapshot's is too.
        decode: (raw: unknown) => {
          const state = raw as SagaState<D>;
          return parse === undefined || state.data === undefined
            ? state
            : { ...state, data: parse(state.data) };
        },
      },
    }),
  });
}
