/**
 * Deciding on an input: calls the workflow's `decide` with its context and turns what it
 * returns into the events the instance records (its own, outbox entries, timers set and
 * cancelled, sends withdrawn), checking every part before anything is appended.
 *
 * @module
 */
import type { EncodeContext, TypedEvent } from "../codec.ts";
import { describe, ImpelError } from "../errors.ts";
import { idOf, type StreamName } from "../streamName.ts";
import type { Clock } from "../timers.ts";
import {
  checkInput,
  type Outgoing,
  type TimerRequest,
  type WorkflowDecision,
  type WorkflowDefinition,
} from "./definition.ts";
import { InvalidWorkflowDecisionError, WorkflowDecideError } from "./errors.ts";
import { type Internal, isRuntimeType, type Stored } from "./instance.ts";

/**
 * An input with its identity and tracing ids.
 *
 * @example
 * ```ts
 * import type { Arrival } from "./decision.ts";
 * const arrival: Arrival = { id: "cmd-1", input: { type: "Start", data: {} }, correlationId: "req-1" };
 * ```
 */
export interface Arrival {
  readonly id: string;
  readonly input: TypedEvent;
  readonly correlationId: string;
}

/**
 * What a decision records, and why its input was ignored, if it says.
 *
 * @example
 * ```ts
 * import type { Decided } from "./decision.ts";
 * const decided: Decided<never> = { events: [{ type: "WorkflowDelivered", data: { seq: 0 } }] };
 * ```
 */
export interface Decided<E> {
  readonly events: Stored<E>[];
  readonly ignored?: string;
}

/**
 * Decides on `arrival` for the instance `stream`, in state `s` at `version`.
 *
 * @example
 * ```ts
 * import type { DecideOn } from "./decision.ts";
 * const nothing: DecideOn<never, null> = () => ({ events: [] });
 * ```
 */
export type DecideOn<E extends TypedEvent, S> = (
  stream: StreamName,
  s: Internal<S>,
  version: number,
  arrival: Arrival,
) => Decided<E>;

/**
 * The decision function of `def` on `clock`; `sendTypes`, when given, are the send types a
 * runner has handlers for (a send of another type is refused at decision time).
 *
 * @example
 * ```ts
 * import { createCodec } from "../codec.ts";
 * import { systemClock } from "../timers.ts";
 * import { createDecide } from "./decision.ts";
 * const decideOn = createDecide({
 *   category: "Notes",
 *   codec: createCodec<{ type: "Noted"; data: null }>({ Noted: {} }),
 *   initial: 0,
 *   fold: (n: number) => n,
 *   decide: () => ({ events: [{ type: "Noted", data: null }] }),
 * }, systemClock);
 * const arrival = { id: "c1", input: { type: "Note", data: null }, correlationId: "c1" };
 * const decided = decideOn("Notes-1", { state: 0, next: 0, pending: [], timers: [] }, 0, arrival);
 * console.log(decided.events.length); // 1
 * ```
 */
export function createDecide<E extends TypedEvent, S, I extends TypedEvent, M extends TypedEvent>(
  def: WorkflowDefinition<E, S, I, M>,
  clock: Clock,
  sendTypes?: ReadonlySet<string>,
): DecideOn<E, S> {
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
    const abandons = list<number>("abandonSends");
    const ignored = decision.ignored;
    if (ignored !== undefined && (typeof ignored !== "string" || ignored.length === 0)) {
      refuse(`ignored must be a non-empty string, got ${describe(ignored)}`);
    }
    const out: Stored<E>[] = [];
    events.forEach((e, i) => {
      if (e === null || typeof e !== "object" || Array.isArray(e)) {
        refuse(`events[${i}] must be an event { type, data }, got ${describe(e)}`);
      }
      if (typeof e.type !== "string" || e.type.length === 0) {
        refuse(`events[${i}].type must be a non-empty string, got ${describe(e.type)}`);
      }
      if (isRuntimeType(e.type)) refuse(`events[${i}] has the runtime's type ${e.type}`);
      out.push(e);
    });
    const withdrawn = new Set<number>();
    withdrawals.forEach((seq, i) => {
      if (!Number.isSafeInteger(seq) || seq < 0) {
        refuse(`withdrawSends[${i}] must be an outbox index (>= 0), got ${describe(seq)}`);
      }
      if (withdrawn.has(seq) || !s.pending.some((p) => p.seq === seq)) return;
      withdrawn.add(seq);
      out.push({ type: "WorkflowWithdrawn", data: { seq } });
    });
    abandons.forEach((seq, i) => {
      if (!Number.isSafeInteger(seq)) {
        refuse(`abandonSends[${i}] must be an outbox index, got ${describe(seq)}`);
      }
      if (withdrawn.has(seq) || !s.pending.some((p) => p.seq === seq)) return;
      withdrawn.add(seq);
      out.push({ type: "WorkflowWithdrawn", data: { seq, abandoned: true } });
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
      const due = dueOf(t, i, now, refuse);
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
          due,
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
      if (def.sends !== undefined && !def.sends.includes(m.type)) {
        refuse(
          `sends[${i}] has type ${
            JSON.stringify(m.type)
          }, which ${def.category} does not declare ` +
            `(sends: ${def.sends.join(", ") || "none"})`,
        );
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

  return decideOn;
}

/**
 * When timer request `t` (`timers[i]` of a decision made at `now`) is due: exactly one of `at`
 * (ms since the epoch, >= 0: the durable timers refuse earlier ones, which would fail the
 * instance's stream on every dispatch) and `afterMs` (>= 0), each a finite number; else `refuse`
 * says which is wrong.
 */
function dueOf(
  t: TimerRequest<TypedEvent>,
  i: number,
  now: number,
  refuse: (problem: string) => never,
): number {
  const { at, afterMs } = t as { at?: unknown; afterMs?: unknown };
  if (at !== undefined && afterMs !== undefined) {
    refuse(
      `timers[${i}] has both at (${describe(at)}) and afterMs (${describe(afterMs)}): give one`,
    );
  }
  const valid = (v: unknown): v is number => typeof v === "number" && Number.isFinite(v) && v >= 0;
  if (at !== undefined) {
    if (!valid(at)) {
      refuse(
        `timers[${i}].at must be ms since the epoch (a finite number >= 0), got ${describe(at)}`,
      );
    }
    return at as number;
  }
  if (afterMs !== undefined) {
    if (!valid(afterMs)) {
      refuse(`timers[${i}].afterMs must be a finite number >= 0, got ${describe(afterMs)}`);
    }
    const due = now + (afterMs as number);
    if (!Number.isFinite(due)) refuse(`timers[${i}].afterMs ${afterMs} is too far ahead`);
    return due;
  }
  return refuse(`timers[${i}] needs afterMs (>= 0) or at (ms since the epoch)`);
}

/**
 * The encode context of what a decision on `arrival` records: its correlation id, and its id
 * as causation id.
 *
 * @example
 * ```ts
 * import { tracing } from "./decision.ts";
 * console.log(tracing({ id: "c1", input: { type: "Start", data: {} }, correlationId: "r1" }));
 * // { correlationId: "r1", causationId: "c1" }
 * ```
 */
export const tracing = (arrival: Arrival): EncodeContext => ({
  correlationId: arrival.correlationId,
  causationId: arrival.id,
});
