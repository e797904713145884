/**
 * GuestStay: one guest's stay. Charges and payments move its balance; it ends either with a
 * normal check-out (balance settled) or by being transferred to a group checkout, which takes
 * over the residual balance. Decisions are plain functions of the state, testable without a
 * store; {@linkcode guestStayService} runs them through a decider.
 *
 * Amounts are integer minor units (cents). Times are ISO strings supplied by the caller.
 *
 * @module
 */
import { createCodec } from "../../core/codec.ts";
import { createDecider, type StateCache, type TransactOptions } from "../../core/decider.ts";
import type { EventStore } from "../../core/store.ts";
import { streamName } from "../../core/streamName.ts";
import { fieldsOf, integer, text } from "./fields.ts";

/** The category of GuestStay streams. */
export const GUEST_STAY = "GuestStay";

/**
 * The stream of stay `stayId`.
 *
 * @example
 * ```ts
 * import { stayStream } from "./guestStay.ts";
 * stayStream("42"); // "GuestStay-42"
 * ```
 */
export const stayStream = (stayId: string): string => streamName(GUEST_STAY, stayId);

/** What happens to a stay. */
export type GuestStayEvent =
  | { type: "CheckedIn"; data: { at: string } }
  | { type: "Charged"; data: { chargeId: string; amount: number; at: string } }
  | { type: "Paid"; data: { paymentId: string; amount: number; at: string } }
  | { type: "CheckedOut"; data: { at: string } }
  | { type: "TransferredToGroup"; data: { groupId: string; residual: number; at: string } };

/** A decision's events together with what it reports to the caller. */
export interface Decided<R> {
  /** The events to append (none when nothing changes). */
  readonly events: readonly GuestStayEvent[];
  /** The outcome reported to the caller. */
  readonly result: R;
}

/**
 * Stored GuestStay events ↔ typed ones; every shape is checked on the way in.
 *
 * @example
 * ```ts
 * import { guestStayCodec } from "./guestStay.ts";
 * guestStayCodec.encode({ type: "CheckedOut", data: { at: "t" } }); // { type: "CheckedOut", data: { at: "t" } }
 * ```
 */
export const guestStayCodec = createCodec<GuestStayEvent>({
  CheckedIn: { parse: (d) => ({ at: text(fieldsOf(d), "at") }) },
  Charged: {
    parse: (d) => {
      const f = fieldsOf(d);
      return { chargeId: text(f, "chargeId"), amount: integer(f, "amount"), at: text(f, "at") };
    },
  },
  Paid: {
    parse: (d) => {
      const f = fieldsOf(d);
      return { paymentId: text(f, "paymentId"), amount: integer(f, "amount"), at: text(f, "at") };
    },
  },
  CheckedOut: { parse: (d) => ({ at: text(fieldsOf(d), "at") }) },
  TransferredToGroup: {
    parse: (d) => {
      const f = fieldsOf(d);
      return { groupId: text(f, "groupId"), residual: integer(f, "residual"), at: text(f, "at") };
    },
  },
});

/** Where a stay is in its life. */
export type StayStatus = "absent" | "open" | "checkedOut" | "transferred";

/** The folded state of a stay. */
export interface GuestStay {
  /** `absent` until checked in. */
  readonly status: StayStatus;
  /** Charges minus payments, in minor units. */
  readonly balance: number;
  /** Ids of charges and payments recorded, so that repeated commands change nothing. */
  readonly seen: readonly string[];
  /** The group that took the stay over, once transferred. */
  readonly groupId?: string;
}

/** The state of a stay with no events. */
export const initialStay: GuestStay = { status: "absent", balance: 0, seen: [] };

function evolve(s: GuestStay, e: GuestStayEvent): GuestStay {
  switch (e.type) {
    case "CheckedIn":
      return { ...s, status: "open" };
    case "Charged":
      return { ...s, balance: s.balance + e.data.amount, seen: [...s.seen, e.data.chargeId] };
    case "Paid":
      return { ...s, balance: s.balance - e.data.amount, seen: [...s.seen, e.data.paymentId] };
    case "CheckedOut":
      return { ...s, status: "checkedOut" };
    case "TransferredToGroup":
      return { ...s, status: "transferred", groupId: e.data.groupId };
  }
}

/**
 * Applies events to a stay's state.
 *
 * @example
 * ```ts
 * import { foldStay, initialStay } from "./guestStay.ts";
 * foldStay(initialStay, [{ type: "CheckedIn", data: { at: "t" } }]).status; // "open"
 * ```
 */
export const foldStay = (state: GuestStay, events: readonly GuestStayEvent[]): GuestStay =>
  events.reduce(evolve, state);

/** The outcome of a charge or payment. */
export type PostingResult = { readonly ok: true } | {
  readonly ok: false;
  readonly reason: "notOpen";
};

/** The outcome of a check-out. */
export type CheckOutResult =
  | { readonly ok: true }
  | { readonly ok: false; readonly reason: "notCheckedIn" }
  | { readonly ok: false; readonly reason: "balanceDue"; readonly balance: number }
  | { readonly ok: false; readonly reason: "transferred"; readonly groupId: string };

/** Why a stay cannot be transferred to a group. */
export type TransferFailure = "notCheckedIn" | "checkedOut" | "transferredElsewhere";

/** The outcome of a transfer to a group: the residual balance the group takes over, or why not. */
export type TransferResult =
  | { readonly ok: true; readonly residual: number }
  | { readonly ok: false; readonly reason: TransferFailure };

/**
 * Checks the guest in; checking in again changes nothing.
 *
 * @example
 * ```ts
 * import { checkIn, initialStay } from "./guestStay.ts";
 * checkIn("2026-03-01T15:00:00Z")(initialStay); // [{ type: "CheckedIn", ... }]
 * ```
 */
export function checkIn(at: string): (s: GuestStay) => GuestStayEvent[] {
  return (s) => s.status === "absent" ? [{ type: "CheckedIn", data: { at } }] : [];
}

/**
 * Adds a charge to an open stay (once per `chargeId`).
 *
 * @example
 * ```ts
 * import { charge, initialStay } from "./guestStay.ts";
 * charge("c1", 500, "t")(initialStay).result; // { ok: false, reason: "notOpen" }
 * ```
 */
export function charge(
  chargeId: string,
  amount: number,
  at: string,
): (s: GuestStay) => Decided<PostingResult> {
  return (s) => {
    if (s.seen.includes(chargeId)) return { events: [], result: { ok: true } };
    if (s.status !== "open") return { events: [], result: { ok: false, reason: "notOpen" } };
    return { events: [{ type: "Charged", data: { chargeId, amount, at } }], result: { ok: true } };
  };
}

/**
 * Records a payment on an open stay (once per `paymentId`).
 *
 * @example
 * ```ts
 * import { foldStay, initialStay, pay } from "./guestStay.ts";
 * const open = foldStay(initialStay, [{ type: "CheckedIn", data: { at: "t" } }]);
 * pay("p1", 500, "t")(open).events.length; // 1
 * ```
 */
export function pay(
  paymentId: string,
  amount: number,
  at: string,
): (s: GuestStay) => Decided<PostingResult> {
  return (s) => {
    if (s.seen.includes(paymentId)) return { events: [], result: { ok: true } };
    if (s.status !== "open") return { events: [], result: { ok: false, reason: "notOpen" } };
    return { events: [{ type: "Paid", data: { paymentId, amount, at } }], result: { ok: true } };
  };
}

/**
 * Checks the guest out once the balance is settled; checking out again changes nothing.
 *
 * @example
 * ```ts
 * import { checkOut, foldStay, initialStay } from "./guestStay.ts";
 * const open = foldStay(initialStay, [{ type: "CheckedIn", data: { at: "t" } }]);
 * checkOut("t")(open).result; // { ok: true }
 * ```
 */
export function checkOut(at: string): (s: GuestStay) => Decided<CheckOutResult> {
  return (s) => {
    switch (s.status) {
      case "absent":
        return { events: [], result: { ok: false, reason: "notCheckedIn" } };
      case "checkedOut":
        return { events: [], result: { ok: true } };
      case "transferred":
        return { events: [], result: { ok: false, reason: "transferred", groupId: s.groupId! } };
      case "open":
        if (s.balance !== 0) {
          return { events: [], result: { ok: false, reason: "balanceDue", balance: s.balance } };
        }
        return { events: [{ type: "CheckedOut", data: { at } }], result: { ok: true } };
    }
  };
}

/**
 * Hands an open stay and its residual balance over to group `groupId`. Repeating it for the same
 * group reports the same success without writing; a stay that is closed or taken by another
 * group fails with the reason.
 *
 * @example
 * ```ts
 * import { foldStay, initialStay, transferToGroup } from "./guestStay.ts";
 * const open = foldStay(initialStay, [
 *   { type: "CheckedIn", data: { at: "t" } },
 *   { type: "Charged", data: { chargeId: "c1", amount: 900, at: "t" } },
 * ]);
 * transferToGroup("g1", "t")(open).result; // { ok: true, residual: 900 }
 * ```
 */
export function transferToGroup(
  groupId: string,
  at: string,
): (s: GuestStay) => Decided<TransferResult> {
  return (s) => {
    switch (s.status) {
      case "absent":
        return { events: [], result: { ok: false, reason: "notCheckedIn" } };
      case "checkedOut":
        return { events: [], result: { ok: false, reason: "checkedOut" } };
      case "transferred":
        return s.groupId === groupId
          ? { events: [], result: { ok: true, residual: s.balance } }
          : { events: [], result: { ok: false, reason: "transferredElsewhere" } };
      case "open":
        return {
          events: [{ type: "TransferredToGroup", data: { groupId, residual: s.balance, at } }],
          result: { ok: true, residual: s.balance },
        };
    }
  };
}

/** Options of {@linkcode guestStayService}. */
export interface StayServiceOptions {
  /** Keep folded stays in memory between calls. */
  readonly cache?: StateCache;
}

/** Commands and queries on stays, over a store. */
export interface GuestStayService {
  /** Checks the guest in. */
  checkIn(stayId: string, at: string): Promise<void>;
  /** Adds a charge. */
  charge(stayId: string, chargeId: string, amount: number, at: string): Promise<PostingResult>;
  /** Records a payment. */
  pay(stayId: string, paymentId: string, amount: number, at: string): Promise<PostingResult>;
  /** Checks the guest out. */
  checkOut(stayId: string, at: string): Promise<CheckOutResult>;
  /**
   * Transfers the stay to a group checkout; `options` (e.g. a workflow send's
   * `deliveryOptions`) carry the caller's idempotency key and tracing ids to the stay's events.
   */
  transferToGroup(
    stayId: string,
    groupId: string,
    at: string,
    options?: TransactOptions,
  ): Promise<TransferResult>;
  /** The stay's current state. */
  read(stayId: string): Promise<GuestStay>;
}

/**
 * The GuestStay service: each command is one decider transaction on the stay's stream.
 *
 * @example
 * ```ts
 * import { createMemoryStore } from "../../sources/memory.ts";
 * import { guestStayService } from "./guestStay.ts";
 * const stays = guestStayService(createMemoryStore());
 * await stays.checkIn("s1", "2026-03-01T15:00:00Z");
 * await stays.charge("s1", "minibar-1", 1250, "2026-03-01T22:00:00Z");
 * (await stays.read("s1")).balance; // 1250
 * ```
 */
export function guestStayService(
  store: EventStore,
  options: StayServiceOptions = {},
): GuestStayService {
  const decider = createDecider<GuestStayEvent, GuestStay>({
    store,
    codec: guestStayCodec,
    initial: initialStay,
    fold: foldStay,
    cache: options.cache,
  });
  return {
    checkIn: (stayId, at) => decider.transact(stayStream(stayId), checkIn(at)),
    charge: (stayId, chargeId, amount, at) =>
      decider.transact(stayStream(stayId), charge(chargeId, amount, at)),
    pay: (stayId, paymentId, amount, at) =>
      decider.transact(stayStream(stayId), pay(paymentId, amount, at)),
    checkOut: (stayId, at) => decider.transact(stayStream(stayId), checkOut(at)),
    transferToGroup: (stayId, groupId, at, options) =>
      decider.transact(stayStream(stayId), transferToGroup(groupId, at), options),
    read: (stayId) => decider.query(stayStream(stayId), (s) => s),
  };
}
