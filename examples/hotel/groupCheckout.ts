/**
 * GroupCheckout: a clerk checks a set of stays out together. The clerk selects stays; the
 * reactor (see `reactor.ts`) transfers each selected stay to the group and records the residual
 * balance it took over, or why the stay could not be taken; the group is paid and, once every
 * selected stay has an outcome and the balance is settled, confirmed.
 *
 * The state doubles as the process manager's to-do list: {@linkcode nextAction} says what the
 * reactor still has to do.
 *
 * @module
 */
import { createCodec } from "../../core/codec.ts";
import { createDecider, type StateCache } from "../../core/decider.ts";
import type { EventStore } from "../../core/store.ts";
import { streamName } from "../../core/streamName.ts";
import { fieldsOf, integer, listOf, text, textItem } from "./fields.ts";
import type { TransferFailure, TransferResult } from "./guestStay.ts";

/** The category of GroupCheckout streams. */
export const GROUP_CHECKOUT = "GroupCheckout";

/**
 * The stream of group checkout `groupId`.
 *
 * @example
 * ```ts
 * import { groupStream } from "./groupCheckout.ts";
 * groupStream("g7"); // "GroupCheckout-g7"
 * ```
 */
export const groupStream = (groupId: string): string => streamName(GROUP_CHECKOUT, groupId);

/** A stay taken over by the group, with the balance it carried. */
export interface MergedStay {
  /** The stay. */
  readonly stayId: string;
  /** Its residual balance, now owed by the group. */
  readonly residual: number;
}

/** A stay the group could not take over. */
export interface FailedMerge {
  /** The stay. */
  readonly stayId: string;
  /** Why. */
  readonly reason: TransferFailure;
}

/** What happens to a group checkout. */
export type GroupCheckoutEvent =
  | { type: "StaysSelected"; data: { stayIds: string[]; at: string } }
  | { type: "StaysMerged"; data: { stays: MergedStay[] } }
  | { type: "MergesFailed"; data: { stays: FailedMerge[] } }
  | { type: "Paid"; data: { paymentId: string; amount: number; at: string } }
  | { type: "Confirmed"; data: { at: string } };

const FAILURES: readonly string[] = ["notCheckedIn", "checkedOut", "transferredElsewhere"];

/** A decision's events together with what it reports to the caller. */
export interface Decided<R> {
  /** The events to append (none when nothing changes). */
  readonly events: readonly GroupCheckoutEvent[];
  /** The outcome reported to the caller. */
  readonly result: R;
}

/**
 * Stored GroupCheckout events ↔ typed ones; every shape is checked on the way in.
 *
 * @example
 * ```ts
 * import { groupCheckoutCodec } from "./groupCheckout.ts";
 * groupCheckoutCodec.encode({ type: "Confirmed", data: { at: "t" } }); // { type: "Confirmed", data: { at: "t" } }
 * ```
 */
export const groupCheckoutCodec = createCodec<GroupCheckoutEvent>({
  StaysSelected: {
    parse: (d) => {
      const f = fieldsOf(d);
      return { stayIds: listOf(f, "stayIds", textItem), at: text(f, "at") };
    },
  },
  StaysMerged: {
    parse: (d) => ({
      stays: listOf(fieldsOf(d), "stays", (item) => {
        const f = fieldsOf(item);
        return { stayId: text(f, "stayId"), residual: integer(f, "residual") };
      }),
    }),
  },
  MergesFailed: {
    parse: (d) => ({
      stays: listOf(fieldsOf(d), "stays", (item) => {
        const f = fieldsOf(item);
        const reason = text(f, "reason");
        if (!FAILURES.includes(reason)) throw new TypeError(`unknown failure reason ${reason}`);
        return { stayId: text(f, "stayId"), reason: reason as TransferFailure };
      }),
    }),
  },
  Paid: {
    parse: (d) => {
      const f = fieldsOf(d);
      return { paymentId: text(f, "paymentId"), amount: integer(f, "amount"), at: text(f, "at") };
    },
  },
  Confirmed: { parse: (d) => ({ at: text(fieldsOf(d), "at") }) },
});

/** The folded state of a group checkout. */
export interface GroupCheckout {
  /** Selected stays without an outcome yet, in selection order. */
  readonly pending: readonly string[];
  /** Stays taken over. */
  readonly merged: readonly MergedStay[];
  /** Stays that could not be taken over. */
  readonly failed: readonly FailedMerge[];
  /** Payment ids recorded. */
  readonly payments: readonly string[];
  /** Sum of the merged residuals minus payments, in minor units. */
  readonly balance: number;
  /** When it was confirmed, once it is. */
  readonly confirmedAt?: string;
}

/** The state of a group checkout with no events. */
export const initialGroup: GroupCheckout = {
  pending: [],
  merged: [],
  failed: [],
  payments: [],
  balance: 0,
};

function evolve(s: GroupCheckout, e: GroupCheckoutEvent): GroupCheckout {
  switch (e.type) {
    case "StaysSelected":
      return { ...s, pending: [...s.pending, ...e.data.stayIds.filter((id) => !known(s, id))] };
    case "StaysMerged": {
      const ids = new Set(e.data.stays.map((m) => m.stayId));
      const residuals = e.data.stays.reduce((sum, m) => sum + m.residual, 0);
      return {
        ...s,
        pending: s.pending.filter((id) => !ids.has(id)),
        merged: [...s.merged, ...e.data.stays],
        balance: s.balance + residuals,
      };
    }
    case "MergesFailed": {
      const ids = new Set(e.data.stays.map((m) => m.stayId));
      return {
        ...s,
        pending: s.pending.filter((id) => !ids.has(id)),
        failed: [...s.failed, ...e.data.stays],
      };
    }
    case "Paid":
      return {
        ...s,
        payments: [...s.payments, e.data.paymentId],
        balance: s.balance - e.data.amount,
      };
    case "Confirmed":
      return { ...s, confirmedAt: e.data.at };
  }
}

function known(s: GroupCheckout, stayId: string): boolean {
  return s.pending.includes(stayId) || s.merged.some((m) => m.stayId === stayId) ||
    s.failed.some((m) => m.stayId === stayId);
}

/**
 * Applies events to a group checkout's state.
 *
 * @example
 * ```ts
 * import { foldGroup, initialGroup } from "./groupCheckout.ts";
 * foldGroup(initialGroup, [{ type: "StaysSelected", data: { stayIds: ["s1"], at: "t" } }]).pending; // ["s1"]
 * ```
 */
export const foldGroup = (
  state: GroupCheckout,
  events: readonly GroupCheckoutEvent[],
): GroupCheckout => events.reduce(evolve, state);

/** What the reactor has to do next for a group. */
export type NextAction =
  | { readonly kind: "merge"; readonly stayIds: readonly string[] }
  | { readonly kind: "ready"; readonly balance: number }
  | { readonly kind: "confirmed" };

/**
 * The reactor's to-do list: stays to merge, or nothing (ready for payment / confirmed).
 *
 * @example
 * ```ts
 * import { initialGroup, nextAction } from "./groupCheckout.ts";
 * nextAction({ ...initialGroup, pending: ["s1"] }); // { kind: "merge", stayIds: ["s1"] }
 * ```
 */
export function nextAction(s: GroupCheckout): NextAction {
  if (s.confirmedAt !== undefined) return { kind: "confirmed" };
  if (s.pending.length > 0) return { kind: "merge", stayIds: s.pending };
  return { kind: "ready", balance: s.balance };
}

/** The outcome of selecting stays or paying. */
export type GroupCommandResult = { readonly ok: true } | {
  readonly ok: false;
  readonly reason: "confirmed";
};

/** The outcome of a confirmation. */
export type ConfirmResult =
  | { readonly ok: true }
  | { readonly ok: false; readonly reason: "mergesPending"; readonly pending: number }
  | { readonly ok: false; readonly reason: "balanceDue"; readonly balance: number };

/**
 * Adds stays to the group; stays it already knows are ignored.
 *
 * @example
 * ```ts
 * import { initialGroup, selectStays } from "./groupCheckout.ts";
 * selectStays(["s1", "s1", "s2"], "t")(initialGroup).events; // one StaysSelected of s1, s2
 * ```
 */
export function selectStays(
  stayIds: readonly string[],
  at: string,
): (s: GroupCheckout) => Decided<GroupCommandResult> {
  return (s) => {
    if (s.confirmedAt !== undefined) {
      return { events: [], result: { ok: false, reason: "confirmed" } };
    }
    const fresh = [...new Set(stayIds)].filter((id) => !known(s, id));
    const events: GroupCheckoutEvent[] = fresh.length > 0
      ? [{ type: "StaysSelected", data: { stayIds: fresh, at } }]
      : [];
    return { events, result: { ok: true } };
  };
}

/** One stay's transfer outcome, as the reactor collected it. */
export interface MergeOutcome {
  /** The stay. */
  readonly stayId: string;
  /** What its transfer to the group reported. */
  readonly result: TransferResult;
}

/**
 * Records transfer outcomes for stays still pending (outcomes already recorded are ignored).
 *
 * @example
 * ```ts
 * import { initialGroup, recordMerges } from "./groupCheckout.ts";
 * const state = { ...initialGroup, pending: ["s1"] };
 * recordMerges([{ stayId: "s1", result: { ok: true, residual: 300 } }])(state); // [StaysMerged]
 * ```
 */
export function recordMerges(
  outcomes: readonly MergeOutcome[],
): (s: GroupCheckout) => GroupCheckoutEvent[] {
  return (s) => {
    const pending = new Set(s.pending);
    const merged: MergedStay[] = [];
    const failed: FailedMerge[] = [];
    for (const { stayId, result } of outcomes) {
      if (!pending.delete(stayId)) continue;
      if (result.ok) merged.push({ stayId, residual: result.residual });
      else failed.push({ stayId, reason: result.reason });
    }
    const events: GroupCheckoutEvent[] = [];
    if (merged.length > 0) events.push({ type: "StaysMerged", data: { stays: merged } });
    if (failed.length > 0) events.push({ type: "MergesFailed", data: { stays: failed } });
    return events;
  };
}

/**
 * Records a payment towards the group's balance (once per `paymentId`).
 *
 * @example
 * ```ts
 * import { initialGroup, payGroup } from "./groupCheckout.ts";
 * payGroup("p1", 300, "t")(initialGroup).events.length; // 1
 * ```
 */
export function payGroup(
  paymentId: string,
  amount: number,
  at: string,
): (s: GroupCheckout) => Decided<GroupCommandResult> {
  return (s) => {
    if (s.payments.includes(paymentId)) return { events: [], result: { ok: true } };
    if (s.confirmedAt !== undefined) {
      return { events: [], result: { ok: false, reason: "confirmed" } };
    }
    return { events: [{ type: "Paid", data: { paymentId, amount, at } }], result: { ok: true } };
  };
}

/**
 * Confirms the group once every selected stay has an outcome and the balance is settled.
 *
 * @example
 * ```ts
 * import { confirm, initialGroup } from "./groupCheckout.ts";
 * confirm("t")({ ...initialGroup, balance: 300 }).result; // { ok: false, reason: "balanceDue", balance: 300 }
 * ```
 */
export function confirm(
  at: string,
): (s: GroupCheckout) => Decided<ConfirmResult> {
  return (s) => {
    if (s.confirmedAt !== undefined) return { events: [], result: { ok: true } };
    if (s.pending.length > 0) {
      return {
        events: [],
        result: { ok: false, reason: "mergesPending", pending: s.pending.length },
      };
    }
    if (s.balance !== 0) {
      return { events: [], result: { ok: false, reason: "balanceDue", balance: s.balance } };
    }
    return { events: [{ type: "Confirmed", data: { at } }], result: { ok: true } };
  };
}

/** Options of {@linkcode groupCheckoutService}. */
export interface GroupServiceOptions {
  /** Keep folded groups in memory between calls (the reactor reads each group repeatedly). */
  readonly cache?: StateCache;
}

/** A group's state with the stream version it reflects. */
export interface VersionedGroup {
  /** The folded state. */
  readonly state: GroupCheckout;
  /** The stream's version (event count) the state reflects. */
  readonly version: number;
}

/** Commands and queries on group checkouts, over a store. */
export interface GroupCheckoutService {
  /** Adds stays to the group. */
  select(groupId: string, stayIds: readonly string[], at: string): Promise<GroupCommandResult>;
  /** Records a payment. */
  pay(groupId: string, paymentId: string, amount: number, at: string): Promise<GroupCommandResult>;
  /** Confirms the group checkout. */
  confirm(groupId: string, at: string): Promise<ConfirmResult>;
  /** Records transfer outcomes; returns the state and version after the write. */
  recordMerges(groupId: string, outcomes: readonly MergeOutcome[]): Promise<VersionedGroup>;
  /** The group's state and version. */
  read(groupId: string): Promise<VersionedGroup>;
}

/**
 * The GroupCheckout service: each command is one decider transaction on the group's stream.
 *
 * @example
 * ```ts
 * import { createMemoryStore } from "../../sources/memory.ts";
 * import { groupCheckoutService } from "./groupCheckout.ts";
 * const groups = groupCheckoutService(createMemoryStore());
 * await groups.select("g1", ["s1", "s2"], "2026-03-04T10:00:00Z");
 * (await groups.read("g1")).state.pending; // ["s1", "s2"]
 * ```
 */
export function groupCheckoutService(
  store: EventStore,
  options: GroupServiceOptions = {},
): GroupCheckoutService {
  const decider = createDecider<GroupCheckoutEvent, GroupCheckout>({
    store,
    codec: groupCheckoutCodec,
    initial: initialGroup,
    fold: foldGroup,
    cache: options.cache,
  });
  return {
    select: (groupId, stayIds, at) =>
      decider.transact(groupStream(groupId), selectStays(stayIds, at)),
    pay: (groupId, paymentId, amount, at) =>
      decider.transact(groupStream(groupId), payGroup(paymentId, amount, at)),
    confirm: (groupId, at) => decider.transact(groupStream(groupId), confirm(at)),
    async recordMerges(groupId, outcomes) {
      const { state, version } = await decider.transactEx(
        groupStream(groupId),
        recordMerges(outcomes),
      );
      return { state, version };
    },
    read: (groupId) =>
      decider.query(groupStream(groupId), (state, { version }) => ({ state, version })),
  };
}
