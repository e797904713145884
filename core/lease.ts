/**
 * Leases: how identical members of a consumer group share named units of work (the hash slots of
 * a MessageDB category, the tranches of a feed) without being told their number or the group's
 * size, and how a unit moves between them without ever being worked on by two at once.
 *
 * - A **lease** is a time-bounded claim of one member on one unit, kept in a
 *   {@linkcode LeaseStore} under a scope (one consumer group of one source). Each acquisition
 *   raises the unit's `generation`; a member renews its leases with every heartbeat.
 * - **Members** announce themselves with the same heartbeat. Every member computes the same fair
 *   shares from the live members ({@linkcode fairShares}: each holds ⌊units/members⌋ or one
 *   more), takes free or expired units up to its share, and, when none are free, asks members
 *   over their share to hand units over (a request, since a unit cannot be taken from a live
 *   owner without breaking the rule below). An owner over its share hands requested units over:
 *   it stops the work, waits for it to end, and releases the lease. A clean stop leaves the scope
 *   first (the others' shares leave the member out) and releases each lease as its work ends. A
 *   unit whose lease lapsed half a heartbeat ago and that nobody took since is
 *   *stranded*: the members whose shares it belongs to are dead too (a member that dies counts as
 *   live until its own heartbeat lapses) or too slow, and any member takes it beyond its share,
 *   so that a dead member's units are taken within `durationMs + heartbeatMs` of its death
 *   however many die one after another (the other half heartbeat is for the store's round
 *   trips). {@linkcode planLeases} is this assignment, as a pure function.
 * - **Fencing.** A new owner starts only after the lease expired or was released. The old owner
 *   must therefore have stopped before expiry, without being told: a member that has not renewed a
 *   lease for `durationMs − handoverMs` stops handing out work on it ({@linkcode LeaseMember.holds}
 *   turns false) and revokes it, which leaves `handoverMs` for the work in flight to end before
 *   anyone else can take the lease. Times are measured from when the renewal was *sent*, on the
 *   member's monotonic clock, so a slow reply only shortens the lease; expiry is decided on the
 *   store's clock, so members' clocks need not agree. Checkpoint commits carry the lease
 *   ({@linkcode CheckpointFence}) and a fencing store refuses them once it is not the current,
 *   unexpired lease — a paused process that wakes up late cannot move a checkpoint.
 *
 * The timing rule: `heartbeatMs ≤ (durationMs − handoverMs) / 3` (a member survives one failed
 * or hung renewal: it tries again soon after one fails, and a hung one is given up on after
 * `(durationMs − handoverMs) / 2`), and `handoverMs` must cover what a revocation waits for —
 * with the streams sink, its `stopTimeoutMs` for calls in flight plus the final commit, so
 * `handoverMs ≥ 2 × stopTimeoutMs`
 * (given `stopTimeoutMs`, {@linkcode checkLeaseTiming} refuses less with a
 * {@linkcode LeaseTimingError}). Every store call is bounded by `(durationMs − handoverMs) / 2`,
 * the time a member can afford to lose on one renewal, and acquisitions run beside the heartbeat
 * loop: a slow store call never holds up the renewals, nor the deadline of a lease just taken.
 * A revocation that ends after the lease's expiry is counted and logged as an error
 * (`lateRevocations`): the fence may have been crossed, though the checkpoint fence still holds.
 * A revocation that reports handler calls abandoned still running (a handler that ignores its
 * signal) goes on renewing the lease until they have ended, and only then releases it, so that
 * nobody starts on the unit while they still run; a problem says so meanwhile. Only a member
 * that stops (its heartbeats end) leaves such a lease to expire instead. Expiry is decided on
 * the store's clock: a step of it by `S` moves the lapse of every lease renewed before the step by
 * `S` in real time. Backwards, takeovers come `S` later. Forwards, nothing happens while renewals
 * are on time and `S < durationMs − heartbeatMs`; while they fail, a step of up to `handoverMs`
 * less the revocation's time is absorbed; beyond, a unit can move while its owner still works on
 * it (its commits are refused: the fence is checked on the same clock).
 *
 * Members advertise a fingerprint of their units ({@linkcode unitsFingerprint}) with each
 * heartbeat. Members configured with other units do not count toward fair shares (so no unit is
 * left unowned for their sake), and every member that sees one reports a failing problem naming
 * it. A member that holds nothing while units stay unowned for `durationMs` says so too.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { SourceProblem } from "./batch.ts";
import type { CheckpointFence, CheckpointStore } from "./checkpoints.ts";
import { checkInteger, describe, InvalidArgumentError } from "./errors.ts";
import { errorText } from "./failure.ts";
import { withTimeout } from "./timeout.ts";
import { sleep } from "./tranches.ts";

const log = getLogger(["impel", "leases"]);

/**
 * One unit's lease as a {@linkcode LeaseStore} holds it. Times are the store's clock, in ms since
 * the epoch.
 *
 * @example
 * ```ts
 * import type { Lease } from "@impel/impel";
 * const lease: Lease = { unit: "Order-3/12", owner: "a", generation: 4n, expiresAt: Date.now() + 10_000 };
 * console.log(lease.owner, lease.generation); // "a" 4n
 * ```
 *
 * @category Leases
 */
export interface Lease {
  /** The unit of work. */
  readonly unit: string;
  /** The member holding it; absent when it was released (or never taken). */
  readonly owner?: string;
  /** Raised by every acquisition: which period of ownership this is. */
  readonly generation: bigint;
  /** When it lapses unless renewed; a released lease has lapsed. */
  readonly expiresAt: number;
  /** When the current owner acquired it. */
  readonly acquiredAt?: number;
  /** When the current owner last renewed it. */
  readonly renewedAt?: number;
  /** A member under its share that asked the owner to hand it over. */
  readonly requestedBy?: string;
}

/**
 * A member's heartbeat as a {@linkcode LeaseStore} holds it (store clock, ms since the epoch).
 *
 * @example
 * ```ts
 * import type { LeaseMemberBeat } from "@impel/impel";
 * const now = Date.now();
 * const beat: LeaseMemberBeat = { member: "a", expiresAt: now + 10_000, renewedAt: now };
 * console.log(beat.expiresAt > now); // true: live
 * ```
 *
 * @category Leases
 */
export interface LeaseMemberBeat {
  /** The member's id. */
  readonly member: string;
  /** Until when it counts as live. */
  readonly expiresAt: number;
  /** Its last heartbeat. */
  readonly renewedAt: number;
  /** When it first joined (since its last clean leave). */
  readonly joinedAt?: number;
  /** The fingerprint of the units it works on ({@linkcode unitsFingerprint}), if it says. */
  readonly units?: string;
}

/**
 * Everything a scope's members need to plan: its leases and live members, and the store's time.
 *
 * @example
 * ```ts
 * import type { LeaseView } from "@impel/impel";
 * const view: LeaseView = { now: Date.now(), leases: [], members: [] };
 * ```
 *
 * @category Leases
 */
export interface LeaseView {
  /** The store's clock when the view was read, ms since the epoch. */
  readonly now: number;
  /** Every lease row of the scope (units never acquired may be missing). */
  readonly leases: readonly Lease[];
  /** Every member row of the scope, live or not. */
  readonly members: readonly LeaseMemberBeat[];
}

/**
 * A lease a member holds: the unit and the generation it acquired.
 *
 * @example
 * ```ts
 * import type { HeldLease } from "@impel/impel";
 * const held: HeldLease = { unit: "Order-3/12", generation: 4n };
 * ```
 *
 * @category Leases
 */
export interface HeldLease {
  /** The unit. */
  readonly unit: string;
  /** The generation acquired. */
  readonly generation: bigint;
}

/**
 * What a heartbeat returns: the held leases it renewed and the scope's view.
 *
 * @example
 * ```ts
 * import type { HeartbeatResult } from "@impel/impel";
 * const result: HeartbeatResult = { renewed: ["Order-3/12"], view: { now: 0, leases: [], members: [] } };
 * ```
 *
 * @category Leases
 */
export interface HeartbeatResult {
  /** The units renewed: held by this member with this generation and not expired. */
  readonly renewed: readonly string[];
  /** The scope after the heartbeat (or just before it: own renewals may show the old expiry). */
  readonly view: LeaseView;
}

/**
 * One scope's view, as {@linkcode LeaseStore.list} returns it.
 *
 * @example
 * ```ts
 * import type { ScopedLeaseView } from "@impel/impel";
 * const scoped: ScopedLeaseView = { scope: "messagedb/reactor", now: 0, leases: [], members: [] };
 * ```
 *
 * @category Leases
 */
export interface ScopedLeaseView extends LeaseView {
  /** The scope. */
  readonly scope: string;
}

/**
 * Where leases are kept: every operation is conditional, so that the store alone decides who
 * holds a lease, on its own clock. Implementations: `leases/memory.ts`, `leases/postgres.ts`.
 *
 * @example
 * ```ts
 * import { memoryLeases } from "@impel/impel/leases/memory";
 * const store = memoryLeases();
 * const lease = await store.acquire("g", "unit-0", "a", 10_000);
 * console.log(lease?.owner, lease?.generation); // "a" 1n
 * console.log(await store.acquire("g", "unit-0", "b", 10_000)); // undefined: a holds it
 * ```
 *
 * @category Leases
 */
export interface LeaseStore {
  /**
   * Records `member` as live for `durationMs` (with the fingerprint of its `units`, when given)
   * and renews, for as long again, each lease of `held` that is still this member's with that
   * generation and not expired; returns the units renewed and the scope's view.
   */
  heartbeat(
    scope: string,
    member: string,
    durationMs: number,
    held: readonly HeldLease[],
    units?: string,
  ): Promise<HeartbeatResult>;
  /**
   * Takes `unit` for `member` for `durationMs` if it is free or expired (creating it if it was
   * never taken), raising its generation; `undefined` when another member holds it.
   */
  acquire(
    scope: string,
    unit: string,
    member: string,
    durationMs: number,
  ): Promise<Lease | undefined>;
  /** Asks the owner of `unit` (held by another member) to hand it over to `member`. */
  request(scope: string, unit: string, member: string): Promise<void>;
  /** Frees `held` if `member` still holds it with that generation. */
  release(scope: string, held: HeldLease, member: string): Promise<void>;
  /**
   * Removes `member`'s heartbeat (a clean stop: first, so that the others' shares leave it out
   * and they take each lease as soon as it is released).
   */
  leave(scope: string, member: string): Promise<void>;
  /** Every scope's view, or one scope's. */
  list(scope?: string): Promise<readonly ScopedLeaseView[]>;
  /**
   * Where the leases are kept (`postgresql "impel"."leases"`, a memory store's own name), as a
   * fenced checkpoint store names the leases it checks fences against
   * ({@linkcode CheckpointStore.fenceLocation}): a source given both refuses a pair that name
   * different ones ({@linkcode checkLeaseFence}). Optional: a store that cannot say is not checked.
   */
  readonly location?: string;
}

/**
 * The fair share of each member: `units` split as evenly as possible, the members sorted by id
 * and the first `units % members` of them taking one more. Every member computes the same shares
 * from the same members.
 *
 * @example
 * ```ts
 * import { fairShares } from "@impel/impel";
 * console.log(fairShares(["c", "a", "b"], 8)); // Map { "a" => 3, "b" => 3, "c" => 2 }
 * ```
 *
 * @category Leases
 */
export function fairShares(members: Iterable<string>, units: number): Map<string, number> {
  const sorted = [...new Set(members)].sort();
  const shares = new Map<string, number>();
  if (sorted.length === 0) return shares;
  const base = Math.floor(units / sorted.length), extra = units % sorted.length;
  sorted.forEach((m, i) => shares.set(m, base + (i < extra ? 1 : 0)));
  return shares;
}

/**
 * What {@linkcode planLeases} plans from.
 *
 * @example
 * ```ts
 * import type { LeasePlanInput } from "@impel/impel";
 * const input: LeasePlanInput = {
 *   view: { now: Date.now(), leases: [], members: [] },
 *   member: "a",
 *   units: ["u0", "u1"],
 *   held: [],
 * };
 * ```
 *
 * @category Leases
 */
export interface LeasePlanInput {
  /** The scope's view. */
  readonly view: LeaseView;
  /** The member planning. */
  readonly member: string;
  /** Every unit of the scope. */
  readonly units: readonly string[];
  /** The units this member holds and works on (not those it is letting go). */
  readonly held: Iterable<string>;
  /**
   * The fingerprint of `units` ({@linkcode unitsFingerprint}); when given, live members that
   * advertise another one are left out of the shares (see {@linkcode LeasePlan.mismatched}).
   */
  readonly fingerprint?: string;
  /**
   * The heartbeat interval, ms. When given, a unit whose lease lapsed (its owner stopped
   * renewing it) at least half this long ago, and that no member has taken since, is acquired
   * beyond the share (see {@linkcode LeasePlan.stranded}).
   */
  readonly heartbeatMs?: number;
}

/**
 * One member's next steps.
 *
 * @example
 * ```ts
 * import { planLeases } from "@impel/impel";
 * const plan = planLeases({
 *   view: { now: 0, leases: [], members: [] },
 *   member: "a",
 *   units: ["u0", "u1"],
 *   held: [],
 * });
 * console.log(plan.acquire.length, plan.share); // 2 2: alone, it takes everything
 * ```
 *
 * @category Leases
 */
export interface LeasePlan {
  /** Free or expired units to take: up to the share, and every stranded unit. */
  readonly acquire: readonly string[];
  /** Further free units, in order, to take instead of those of `acquire` another member got first. */
  readonly alternatives: readonly string[];
  /** Units of members over their share to ask for. */
  readonly request: readonly string[];
  /** Held units that others asked for, to stop working on and release. */
  readonly handOver: readonly string[];
  /** This member's fair share. */
  readonly share: number;
  /** The live members, this one included. */
  readonly members: readonly string[];
  /** Held leases on units that are not among `units`: members disagree on the units. */
  readonly foreign: readonly string[];
  /**
   * Live members that advertise other units than this one's: not counted in the shares (they
   * do not work on these units), so that no unit is left unowned for their sake.
   */
  readonly mismatched: readonly LeaseMemberBeat[];
  /**
   * Units of `acquire` taken beyond the share: their leases lapsed at least half of
   * {@linkcode LeasePlanInput.heartbeatMs} ago and nobody took them (the members whose shares
   * they are wake up as a lease lapses, and take them at once if they can). The members whose shares
   * they were are dead (a member that died after the unit's owner still counts as live until its
   * own heartbeat lapses) or too slow to take them; waiting for the shares to be right would
   * leave them unowned for up to another lease duration. The fair shares are restored later by
   * requests.
   */
  readonly stranded: readonly string[];
  /**
   * When, on the store's clock, the plan may next change: the first lease or heartbeat of another
   * member to lapse (or a lease of this member's id it does not hold: a previous run's, or one
   * it lets go of), or a lapsed unit to become stranded (a few ms past either, so that the
   * store's clock has passed it too); `Infinity` when nothing is due. A member plans again then
   * rather than at its next heartbeat, so that a dead member's units are taken as they lapse.
   */
  readonly wakeAt: number;
}

/**
 * Plans one member's next steps (see the module documentation). Live members are those whose
 * heartbeat has not expired, plus the member planning. Acquisitions never exceed the share,
 * except for stranded units (given `heartbeatMs`: lapsed half a heartbeat ago and still free, which
 * anyone takes); requests go to members over their share; requested units are handed over only while this
 * member is over its own share, so differing views cannot make units go round in circles. While
 * another member holds a unit that is not among `units` (members configured differently), the
 * plan acquires and requests nothing. Given `fingerprint`, live members advertising other units
 * are left out of the shares. Input not of the documented shape (a `heartbeatMs` that is not a
 * positive integer, a view without its arrays, units that are not distinct names) throws
 * {@linkcode InvalidArgumentError} naming the field.
 *
 * @example
 * ```ts
 * import { planLeases } from "@impel/impel";
 * const now = Date.now();
 * const live = (member: string) => ({ member, expiresAt: now + 5_000, renewedAt: now });
 * const plan = planLeases({
 *   view: {
 *     now,
 *     members: [live("a"), live("b")],
 *     leases: ["u0", "u1", "u2", "u3"].map((unit) => ({
 *       unit, owner: "a", generation: 1n, expiresAt: now + 5_000,
 *     })),
 *   },
 *   member: "b",
 *   units: ["u0", "u1", "u2", "u3"],
 *   held: [],
 * });
 * console.log(plan.share, plan.request.length); // 2 2: b asks a for two units
 * ```
 *
 * @category Leases
 */
export function planLeases(input: LeasePlanInput): LeasePlan {
  checkPlanInput(input);
  const { view, member, units } = input;
  const now = view.now;
  const live = new Set<string>([member]);
  const mismatched: LeaseMemberBeat[] = [];
  for (const m of view.members) {
    if (m.expiresAt <= now || m.member === member) continue;
    if (input.fingerprint !== undefined && m.units !== undefined && m.units !== input.fingerprint) {
      mismatched.push(m);
    } else live.add(m.member);
  }
  const shares = fairShares(live, units.length);
  const share = shares.get(member)!;
  const held = new Set(input.held);
  const wanted = new Set(units);
  const byUnit = new Map<string, Lease>();
  const foreign: string[] = [];
  for (const l of view.leases) {
    byUnit.set(l.unit, l);
    const active = l.owner !== undefined && l.expiresAt > now;
    if (active && !wanted.has(l.unit) && l.owner !== member) foreign.push(l.unit);
  }
  const members = [...live].sort();

  // Held units of other live owners, and requests already made of them.
  const owned = new Map<string, string[]>();
  const free: string[] = [];
  // Half a heartbeat: the members whose share a lapsed unit is wake for the lapse and take it
  // within the store's round trips; the other half keeps the bound of durationMs + heartbeatMs
  // from the death of its owner.
  const grace = input.heartbeatMs === undefined ? undefined : input.heartbeatMs / 2;
  const stranding = new Set<string>();
  let wakeAt = Infinity;
  for (const unit of units) {
    if (held.has(unit)) continue;
    const l = byUnit.get(unit);
    if (l === undefined || l.owner === undefined || l.expiresAt <= now) {
      free.push(unit);
      // Lapsed rather than released (the owner is still on the row): its owner died or lost
      // it. Released units are being handed to the member that asked for them: not stranded.
      if (grace !== undefined && l?.owner !== undefined) {
        if (now - l.expiresAt >= grace) stranding.add(unit);
        else wakeAt = Math.min(wakeAt, l.expiresAt + grace);
      }
    } else if (l.owner !== member && live.has(l.owner)) {
      const list = owned.get(l.owner);
      if (list) list.push(unit);
      else owned.set(l.owner, [unit]);
    }
    // Else: this member's own lease that it no longer works on (letting go, or a previous run
    // under the same id), or a dead member's that has not expired yet: wait for it.
  }

  for (const l of view.leases) {
    // Its own leases it does not hold count too: a run restarted under the same id must take
    // its previous run's units as they lapse (they are in its share), not at its next
    // heartbeat, by when the others would see them stranded and take them. Taken before they
    // lapse, they could still be worked on by that run if it is not dead but cut off.
    if (
      l.owner !== undefined && l.expiresAt > now && (l.owner !== member || !held.has(l.unit))
    ) {
      wakeAt = Math.min(wakeAt, l.expiresAt);
    }
  }
  for (const m of view.members) {
    if (m.member !== member && m.expiresAt > now) wakeAt = Math.min(wakeAt, m.expiresAt);
  }
  // A few ms past it, so that the store's clock has passed it too.
  wakeAt += WAKE_MARGIN_MS;

  const handOver: string[] = [];
  let surplus = held.size - share;
  for (const unit of held) {
    if (surplus <= 0) break;
    const by = byUnit.get(unit)?.requestedBy;
    if (by !== undefined && by !== member && live.has(by)) {
      handOver.push(unit);
      surplus--;
    }
  }
  if (foreign.length > 0) {
    return {
      acquire: [],
      alternatives: [],
      request: [],
      handOver,
      share,
      members,
      foreign,
      mismatched,
      stranded: [],
      wakeAt,
    };
  }

  let deficit = share - held.size;
  // Each member tries the free units in its own order, so that members starting together
  // rarely race for the same unit.
  free.sort((a, b) => spread(member, a) - spread(member, b) || (a < b ? -1 : 1));
  const acquire = deficit > 0 ? free.slice(0, deficit) : [];
  const rest = free.slice(acquire.length);
  const alternatives = deficit > 0 ? rest.filter((unit) => !stranding.has(unit)) : [];
  deficit -= acquire.length;
  const stranded = rest.filter((unit) => stranding.has(unit));
  acquire.push(...stranded);

  const request: string[] = [];
  if (deficit > 0) {
    const owners = [...owned.entries()]
      .map(([owner, list]) => {
        // What the owner can give: its surplus, less what live others have asked of it already.
        let spare = list.length - (shares.get(owner) ?? 0);
        const open: string[] = [];
        for (const unit of list) {
          const by = byUnit.get(unit)!.requestedBy;
          if (by === member) {
            // Asked before, when this owner was over its share: only then will it hand the unit
            // over. Counted as coming otherwise, a stale request would keep this member from
            // asking the owner that is over its share now.
            if (spare > 0) deficit--, spare--;
          } else if (by !== undefined && live.has(by)) spare--;
          else open.push(unit);
        }
        return { owner, spare, open };
      })
      .sort((a, b) => b.spare - a.spare || (a.owner < b.owner ? -1 : 1));
    for (const { spare, open } of owners) {
      for (let i = 0; i < open.length && i < spare && deficit > 0; i++) {
        request.push(open[i]);
        deficit--;
      }
    }
  }
  return {
    acquire,
    alternatives,
    request,
    handOver,
    share,
    members,
    foreign,
    mismatched,
    stranded,
    wakeAt,
  };
}

/** The boundary checks of {@linkcode planLeases}: linear in the view, as the plan itself. */
function checkPlanInput(input: LeasePlanInput): void {
  if (input === null || typeof input !== "object") {
    throw new InvalidArgumentError("input", `must be an object, got ${describe(input)}`);
  }
  const { view } = input;
  if (view === null || typeof view !== "object") {
    throw new InvalidArgumentError("view", `must be a LeaseView, got ${describe(view)}`);
  }
  if (typeof view.now !== "number" || !Number.isFinite(view.now)) {
    throw new InvalidArgumentError(
      "view.now",
      `must be a finite number, got ${describe(view.now)}`,
    );
  }
  for (const field of ["leases", "members"] as const) {
    if (!Array.isArray(view[field])) {
      throw new InvalidArgumentError(
        `view.${field}`,
        `must be an array, got ${describe(view[field])}`,
      );
    }
  }
  // Rows of the store: their types only (not the length limit of configured names), so that a
  // row another tool wrote cannot stop a member's loop.
  view.leases.forEach((l, i) => {
    checkString(`view.leases[${i}].unit`, l?.unit);
    if (l.owner !== undefined) checkString(`view.leases[${i}].owner`, l.owner);
    checkTime(`view.leases[${i}].expiresAt`, l.expiresAt);
  });
  view.members.forEach((m, i) => {
    checkString(`view.members[${i}].member`, m?.member);
    checkTime(`view.members[${i}].expiresAt`, m.expiresAt);
  });
  checkName("member", input.member);
  if (!Array.isArray(input.units)) {
    throw new InvalidArgumentError(
      "units",
      `must be an array of unit names, got ${describe(input.units)}`,
    );
  }
  for (const unit of input.units) checkName("units", unit);
  if (new Set(input.units).size !== input.units.length) {
    throw new InvalidArgumentError("units", "must not repeat a unit");
  }
  const held = input.held as unknown;
  if (
    held === null || typeof held !== "object" ||
    typeof (held as Iterable<unknown>)[Symbol.iterator] !== "function"
  ) {
    throw new InvalidArgumentError(
      "held",
      `must be an iterable of unit names, got ${describe(held)}`,
    );
  }
  if (input.fingerprint !== undefined) checkName("fingerprint", input.fingerprint);
  if (input.heartbeatMs !== undefined) {
    checkInteger("heartbeatMs", input.heartbeatMs, 1, MAX_TIMER_MS);
  }
}

function checkString(field: string, value: unknown): void {
  if (typeof value !== "string") {
    throw new InvalidArgumentError(field, `must be a string, got ${describe(value)}`);
  }
}

/** A store time: a number (a lapsed lease may be far in the past, never NaN). */
function checkTime(field: string, value: unknown): void {
  if (typeof value !== "number" || Number.isNaN(value)) {
    throw new InvalidArgumentError(field, `must be a number (ms), got ${describe(value)}`);
  }
}

/**
 * A short fingerprint of a set of units, `<count>:<hash>`, that members advertise with their
 * heartbeats so that members configured with other units (another `slots`, other categories) are
 * noticed. The order of the units does not matter.
 *
 * @example
 * ```ts
 * import { unitsFingerprint } from "@impel/impel";
 * console.log(unitsFingerprint(["u1", "u0"]) === unitsFingerprint(["u0", "u1"])); // true
 * console.log(unitsFingerprint(["u0", "u1"]).startsWith("2:")); // true
 * ```
 *
 * @category Leases
 */
export function unitsFingerprint(units: readonly string[]): string {
  let h = 2166136261;
  for (const unit of [...new Set(units)].sort()) {
    for (let i = 0; i < unit.length; i++) h = Math.imul(h ^ unit.charCodeAt(i), 16777619);
    h = Math.imul(h ^ 0, 16777619);
  }
  return `${new Set(units).size}:${(h >>> 0).toString(16).padStart(8, "0")}`;
}

/** A cheap, stable hash of (member, unit) for the order in which a member tries free units. */
function spread(member: string, unit: string): number {
  let h = 2166136261;
  const s = member + "\u0000" + unit;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619);
  return h >>> 0;
}

/**
 * Options of {@linkcode createLeaseMember}.
 *
 * @example
 * ```ts
 * import type { LeaseMemberOptions } from "@impel/impel";
 * import { memoryLeases } from "@impel/impel/leases/memory";
 * const options: LeaseMemberOptions = {
 *   store: memoryLeases(),
 *   scope: "messagedb/reactor",
 *   units: ["Order-0/2", "Order-1/2"],
 *   durationMs: 10_000,
 *   heartbeatMs: 2_000,
 *   handoverMs: 5_000,
 *   onAcquired: (lease) => console.log("start", lease.unit),
 *   onRevoked: async (lease, reason) => console.log("stop", lease.unit, reason),
 * };
 * ```
 *
 * @category Leases
 */
export interface LeaseMemberOptions {
  /** Where leases are kept. */
  readonly store: LeaseStore;
  /** The scope: one consumer group of one source. */
  readonly scope: string;
  /** Every unit of the scope; every member of a scope must name the same units. */
  readonly units: readonly string[];
  /** This member's id (default: a random UUID, new for every start). */
  readonly member?: string;
  /** How long a lease lasts unless renewed (default 10 000 ms). */
  readonly durationMs?: number;
  /**
   * How often leases are renewed and the assignment re-planned (default `durationMs / 5`, and at
   * most `(durationMs − handoverMs) / 3`, the longest allowed). A failed heartbeat is retried
   * after a quarter of it.
   */
  readonly heartbeatMs?: number;
  /**
   * How long before a lease's expiry its work must have stopped if renewals fail (default
   * `durationMs / 2`, and at least `2 × stopTimeoutMs`): the time a revocation may take. See the
   * module documentation.
   */
  readonly handoverMs?: number;
  /**
   * The longest a revocation waits for work in flight (a streams sink's `stopTimeoutMs`); when
   * given, `handoverMs` must be at least twice it (the wait, then the final commit), and the
   * defaults grow to satisfy that.
   */
  readonly stopTimeoutMs?: number;
  /** Starts the work of a lease just acquired. */
  readonly onAcquired: (lease: HeldLease) => void;
  /**
   * Stops the work of a lease: resolves once nothing of it runs any more and nothing more will
   * be committed under it, or once it gave up waiting — then with how many calls it abandoned
   * still running and, if it can tell, a promise of their end ({@linkcode RevokedWork}): the
   * lease is renewed until then, and released after (without the promise, it is left to expire
   * rather than released). Called once per acquisition.
   */
  readonly onRevoked: (lease: HeldLease, reason: string) => Promise<RevokedWork | void>;
  /** The member's monotonic clock in ms (default `performance.now`); for tests. */
  readonly now?: () => number;
}

/**
 * What {@linkcode LeaseMemberOptions.onRevoked} may report: calls it stopped waiting for.
 *
 * @example
 * ```ts
 * import type { RevokedWork } from "@impel/impel";
 * const outcome: RevokedWork = { abandoned: 2 }; // two calls still run: keep the lease to expiry
 * ```
 *
 * @category Leases
 */
export interface RevokedWork {
  /** Handler calls still running when the revocation stopped waiting for them. */
  readonly abandoned: number;
  /**
   * Resolves once the abandoned calls have ended. Given, the member keeps renewing the lease
   * until then and releases it after; without it, a lease whose calls were abandoned is left to
   * expire instead of released.
   */
  readonly settled?: Promise<void>;
}

/**
 * A held lease in a {@linkcode LeaseSnapshot}.
 *
 * @example
 * ```ts
 * import type { HeldLeaseStatus } from "@impel/impel";
 * const status: HeldLeaseStatus = {
 *   unit: "Order-3/12", generation: 4n, state: "working", ageMs: 60_000, renewedAgoMs: 800, validForMs: 9_200,
 * };
 * ```
 *
 * @category Leases
 */
export interface HeldLeaseStatus extends HeldLease {
  /** `"working"`, or `"letting go"` while its work is being revoked. */
  readonly state: "working" | "letting go";
  /** Since it was acquired, ms. */
  readonly ageMs: number;
  /** Since its last renewal was sent (or its acquisition), ms. */
  readonly renewedAgoMs: number;
  /** Until it expires at the latest, as far as this member knows, ms (negative: expired). */
  readonly validForMs: number;
}

/**
 * A plain view of one member for metrics, health and status pages: who holds what, how old the
 * leases are, and how often they moved.
 *
 * @example
 * ```ts
 * import { createLeaseMember } from "@impel/impel";
 * import { memoryLeases } from "@impel/impel/leases/memory";
 * const member = createLeaseMember({
 *   store: memoryLeases(), scope: "g", units: ["u0"],
 *   onAcquired: () => {}, onRevoked: async () => {},
 * });
 * await member.tick();
 * const snapshot = member.snapshot();
 * console.log(snapshot.held.map((h) => h.unit), snapshot.acquired); // ["u0"] 1
 * await member.stop();
 * ```
 *
 * @category Leases
 */
export interface LeaseSnapshot {
  /** This member's id. */
  readonly member: string;
  /** The scope. */
  readonly scope: string;
  /** How long a lease lasts unless renewed, ms. */
  readonly durationMs: number;
  /** How often leases are renewed, ms. */
  readonly heartbeatMs: number;
  /** How long before expiry work stops when renewals fail, ms. */
  readonly handoverMs: number;
  /** The leases held, by unit. */
  readonly held: readonly HeldLeaseStatus[];
  /** The live members at the last heartbeat, this one included. */
  readonly members: readonly string[];
  /** This member's fair share of the units. */
  readonly share: number;
  /** Every unit's owner at the last heartbeat (absent: free or expired). */
  readonly owners: Readonly<Record<string, string | undefined>>;
  /** Units without an owner at the last heartbeat. */
  readonly unowned: number;
  /** Live members advertising other units than this one's (see {@linkcode unitsFingerprint}). */
  readonly mismatched: readonly string[];
  /** Since the last successful heartbeat, ms (undefined before the first). */
  readonly heartbeatAgoMs: number | undefined;
  /** Heartbeats failed in a row. */
  readonly heartbeatFailures: number;
  /** Heartbeats failed in all. */
  readonly failedHeartbeats: number;
  /** Acquisitions failed in a row (the store answered with an error or not in time). */
  readonly acquireFailures: number;
  /** Acquisitions failed in all. */
  readonly failedAcquisitions: number;
  /** Leases acquired. */
  readonly acquired: number;
  /** Leases handed over to members that asked for them. */
  readonly handedOver: number;
  /** Leases lost: not renewed in time, or taken after they lapsed. */
  readonly lost: number;
  /** Leases released on stop. */
  readonly released: number;
  /** Requests made to members over their share. */
  readonly requested: number;
  /** Revocations that ended after the lease's expiry (should stay 0; see the module). */
  readonly lateRevocations: number;
  /**
   * Leases kept after their revocation because calls were abandoned still running: renewed
   * until the calls ended (or left to expire, without a way to tell or on stop).
   */
  readonly kept: number;
}

/**
 * One member of a consumer group working on leased units: its heartbeat loop, its leases and
 * their deadlines.
 *
 * @example
 * ```ts
 * import { createLeaseMember } from "@impel/impel";
 * import { memoryLeases } from "@impel/impel/leases/memory";
 * const member = createLeaseMember({
 *   store: memoryLeases(),
 *   scope: "g",
 *   units: ["u0", "u1"],
 *   onAcquired: (lease) => console.log("working on", lease.unit),
 *   onRevoked: async (lease) => console.log("stopped", lease.unit),
 * });
 * const running = member.start(); // heartbeats until stop()
 * await member.stop(); // revokes and releases every lease, then leaves
 * await running;
 * ```
 *
 * @category Leases
 */
export interface LeaseMember {
  /** This member's id. */
  readonly member: string;
  /** Runs heartbeats every `heartbeatMs` until {@linkcode LeaseMember.stop}; resolves after it. */
  start(): Promise<void>;
  /** One heartbeat: renew, plan, act. Needs no `start` (tests drive it by hand). */
  tick(): Promise<void>;
  /** Revokes the leases whose deadline has passed (the loop does this on a timer). */
  sweep(): void;
  /**
   * Whether work may start on `unit` now: held, not being let go, and renewed recently enough
   * that `handoverMs` remain before expiry. Synchronous, for a sink to ask before each call.
   */
  holds(unit: string): boolean;
  /** The fence for commits under `unit`'s lease, while it is held. */
  fence(unit: string): CheckpointFence | undefined;
  /**
   * Leaves the scope, revokes every lease and releases each once its work has ended (after the
   * leave, so that the others take it at once, whatever the others' revocations take); ends the
   * loop. Idempotent.
   */
  stop(): Promise<void>;
  /** A plain view for metrics and health. */
  snapshot(): LeaseSnapshot;
  /**
   * What is wrong: failing heartbeats or acquisitions, lost leases, members with other units,
   * and holding nothing while units are unowned.
   */
  problems(): readonly SourceProblem[];
}

interface Held {
  readonly unit: string;
  readonly generation: bigint;
  readonly acquiredAt: number;
  renewedAt: number;
  /** The latest the store can expire it, on this member's clock. */
  validUntil: number;
  letting: Promise<void> | undefined;
  /** Calls abandoned by its revocation that still run: the lease is renewed until they end. */
  running?: number;
  /** Since when they run past the revocation (ms since the epoch). */
  runningSince?: number;
}

/** A lease was lost (not renewed in time) within this long: it shows in problems. */
const LOST_PROBLEM_MS = 60_000;
/** How far past a lapse a member plans again, so that the store's clock has passed it too. */
const WAKE_MARGIN_MS = 5;
/** Heartbeats failed this many times in a row are retried soon; after that, every heartbeatMs. */
const RETRIES_SOON = 3;
/** Acquisitions failed this many times in a row: failing, not just degraded. */
const ACQUIRE_FAILING_AFTER = 3;
/** The longest timer delay (setTimeout fires at once beyond it). */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Creates a member of `options.scope` (see the module documentation for the assignment and the
 * fencing rule). Nothing happens until {@linkcode LeaseMember.start} (or `tick`).
 *
 * @example
 * ```ts
 * import { createLeaseMember } from "@impel/impel";
 * import { memoryLeases } from "@impel/impel/leases/memory";
 * const store = memoryLeases();
 * const units = ["u0", "u1", "u2", "u3"];
 * const make = (member: string) =>
 *   createLeaseMember({ store, scope: "g", units, member, onAcquired() {}, async onRevoked() {} });
 * const a = make("a"), b = make("b");
 * await a.tick(); // a takes all four
 * await b.tick(); // b asks a for two
 * await a.tick(); // a hands them over
 * await b.tick(); // b takes them
 * console.log(a.snapshot().held.length, b.snapshot().held.length); // 2 2
 * await Promise.all([a.stop(), b.stop()]);
 * ```
 *
 * @category Leases
 */
export function createLeaseMember(options: LeaseMemberOptions): LeaseMember {
  const s = checkLeaseMemberOptions(options);
  const { store, scope, units, onAcquired, onRevoked } = options;
  const now = options.now ?? (() => performance.now());
  const member = s.member;
  const fingerprint = unitsFingerprint(units);
  const held = new Map<string, Held>();
  const stopper = new AbortController();
  let view: LeaseView | undefined;
  let plan: LeasePlan | undefined;
  let beatAt: number | undefined;
  /** When the last view arrived, on this member's clock: no earlier than the store read it. */
  let viewAt = 0;
  let failures = 0;
  let failingSince = 0;
  let lastError: unknown;
  let acquireFailures = 0;
  let acquireFailingSince = 0;
  let lastAcquireError: unknown;
  /** Since when this member holds nothing while units are unowned: its clock, and the epoch's. */
  let idleAt: number | undefined;
  let idleSince = 0;
  let stopping: Promise<void> | undefined;
  /** The leave of a clean stop: releases wait for it. */
  let leaving: Promise<void> | undefined;
  let renewing: Promise<void> | undefined;
  /** The acquisitions and requests of the last plan, run beside the heartbeats. */
  let acting: Promise<void> | undefined;
  /** A plan was made while `acting` ran, and dropped: plan again when it ends. */
  let replan = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let timed = false;
  let lostAt: number | undefined;
  const counts = {
    acquired: 0,
    handedOver: 0,
    lost: 0,
    released: 0,
    requested: 0,
    late: 0,
    kept: 0,
    failedHeartbeats: 0,
    failedAcquisitions: 0,
  };

  const deadline = (h: Held) => h.validUntil - s.handoverMs;
  // Past (durationMs − handoverMs) / 2 a member that waits any longer for one store call could
  // not renew in time after it: give up on the call and try again at the next heartbeat.
  const callTimeoutMs = Math.max(1, Math.floor((s.durationMs - s.handoverMs) / 2));
  const bounded = <T>(p: Promise<T>, what: string) =>
    withTimeout(p, callTimeoutMs, `${what} of ${member} in ${scope}`, "LeaseStoreTimeout");

  /** Stops the work of `h`, then releases it (best effort: an expired lease needs no release). */
  function letGo(h: Held, reason: string, kind: "handedOver" | "lost" | "released") {
    if (h.letting) return h.letting;
    const lease = { unit: h.unit, generation: h.generation };
    if (kind === "lost") {
      counts.lost++;
      lostAt = Date.now();
      log.warn("{member} lost {scope}/{unit}: {reason}", { member, scope, unit: h.unit, reason });
    } else {
      log.info("{member} lets go of {scope}/{unit}: {reason}", {
        member,
        scope,
        unit: h.unit,
        reason,
      });
    }
    h.letting = (async () => {
      let abandoned = 0;
      let settled: Promise<void> | undefined;
      try {
        const outcome = await onRevoked(lease, reason);
        abandoned = typeof outcome?.abandoned === "number" ? outcome.abandoned : 0;
        if (outcome?.settled instanceof Promise) settled = outcome.settled;
      } catch (error) {
        log.error("{member}: revoking {scope}/{unit} failed: {error}", {
          member,
          scope,
          unit: h.unit,
          error: errorText(error),
        });
      }
      if (now() > h.validUntil) {
        counts.late++;
        log.error(
          "{member}: the work on {scope}/{unit} ended {ms} ms after its lease could expire; " +
            "another member may have started on it (handoverMs too short for the sink's stop timeout?)",
          { member, scope, unit: h.unit, ms: Math.round(now() - h.validUntil) },
        );
      }
      if (abandoned > 0 && settled !== undefined && !stopper.signal.aborted) {
        // Released (or left to lapse) now, the unit could be taken while those calls still run:
        // the heartbeats go on renewing it until they have ended.
        counts.kept++;
        h.running = abandoned;
        h.runningSince = Date.now();
        log.warn(
          "{member}: {abandoned} calls on {scope}/{unit} still run after the revocation; " +
            "its lease is renewed until they end",
          { member, scope, unit: h.unit, abandoned },
        );
        const stopped = new Promise<void>((resolve) =>
          stopper.signal.addEventListener("abort", () => resolve(), { once: true })
        );
        await Promise.race([settled.catch(() => {}), stopped]);
        h.running = undefined;
        if (stopper.signal.aborted) {
          abandoned = Number.MAX_SAFE_INTEGER; // still running, maybe: left to expire below
        } else {
          abandoned = 0;
          log.info("{member}: the abandoned calls on {scope}/{unit} have ended", {
            member,
            scope,
            unit: h.unit,
          });
        }
      }
      if (abandoned > 0) {
        // The member is stopping (its heartbeats have ended) or could not know when the calls
        // end: released now, the unit could be taken while they still run; left to expire,
        // nobody starts on it before the time the fencing rule promised.
        if (h.runningSince === undefined) counts.kept++;
        log.warn(
          "{member}: calls on {scope}/{unit} may still run after the revocation; " +
            "its lease is kept until it expires in {ms} ms instead of released",
          { member, scope, unit: h.unit, ms: Math.max(0, Math.round(h.validUntil - now())) },
        );
      } else {
        // Released while this member still counts as live, a unit is in nobody else's share
        // (and not stranded: released, not lapsed) until the stop's leave.
        await leaving;
        try {
          await bounded(store.release(scope, lease, member), "releasing");
        } catch (error) {
          if (now() < h.validUntil) {
            log.warn("{member}: releasing {scope}/{unit} failed; it expires on its own: {error}", {
              member,
              scope,
              unit: h.unit,
              error: errorText(error),
            });
          }
        }
      }
      if (kind !== "lost") counts[kind]++;
      if (held.get(h.unit) === h) held.delete(h.unit);
    })();
    return h.letting;
  }

  function sweep() {
    const t = now();
    for (const h of held.values()) {
      if (h.letting === undefined && t >= deadline(h)) {
        letGo(
          h,
          `not renewed for ${Math.round(t - h.renewedAt)} ms (deadline ${
            s.durationMs - s.handoverMs
          } ms)`,
          "lost",
        );
      }
    }
    arm();
  }

  /** The timer for the next deadline, while the loop runs. */
  function arm() {
    if (!timed) return;
    clearTimeout(timer);
    timer = undefined;
    let next = Infinity;
    for (const h of held.values()) if (h.letting === undefined) next = Math.min(next, deadline(h));
    if (next === Infinity) return;
    timer = setTimeout(sweep, Math.max(0, next - now()));
  }

  /** Renews, plans, lets go of what others asked for, and starts the plan's acquisitions. */
  async function renew() {
    const sentAt = now();
    const renewing = [...held.values()].filter((h) => h.validUntil > sentAt);
    let result: HeartbeatResult;
    try {
      result = await bounded(
        store.heartbeat(
          scope,
          member,
          s.durationMs,
          renewing.map((h) => ({ unit: h.unit, generation: h.generation })),
          fingerprint,
        ),
        "a heartbeat",
      );
    } catch (error) {
      if (failures++ === 0) failingSince = Date.now();
      counts.failedHeartbeats++;
      lastError = error;
      log.warn("{member}: heartbeat of {scope} failed ({failures} in a row): {error}", {
        member,
        scope,
        failures,
        error: errorText(error),
      });
      sweep();
      return;
    }
    failures = 0;
    beatAt = sentAt;
    viewAt = now();
    view = result.view;
    const renewed = new Set(result.renewed);
    for (const h of renewing) {
      if (held.get(h.unit) !== h) continue;
      if (renewed.has(h.unit)) {
        h.renewedAt = sentAt;
        h.validUntil = Math.max(h.validUntil, sentAt + s.durationMs);
      } else if (h.letting === undefined) {
        letGo(h, "the store no longer has it as this member's", "lost");
      } else if (h.running !== undefined) {
        log.error(
          "{member}: the lease on {scope}/{unit} could not be renewed while {running} calls " +
            "abandoned by its revocation still run; another member may start on it",
          { member, scope, unit: h.unit, running: h.running },
        );
      }
    }
    sweep();
    if (stopping) return;
    plan = planLeases({
      view,
      member,
      units,
      held: [...held.values()].filter((h) => h.letting === undefined).map((h) => h.unit),
      fingerprint,
      heartbeatMs: s.heartbeatMs,
    });
    noteIdle();
    for (const unit of plan.handOver) {
      const h = held.get(unit);
      if (h) {
        letGo(
          h,
          `requested by ${view.leases.find((l) => l.unit === unit)?.requestedBy}`,
          "handedOver",
        );
      }
    }
    // The last plan's calls still running (a slow store): plan again once they are done, rather
    // than racing them for the same units; the renewals go on meanwhile.
    if (acting === undefined) startActing(plan);
    else replan = true;
  }

  function startActing(plan: LeasePlan) {
    acting = act(plan).finally(() => {
      acting = undefined;
      // A plan was dropped meanwhile (a wake-up for a lapse, say): plan again now, from a fresh
      // view, rather than at the next heartbeat, by when others may have taken the units.
      if (replan && !stopping) {
        replan = false;
        beat().catch((error) =>
          log.error("{member}: planning {scope} again failed: {error}", {
            member,
            scope,
            error: errorText(error),
          })
        );
      }
    });
  }

  function act(plan: LeasePlan): Promise<void> {
    const alternatives = [...plan.alternatives];
    // Members that wake together may go for the same units: whoever loses takes the next ones.
    const acquireOrNext = async (unit: string | undefined) => {
      while (unit !== undefined && !(await acquire(unit)) && !stopping) unit = alternatives.shift();
    };
    // A stranded unit another member got first is not replaced: it was beyond the share.
    const stranded = new Set(plan.stranded);
    return Promise.all([
      ...plan.acquire.map((unit) => stranded.has(unit) ? acquire(unit) : acquireOrNext(unit)),
      ...plan.request.map(async (unit) => {
        try {
          await bounded(store.request(scope, unit, member), "a request");
          counts.requested++;
        } catch (error) {
          log.warn("{member}: requesting {scope}/{unit} failed: {error}", {
            member,
            scope,
            unit,
            error: errorText(error),
          });
        }
      }),
    ]).then(() => {});
  }

  /** Keeps `idleSince`: holding nothing while units are unowned is worth a problem if it lasts. */
  function noteIdle() {
    const working = [...held.values()].some((h) => h.letting === undefined);
    if (working || unownedUnits() === 0) idleAt = undefined;
    else if (idleAt === undefined) {
      idleAt = now();
      idleSince = Date.now();
    }
  }

  /** Takes `unit`; false when another member holds it. */
  async function acquire(unit: string): Promise<boolean> {
    const sentAt = now();
    let lease: Lease | undefined;
    try {
      lease = await bounded(store.acquire(scope, unit, member, s.durationMs), "acquiring");
    } catch (error) {
      if (acquireFailures++ === 0) acquireFailingSince = Date.now();
      counts.failedAcquisitions++;
      lastAcquireError = error;
      log.warn("{member}: acquiring {scope}/{unit} failed ({failures} in a row): {error}", {
        member,
        scope,
        unit,
        failures: acquireFailures,
        error: errorText(error),
      });
      return true; // the store is in trouble: no more tries this heartbeat
    }
    acquireFailures = 0;
    if (lease === undefined) return false; // another member was quicker
    const h: Held = {
      unit,
      generation: lease.generation,
      acquiredAt: sentAt,
      renewedAt: sentAt,
      validUntil: sentAt + s.durationMs,
      letting: undefined,
    };
    if (stopping || held.has(unit)) {
      await bounded(store.release(scope, h, member), "releasing").catch(() => {});
      return true;
    }
    held.set(unit, h);
    // Its deadline counts from now, whatever else of this heartbeat is still under way.
    arm();
    idleAt = undefined;
    counts.acquired++;
    log.info("{member} acquired {scope}/{unit} (generation {generation})", {
      member,
      scope,
      unit,
      generation: String(lease.generation),
    });
    try {
      onAcquired({ unit, generation: lease.generation });
    } catch (error) {
      letGo(h, `starting its work failed: ${errorText(error)}`, "released");
    }
    return true;
  }

  /** When the last plan is due to change ({@linkcode LeasePlan.wakeAt}), on this member's clock. */
  function wakeAt(): number {
    if (plan === undefined || view === undefined) return Infinity;
    return viewAt + (plan.wakeAt - view.now);
  }

  /** Every unit's owner as far as this member knows: the last view, and its own leases. */
  function ownersOf(): Record<string, string | undefined> {
    const owners: Record<string, string | undefined> = {};
    for (const unit of units) owners[unit] = undefined;
    for (const l of view?.leases ?? []) {
      if (l.unit in owners && l.owner !== undefined && l.expiresAt > view!.now) {
        owners[l.unit] = l.owner;
      }
    }
    for (const unit of units) {
      if (held.has(unit)) owners[unit] = member;
      else if (owners[unit] === member) owners[unit] = undefined;
    }
    return owners;
  }

  function unownedUnits(): number {
    if (view === undefined) return 0;
    return Object.values(ownersOf()).filter((o) => o === undefined).length;
  }

  /** One heartbeat's renewal and planning; the loop waits for this, not for the acquisitions. */
  function beat(): Promise<void> {
    if (stopping) return Promise.resolve();
    renewing ??= renew().finally(() => (renewing = undefined));
    return renewing;
  }

  function holds(unit: string): boolean {
    const h = held.get(unit);
    if (h === undefined || h.letting !== undefined) return false;
    if (now() < deadline(h)) return true;
    queueMicrotask(sweep);
    return false;
  }

  return {
    member,
    async start() {
      timed = true;
      arm();
      while (!stopper.signal.aborted) {
        const began = now();
        await beat();
        // Heartbeats start heartbeatMs apart, however long one takes; and the one after a lease
        // or member of another runs out, or a lapsed unit becomes stranded, comes right after
        // it, so a dead member's slots are taken as soon as they lapse rather than up to a
        // heartbeat later. After a failed one,
        // the next comes a quarter of that later (at once after a hung one): the timing rule
        // leaves room for it before the deadline.
        const every = failures > 0 && failures <= RETRIES_SOON
          ? Math.max(1, Math.floor(s.heartbeatMs / 4))
          : s.heartbeatMs;
        // A wake-up already due when this heartbeat began was this one's to act on: after a
        // failed heartbeat (its view stale) it must not make the next start at once, again and
        // again, against a failing store.
        const wake = wakeAt();
        const next = wake > began ? Math.min(began + every, wake) : began + every;
        await sleep(Math.max(0, next - now()), stopper.signal);
      }
      await stopping;
    },
    async tick() {
      await beat();
      await acting;
    },
    sweep,
    holds,
    fence(unit) {
      const h = held.get(unit);
      return h === undefined ? undefined : { scope, unit, owner: member, generation: h.generation };
    },
    stop() {
      stopping ??= (async () => {
        stopper.abort();
        // No heartbeat after the leave (it would count this member again).
        await renewing;
        await acting;
        // Leave first, beside the revocations: the others' shares leave this member out from
        // then on, so each slot is taken as soon as its release comes, not once the slowest
        // revocation has ended.
        leaving = bounded(store.leave(scope, member), "leaving").catch((error) =>
          log.warn("{member}: leaving {scope} failed: {error}", {
            member,
            scope,
            error: errorText(error),
          })
        );
        await Promise.all(
          [...held.values()].map((h) =>
            h.letting ?? letGo(h, "the member is stopping", "released")
          ),
        );
        timed = false;
        clearTimeout(timer);
        await leaving;
      })();
      return stopping;
    },
    snapshot() {
      const t = now();
      const owners = ownersOf();
      return {
        member,
        scope,
        durationMs: s.durationMs,
        heartbeatMs: s.heartbeatMs,
        handoverMs: s.handoverMs,
        held: [...held.values()].sort((a, b) => (a.unit < b.unit ? -1 : 1)).map((h) => ({
          unit: h.unit,
          generation: h.generation,
          state: h.letting === undefined ? "working" : "letting go",
          ageMs: t - h.acquiredAt,
          renewedAgoMs: t - h.renewedAt,
          validForMs: h.validUntil - t,
        })),
        members: plan?.members ?? [member],
        share: plan?.share ?? units.length,
        owners,
        unowned: view === undefined ? 0 : Object.values(owners).filter((o) => !o).length,
        mismatched: (plan?.mismatched ?? []).map((m) => m.member),
        heartbeatAgoMs: beatAt === undefined ? undefined : t - beatAt,
        heartbeatFailures: failures,
        failedHeartbeats: counts.failedHeartbeats,
        acquireFailures,
        failedAcquisitions: counts.failedAcquisitions,
        acquired: counts.acquired,
        handedOver: counts.handedOver,
        lost: counts.lost,
        released: counts.released,
        requested: counts.requested,
        lateRevocations: counts.late,
        kept: counts.kept,
      };
    },
    problems() {
      const out: SourceProblem[] = [];
      if (failures > 0) {
        out.push({
          severity: held.size > 0 || failures >= 3 ? "failing" : "degraded",
          reason: `lease heartbeats of ${member} in ${scope} failing (${failures} in a row): ${
            errorText(lastError)
          }`,
          since: failingSince,
        });
      }
      if (acquireFailures > 0) {
        out.push({
          severity: acquireFailures >= ACQUIRE_FAILING_AFTER ? "failing" : "degraded",
          reason: `lease acquisitions of ${member} in ${scope} failing (${acquireFailures} ` +
            `in a row): ${errorText(lastAcquireError)}`,
          since: acquireFailingSince,
        });
      }
      if (plan !== undefined && plan.foreign.length > 0) {
        out.push({
          severity: "failing",
          reason:
            `members of ${scope} disagree on the units: others hold ${
              plan.foreign.slice(0, 3).join(", ")
            }${plan.foreign.length > 3 ? ", ..." : ""}, which ${member} does not have; it takes ` +
            `nothing until they are released`,
          since: Date.now(),
        });
      }
      if (plan !== undefined && plan.mismatched.length > 0) {
        const others = plan.mismatched.slice(0, 3).map((m) =>
          `${m.member} (${m.units!.split(":")[0]} units)`
        ).join(", ") + (plan.mismatched.length > 3 ? ", ..." : "");
        out.push({
          severity: "failing",
          reason: `members of ${scope} are configured with other units: ${others}, while ` +
            `${member} has ${units.length}; they are left out of the fair shares`,
          since: Date.now(),
        });
      }
      if (idleAt !== undefined && now() - idleAt >= s.durationMs) {
        out.push({
          severity: "failing",
          reason: `${member} holds no lease of ${scope} while ${unownedUnits()} of its ` +
            `${units.length} units are unowned`,
          since: idleSince,
        });
      }
      const running = [...held.values()].filter((h) => h.running !== undefined);
      if (running.length > 0) {
        const calls = running.reduce((n, h) => n + h.running!, 0);
        out.push({
          severity: "degraded",
          reason: `${calls} calls on ${
            running.map((h) => h.unit).slice(0, 3).join(", ")
          }${
            running.length > 3 ? ", ..." : ""
          } of ${scope} still run past their revocation (they ignore their signal); ${member} ` +
            `keeps renewing ${running.length === 1 ? "its lease" : "their leases"} until they end`,
          since: Math.min(...running.map((h) => h.runningSince!)),
        });
      }
      if (lostAt !== undefined && Date.now() - lostAt < LOST_PROBLEM_MS) {
        out.push({
          severity: "degraded",
          reason: `${member} lost ${counts.lost} leases of ${scope} (not renewed in time)`,
          since: lostAt,
        });
      }
      return out;
    },
  };
}

interface Settings {
  readonly member: string;
  readonly durationMs: number;
  readonly heartbeatMs: number;
  readonly handoverMs: number;
}

function checkLeaseMemberOptions(options: LeaseMemberOptions): Settings {
  if (options === null || typeof options !== "object") {
    throw new InvalidArgumentError("options", "must be an object");
  }
  const store = options.store as Partial<LeaseStore> | undefined;
  for (const method of ["heartbeat", "acquire", "request", "release", "leave"] as const) {
    if (typeof store?.[method] !== "function") {
      throw new InvalidArgumentError("store", `must be a LeaseStore (no ${method} method)`);
    }
  }
  checkName("scope", options.scope);
  if (!Array.isArray(options.units) || options.units.length === 0) {
    throw new InvalidArgumentError("units", "must be a non-empty array of unit names");
  }
  for (const unit of options.units) checkName("units", unit);
  if (new Set(options.units).size !== options.units.length) {
    throw new InvalidArgumentError("units", "must not repeat a unit");
  }
  const member = options.member ?? crypto.randomUUID();
  checkName("member", member);
  for (const f of ["onAcquired", "onRevoked"] as const) {
    if (typeof options[f] !== "function") throw new InvalidArgumentError(f, "must be a function");
  }
  return { member, ...checkLeaseTiming(options) };
}

/**
 * Lease timing, as {@linkcode checkLeaseTiming} takes it.
 *
 * @example
 * ```ts
 * import { checkLeaseTiming, type LeaseTimingOptions } from "@impel/impel";
 * const timing: LeaseTimingOptions = { durationMs: 30_000, stopTimeoutMs: 10_000 };
 * console.log(checkLeaseTiming(timing).handoverMs); // 20000
 * ```
 *
 * @category Leases
 */
export interface LeaseTimingOptions {
  /** How long a lease lasts unless renewed. */
  readonly durationMs?: number;
  /** How often leases are renewed. */
  readonly heartbeatMs?: number;
  /** How long before expiry work must have stopped when renewals fail. */
  readonly handoverMs?: number;
  /** The longest a revocation waits for calls in flight (the sink's `stopTimeoutMs`). */
  readonly stopTimeoutMs?: number;
}

/**
 * Lease timing checked, with the defaults filled in.
 *
 * @example
 * ```ts
 * import { checkLeaseTiming, type LeaseTiming } from "@impel/impel";
 * const timing: LeaseTiming = checkLeaseTiming({});
 * console.log(timing.durationMs, timing.heartbeatMs, timing.handoverMs); // 10000 1666 5000
 * ```
 *
 * @category Leases
 */
export interface LeaseTiming {
  /** How long a lease lasts unless renewed, ms. */
  readonly durationMs: number;
  /** How often leases are renewed, ms. */
  readonly heartbeatMs: number;
  /** How long before expiry work stops when renewals fail, ms. */
  readonly handoverMs: number;
  /** The revocation's wait for calls in flight, ms; only when it was given. */
  readonly stopTimeoutMs?: number;
}

/**
 * `handoverMs` is shorter than twice `stopTimeoutMs`: a revocation may wait `stopTimeoutMs` for
 * calls in flight and as long again for the final commit, so the lease could expire, and
 * another member start on the unit, while its calls still run.
 *
 * @example
 * ```ts
 * import { checkLeaseTiming, LeaseTimingError } from "@impel/impel";
 * try {
 *   checkLeaseTiming({ durationMs: 10_000, handoverMs: 5_000, stopTimeoutMs: 10_000 });
 * } catch (e) {
 *   console.log(e instanceof LeaseTimingError && e.handoverMs, e instanceof LeaseTimingError && e.stopTimeoutMs); // 5000 10000
 * }
 * ```
 *
 * @category Errors
 */
export class LeaseTimingError extends InvalidArgumentError {
  /** The `handoverMs` given or defaulted. */
  readonly handoverMs: number;
  /** The `stopTimeoutMs` given or defaulted. */
  readonly stopTimeoutMs: number;
  /** Creates the error; `prefix` is how the options are named (e.g. `leases.`). */
  constructor(handoverMs: number, stopTimeoutMs: number, prefix = "") {
    super(
      `${prefix}handoverMs`,
      `(${handoverMs} ms) must be at least 2 × ${prefix}stopTimeoutMs (${stopTimeoutMs} ms): a ` +
        `revocation waits up to stopTimeoutMs for calls in flight and as long again for the ` +
        `final commit, and the lease must not expire meanwhile`,
    );
    this.handoverMs = handoverMs;
    this.stopTimeoutMs = stopTimeoutMs;
  }
}

/**
 * Checks a leased source's hand-over against the stop timeout of the sink it feeds (its real
 * one: the source was only told one): throws {@linkcode LeaseTimingError} when `handoverMs <
 * 2 × stopTimeoutMs`. A source without leases (no `leases()`, or it returns nothing) passes.
 * `run` and `pipeline` call it before anything is read.
 *
 * @example
 * ```ts
 * import { checkLeasedSource, LeaseTimingError } from "@impel/impel";
 * const source = { leases: () => ({ handoverMs: 5_000 }) };
 * checkLeasedSource(source, 2_000); // fine: 5 000 ≥ 2 × 2 000
 * try {
 *   checkLeasedSource(source, 10_000);
 * } catch (e) {
 *   console.log(e instanceof LeaseTimingError); // true
 * }
 * ```
 *
 * @category Leases
 */
export function checkLeasedSource(source: unknown, stopTimeoutMs: number): void {
  const leases = (source as { leases?: () => { handoverMs: number } | undefined } | undefined)
    ?.leases;
  if (typeof leases !== "function") return;
  const timing = leases.call(source);
  if (timing !== undefined && timing.handoverMs < 2 * stopTimeoutMs) {
    throw new LeaseTimingError(timing.handoverMs, stopTimeoutMs, "leases.");
  }
}

/**
 * Checks lease timing options at a public boundary and fills in the defaults, such that a member
 * renews at least three times before it would have to let go: `heartbeatMs ≤ (durationMs −
 * handoverMs) / 3`, so that one failed or hung heartbeat (bounded by `(durationMs − handoverMs) /
 * 2`) still leaves time for a retry. Without `stopTimeoutMs`: `durationMs` 10 000, `handoverMs`
 * half of it, `heartbeatMs` a fifth of it or that third, whichever is less. With it, `handoverMs` must be at least `2 × stopTimeoutMs`
 * ({@linkcode LeaseTimingError} otherwise) and the defaults make room: `durationMs` at least
 * `3 × stopTimeoutMs`, `handoverMs` at least `2 × stopTimeoutMs` (so 30 000 / 20 000 / 3 333
 * for a streams sink's default 10 s). Every duration must be below 2^31 ms (a timer's limit).
 * `prefix` names the options in errors (`leases.` for a source's).
 *
 * @example
 * ```ts
 * import { checkLeaseTiming } from "@impel/impel";
 * console.log(checkLeaseTiming({ durationMs: 2_000 })); // { durationMs: 2000, heartbeatMs: 333, handoverMs: 1000 }
 * console.log(checkLeaseTiming({ stopTimeoutMs: 10_000 }));
 * // { durationMs: 30000, heartbeatMs: 3333, handoverMs: 20000, stopTimeoutMs: 10000 }
 * checkLeaseTiming({ durationMs: 2_000, heartbeatMs: 400 }); // throws InvalidArgumentError
 * ```
 *
 * @category Leases
 */
export function checkLeaseTiming(options: LeaseTimingOptions, prefix = ""): LeaseTiming {
  const stop = options.stopTimeoutMs === undefined
    ? undefined
    : checkInteger(`${prefix}stopTimeoutMs`, options.stopTimeoutMs, 0, MAX_TIMER_MS);
  const durationMs = checkInteger(
    `${prefix}durationMs`,
    options.durationMs ?? Math.max(10_000, 3 * (stop ?? 0)),
    100,
    MAX_TIMER_MS,
  );
  const handoverMs = options.handoverMs ?? Math.max(Math.floor(durationMs / 2), 2 * (stop ?? 0));
  if (stop !== undefined && options.handoverMs !== undefined) {
    checkInteger(`${prefix}handoverMs`, handoverMs, 1, MAX_TIMER_MS);
  }
  if (stop !== undefined && handoverMs < 2 * stop) {
    throw new LeaseTimingError(handoverMs, stop, prefix);
  }
  if (options.handoverMs === undefined && handoverMs > durationMs - 2) {
    throw new InvalidArgumentError(
      `${prefix}durationMs`,
      `(${durationMs} ms) leaves no room for handoverMs, which defaults to 2 × ` +
        `${prefix}stopTimeoutMs = ${handoverMs} ms: give a longer durationMs (at least ` +
        `${3 * stop!} ms) or a shorter stopTimeoutMs`,
    );
  }
  checkInteger(`${prefix}handoverMs`, handoverMs, 1, durationMs - 2);
  // A third: a heartbeat that fails, or hangs for a whole store call bound ((d − h) / 2), still
  // leaves time for a retry before the deadline at d − h.
  const room = Math.floor((durationMs - handoverMs) / 3);
  const heartbeatMs = checkInteger(
    `${prefix}heartbeatMs`,
    options.heartbeatMs ?? Math.min(room, Math.max(1, Math.floor(durationMs / 5))),
    1,
  );
  if (heartbeatMs > room) {
    throw new InvalidArgumentError(
      `${prefix}heartbeatMs`,
      `(${heartbeatMs} ms) must be at most (${prefix}durationMs − ${prefix}handoverMs) / 3 = ` +
        `${room} ms, so that a member survives one failed or hung heartbeat`,
    );
  }
  return stop === undefined
    ? { durationMs, heartbeatMs, handoverMs }
    : { durationMs, heartbeatMs, handoverMs, stopTimeoutMs: stop };
}

/**
 * The checkpoint store checks fences against other leases than the lease store keeps: every
 * fenced commit would be refused with {@linkcode StaleCommitError} (the lease is not there), so
 * the source refuses the pair when it is created. Names both locations.
 *
 * @example
 * ```ts
 * import { checkLeaseFence, LeaseFenceMismatchError } from "@impel/impel";
 * try {
 *   checkLeaseFence(
 *     { location: 'postgresql "reactor"."leases"' },
 *     { fenceLocation: 'postgresql "impel"."leases"' },
 *   );
 * } catch (e) {
 *   console.log(e instanceof LeaseFenceMismatchError && e.fenceLocation); // postgresql "impel"."leases"
 * }
 * ```
 *
 * @category Errors
 */
export class LeaseFenceMismatchError extends InvalidArgumentError {
  /** Where the lease store keeps its leases. */
  readonly leaseLocation: string;
  /** Where the checkpoint store looks for them. */
  readonly fenceLocation: string;
  /** Creates the error; `prefix` is how the options are named (e.g. `leases.`). */
  constructor(leaseLocation: string, fenceLocation: string, prefix = "") {
    super(
      "checkpoints",
      `check fences against the leases in ${fenceLocation}, but ${prefix}store keeps them in ` +
        `${leaseLocation}: every commit would be refused as stale. Point both at the same ` +
        `leases (postgresCheckpoints(pool, { leases: { schema, table } }) with the schema and ` +
        `table of postgresLeases, or memoryCheckpoints({ leases }) with the same memoryLeases())`,
    );
    this.leaseLocation = leaseLocation;
    this.fenceLocation = fenceLocation;
  }
}

/**
 * Checks that a fenced checkpoint store checks fences against the leases `store` keeps: throws
 * {@linkcode LeaseFenceMismatchError} when both say where ({@linkcode LeaseStore.location},
 * {@linkcode CheckpointStore.fenceLocation}) and the places differ. Stores that do not say pass
 * (a commit they refuse is a {@linkcode StaleCommitError}). Leased sources call it when created.
 * It compares names only: two pools on different databases with the same table name pass.
 *
 * @example
 * ```ts
 * import { checkLeaseFence } from "@impel/impel";
 * import { memoryCheckpoints } from "@impel/impel/checkpoints/memory";
 * import { memoryLeases } from "@impel/impel/leases/memory";
 * const leases = memoryLeases();
 * checkLeaseFence(leases, memoryCheckpoints({ leases })); // fine
 * checkLeaseFence(memoryLeases(), memoryCheckpoints({ leases })); // throws LeaseFenceMismatchError
 * ```
 *
 * @category Leases
 */
export function checkLeaseFence(
  store: Pick<LeaseStore, "location">,
  checkpoints: Pick<CheckpointStore, "fenceLocation">,
  prefix = "",
): void {
  const leaseLocation = store.location, fenceLocation = checkpoints.fenceLocation;
  if (typeof leaseLocation !== "string" || typeof fenceLocation !== "string") return;
  if (leaseLocation !== fenceLocation) {
    throw new LeaseFenceMismatchError(leaseLocation, fenceLocation, prefix);
  }
}

function checkName(field: string, value: unknown): string {
  if (typeof value !== "string" || value.length === 0 || value.length > 200) {
    throw new InvalidArgumentError(
      field,
      `must be a non-empty string of at most 200 characters, got ${describe(value)}`,
    );
  }
  return value;
}
