/**
 * An instance's stream: the runtime's events next to the workflow's (outbox entries, their
 * fate, timers), their codec, and the fold of both into the instance's state.
 *
 * @module
 */
import { type Codec, createCodec, type TypedEvent } from "../codec.ts";
import { describe } from "../errors.ts";

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
  "WorkflowSnapshot",
]);
const RUNTIME_TYPES = new Set(WORKFLOW_EVENT_TYPES);

/**
 * Whether `type` is one of the runtime's ({@linkcode WORKFLOW_EVENT_TYPES}).
 *
 * @example
 * ```ts
 * import { isRuntimeType } from "./instance.ts";
 * console.log(isRuntimeType("WorkflowSend"), isRuntimeType("Placed")); // true false
 * ```
 */
export function isRuntimeType(type: string): boolean {
  return RUNTIME_TYPES.has(type);
}

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
  | {
    readonly type: "WorkflowWithdrawn";
    /**
     * `abandoned`: what the same decision sent does not wait for its handler, if running.
     * `settled`: recorded by the runner for a send already withdrawn, once no handler of it can
     * still be running (its entry leaves `withdrawn`; earlier versions ignore it).
     */
    readonly data: { readonly seq: number; readonly abandoned?: true; readonly settled?: true };
  }
  | { readonly type: "WorkflowTimerSet"; readonly data: TimerRecord }
  | { readonly type: "WorkflowTimerDue"; readonly data: { readonly seq: number } }
  | { readonly type: "WorkflowTimerCancelled"; readonly data: { readonly seq: number } }
  | { readonly type: "WorkflowTimerFired"; readonly data: { readonly seq: number } }
  | {
    readonly type: "WorkflowSnapshot";
    /** The instance's whole state, the workflow's part as its `snapshot.encode` gave it. */
    readonly data: WorkflowSnapshotData;
  };

/**
 * What a `WorkflowSnapshot` event records: an instance's whole state.
 *
 * @example
 * ```ts
 * import type { WorkflowSnapshotData } from "@impel/impel/workflow";
 * const snapshot: WorkflowSnapshotData = { state: { count: 3 }, next: 2, pending: [], timers: [] };
 * ```
 *
 * @category Workflows
 */
export interface WorkflowSnapshotData {
  /** The workflow's state, as its `snapshot.encode` gave it. */
  readonly state: unknown;
  /** The next outbox index. */
  readonly next: number;
  /** Sends recorded and not delivered. */
  readonly pending: readonly PendingSend[];
  /** Timers pending. */
  readonly timers: readonly TimerRecord[];
  /** Pending timers found due. */
  readonly due?: readonly number[];
  /** The correlation id of the instance's first outbox entry. */
  readonly correlationId?: string;
  /** Sends withdrawn whose handler may still be running. */
  readonly withdrawn?: readonly number[];
  /** For each of `withdrawn`, the outbox's next index when it was withdrawn. */
  readonly withdrawnAt?: readonly number[];
  /** Those of `withdrawn` that were abandoned. */
  readonly abandoned?: readonly number[];
}

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
 * An instance's folded state: the workflow's, plus its outbox.
 *
 * @example
 * ```ts
 * import type { Internal } from "./instance.ts";
 * const fresh: Internal<number> = { state: 0, next: 0, pending: [], timers: [] };
 * ```
 */
export interface Internal<S> {
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
  /**
   * Sends withdrawn (`WorkflowWithdrawn`) whose handler may still be running: a reply to one is
   * ignored, and noted. One is dropped once a send recorded after its withdrawal is delivered
   * (see `withdrawnAt`), or once the runner records it settled (no handler of it running; done
   * when more than a few are listed), so the list stays short also for an instance that
   * withdraws every send.
   */
  readonly withdrawn?: readonly number[];
  /**
   * For each of `withdrawn`, the outbox's next index when it was withdrawn: the dispatcher
   * delivers no send from there on while the withdrawn send's handler runs.
   */
  readonly withdrawnAt?: readonly number[];
  /** Those of `withdrawn` that were abandoned: a running handler of one is not waited for. */
  readonly abandoned?: readonly number[];
}

/**
 * What an instance stream holds: the workflow's own events and the runtime's.
 *
 * @example
 * ```ts
 * import type { Stored } from "./instance.ts";
 * const events: Stored<{ type: "Noted"; data: null }>[] = [
 *   { type: "Noted", data: null },
 *   { type: "WorkflowDelivered", data: { seq: 0 } },
 * ];
 * ```
 */
export type Stored<E> = E | WorkflowRuntimeEvent;

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

const parseSend = (d: unknown): PendingSend => {
  const f = fieldsOf(d);
  return {
    seq: index(f, "seq"),
    to: text(f, "to"),
    type: text(f, "type"),
    data: f.data ?? null,
    correlationId: text(f, "correlationId"),
    causationId: text(f, "causationId"),
  };
};
const parseTimer = (d: unknown): TimerRecord => {
  const f = fieldsOf(d);
  const due = f.due;
  if (typeof due !== "number" || !Number.isFinite(due)) {
    throw new TypeError("due must be a number");
  }
  return {
    seq: index(f, "seq"),
    name: text(f, "name"),
    // Decisions once accepted a due before the epoch, which the durable timers refuse (the
    // stream failed on every dispatch): it is as past as the epoch, so it reads as that.
    due: Math.max(0, due),
    input: typed(f.input, "input"),
    correlationId: text(f, "correlationId"),
  };
};
const listOf = <T>(f: Record<string, unknown>, key: string, parse: (d: unknown) => T): T[] => {
  const v = f[key];
  if (v === undefined) return [];
  if (!Array.isArray(v)) throw new TypeError(`${key} must be an array`);
  return v.map(parse);
};
const indexes = (f: Record<string, unknown>, key: string): number[] =>
  listOf(f, key, (v) => index({ v }, "v"));

/** A snapshot's data: the parts of an instance's state, checked; optional ones only if any. */
function parseSnapshot(d: unknown): Internal<unknown> {
  const f = fieldsOf(d);
  const withdrawn = indexes(f, "withdrawn");
  const withdrawnAt = indexes(f, "withdrawnAt");
  if (withdrawnAt.length !== withdrawn.length) {
    throw new TypeError("withdrawnAt must be as long as withdrawn");
  }
  const due = indexes(f, "due"), abandoned = indexes(f, "abandoned");
  const correlationId = f.correlationId === undefined ? undefined : text(f, "correlationId");
  return {
    state: f.state,
    next: index(f, "next"),
    pending: listOf(f, "pending", parseSend),
    timers: listOf(f, "timers", parseTimer),
    ...(due.length === 0 ? {} : { due }),
    ...(correlationId === undefined ? {} : { correlationId }),
    ...(withdrawn.length === 0 ? {} : { withdrawn, withdrawnAt }),
    ...(abandoned.length === 0 ? {} : { abandoned }),
  };
}

const runtimeCodec = createCodec<WorkflowRuntimeEvent>({
  WorkflowSend: { parse: parseSend },
  WorkflowDelivered: { parse: (d) => ({ seq: index(fieldsOf(d), "seq") }) },
  WorkflowWithdrawn: {
    parse: (d) => {
      const f = fieldsOf(d);
      if (f.settled === true) return { seq: index(f, "seq"), settled: true };
      return f.abandoned === true
        ? { seq: index(f, "seq"), abandoned: true }
        : { seq: index(f, "seq") };
    },
  },
  WorkflowTimerSet: { parse: parseTimer },
  WorkflowTimerDue: { parse: (d) => ({ seq: index(fieldsOf(d), "seq") }) },
  WorkflowTimerCancelled: { parse: (d) => ({ seq: index(fieldsOf(d), "seq") }) },
  WorkflowTimerFired: { parse: (d) => ({ seq: index(fieldsOf(d), "seq") }) },
  WorkflowSnapshot: { parse: parseSnapshot },
});

/**
 * The workflow's codec and the runtime's, as one: runtime types go to the runtime's.
 *
 * @example
 * ```ts
 * import { createCodec } from "../codec.ts";
 * import { storedCodec } from "./instance.ts";
 * const codec = storedCodec(createCodec<{ type: "Noted"; data: null }>({ Noted: {} }));
 * ```
 */
export function storedCodec<E extends TypedEvent>(codec: Codec<E>): Codec<Stored<E>> {
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

/**
 * The fold of an instance's stream: the workflow's events through its own `fold` (in runs, so
 * it sees them together), the runtime's into the outbox and timers.
 *
 * @example
 * ```ts
 * import { internalFold } from "./instance.ts";
 * const fold = internalFold<{ type: "Noted"; data: null }, number>((n, es) => n + es.length);
 * const s = fold({ state: 0, next: 0, pending: [], timers: [] }, [{ type: "Noted", data: null }]);
 * console.log(s.state); // 1
 * ```
 */
export function internalFold<E extends TypedEvent, S>(
  fold: (state: S, events: readonly E[]) => S,
  decodeState: (data: unknown) => S = (data) => data as S,
): (s: Internal<S>, events: readonly Stored<E>[]) => Internal<S> {
  return (s, events) => {
    let { state, next, correlationId } = s;
    let pending = bySeq(s.pending), timers = bySeq(s.timers);
    let due = s.due ?? [];
    let withdrawn = s.withdrawn ?? [], abandoned = s.abandoned ?? [];
    // A state folded before `withdrawnAt` existed: its outbox's next index bounds them all.
    let withdrawnAt = s.withdrawnAt?.length === withdrawn.length
      ? s.withdrawnAt
      : withdrawn.map(() => s.next);
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
          pending.add(e.data);
          next = Math.max(next, e.data.seq + 1);
          correlationId ??= e.data.correlationId;
          break;
        case "WorkflowWithdrawn":
          if (e.data.settled) {
            // No handler of it runs any more: no reply can come, nothing waits for it.
            const k = withdrawn.indexOf(e.data.seq);
            if (k >= 0) {
              withdrawn = withdrawn.filter((_, i) => i !== k);
              withdrawnAt = withdrawnAt.filter((_, i) => i !== k);
              abandoned = abandoned.filter((seq) => seq !== e.data.seq);
            }
          } else if (pending.remove(e.data.seq)) {
            withdrawn = [...withdrawn, e.data.seq];
            withdrawnAt = [...withdrawnAt, next];
            if (e.data.abandoned) abandoned = [...abandoned, e.data.seq];
          }
          break;
        case "WorkflowDelivered": {
          const seq = e.data.seq;
          pending.remove(seq);
          // A send recorded after a withdrawal waits for the withdrawn send's handler (the
          // dispatcher holds it back, as it holds back every later send): once one is delivered,
          // that handler has returned and its reply can no longer come. An abandoned one is not
          // waited for, so it stays.
          if (withdrawnAt.length > 0 && withdrawnAt[0] <= seq) {
            const keep = withdrawn.map((w, i) => withdrawnAt[i] > seq || abandoned.includes(w));
            withdrawn = withdrawn.filter((_, i) => keep[i]);
            withdrawnAt = withdrawnAt.filter((_, i) => keep[i]);
          }
          break;
        }
        case "WorkflowTimerSet":
          timers.add(e.data);
          next = Math.max(next, e.data.seq + 1);
          correlationId ??= e.data.correlationId;
          break;
        case "WorkflowTimerDue":
          if (timers.has(e.data.seq) && !due.includes(e.data.seq)) due = [...due, e.data.seq];
          break;
        case "WorkflowSnapshot": {
          // Everything folded so far is superseded.
          const snap = e.data;
          state = decodeState(snap.state);
          next = snap.next;
          correlationId = snap.correlationId;
          pending = bySeq(snap.pending);
          timers = bySeq(snap.timers);
          due = snap.due ?? [];
          withdrawn = snap.withdrawn ?? [];
          withdrawnAt = snap.withdrawnAt ?? [];
          abandoned = snap.abandoned ?? [];
          break;
        }
        case "WorkflowTimerCancelled":
        case "WorkflowTimerFired":
          timers.remove(e.data.seq);
          if (due.includes(e.data.seq)) due = due.filter((seq) => seq !== e.data.seq);
          break;
      }
    }
    flush();
    // Optional parts only when present: states stay small and compare equal to earlier ones.
    return {
      state,
      next,
      pending: pending.list(),
      timers: timers.list(),
      ...(due.length === 0 ? {} : { due }),
      ...(correlationId === undefined ? {} : { correlationId }),
      ...(withdrawn.length === 0 ? {} : { withdrawn, withdrawnAt }),
      ...(abandoned.length === 0 ? {} : { abandoned }),
    };
  };
}

/**
 * Outbox entries by index, for one fold call: the list is copied once, when first changed, and
 * removals are swept once at the end, so a long stream folds in linear time (not a copy per
 * event), and the list passed in (of a cached state) is never changed. The few lists that stay
 * short (`due`, `withdrawn`) are copied as they change.
 */
function bySeq<T extends { readonly seq: number }>(original: readonly T[]) {
  let items: T[] | undefined;
  let seqs: Set<number> | undefined;
  const gone = new Set<number>();
  const present = () => seqs ??= new Set(original.map((e) => e.seq));
  return {
    has: (seq: number): boolean => present().has(seq),
    add(entry: T): void {
      items ??= [...original];
      if (gone.delete(entry.seq)) items = items.filter((e) => e.seq !== entry.seq);
      present().add(entry.seq);
      items.push(entry);
    },
    /** Whether `seq` was there. */
    remove(seq: number): boolean {
      if (!present().delete(seq)) return false;
      items ??= [...original];
      gone.add(seq);
      return true;
    },
    list(): readonly T[] {
      if (items === undefined) return original;
      return gone.size === 0 ? items : items.filter((e) => !gone.has(e.seq));
    },
  };
}
