/**
 * An in-process {@linkcode LeaseStore}, for tests and for members that share one process. Pair it
 * with `memoryCheckpoints({ leases })` for fenced commits.
 *
 * @module
 */
import type { CheckpointFence } from "../core/checkpoints.ts";
import { checkInteger, InvalidArgumentError } from "../core/errors.ts";
import type {
  HeldLease,
  Lease,
  LeaseMemberBeat,
  LeaseStore,
  ScopedLeaseView,
} from "../core/lease.ts";

export type * from "../core/lease.ts";

/** A member expired for this many lease durations (of the member beating) is forgotten. */
const DEAD_MEMBER_DURATIONS = 10;

/**
 * Options of {@linkcode memoryLeases}.
 *
 * @example
 * ```ts
 * import { memoryLeases, type MemoryLeaseOptions } from "@impel/impel/leases/memory";
 * let clock = 0;
 * const options: MemoryLeaseOptions = { now: () => clock };
 * const store = memoryLeases(options);
 * await store.acquire("g", "u", "a", 1_000);
 * clock = 1_000; // expired: another member may take it
 * console.log((await store.acquire("g", "u", "b", 1_000))?.generation); // 2n
 * ```
 */
export interface MemoryLeaseOptions {
  /** The store's clock, ms (default `Date.now`). */
  readonly now?: () => number;
}

/**
 * A memory lease store; `holds` is the synchronous check fenced memory checkpoints use.
 *
 * @example
 * ```ts
 * import { memoryLeases } from "@impel/impel/leases/memory";
 * const store = memoryLeases();
 * const lease = await store.acquire("g", "u", "a", 10_000);
 * console.log(store.holds({ scope: "g", unit: "u", owner: "a", generation: lease!.generation })); // true
 * ```
 */
export interface MemoryLeaseStore extends LeaseStore {
  /** Whether `fence` is the current, unexpired lease of its unit. */
  holds(fence: CheckpointFence): boolean;
}

/** The longest lease: members time its deadline with setTimeout. */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** Numbers the stores of a process, so that each names its own location. */
let stores = 0;

interface Scope {
  readonly leases: Map<string, Lease>;
  readonly members: Map<string, LeaseMemberBeat>;
}

/**
 * Creates an in-memory lease store.
 *
 * @example
 * ```ts
 * import { createLeaseMember } from "@impel/impel";
 * import { memoryLeases } from "@impel/impel/leases/memory";
 * const member = createLeaseMember({
 *   store: memoryLeases(), scope: "g", units: ["u0", "u1"],
 *   onAcquired: (lease) => console.log("start", lease.unit), onRevoked: async () => {},
 * });
 * await member.tick();
 * await member.stop();
 * ```
 */
export function memoryLeases(options: MemoryLeaseOptions = {}): MemoryLeaseStore {
  const now = options.now ?? Date.now;
  const scopes = new Map<string, Scope>();
  const scopeOf = (name: string): Scope => {
    checkText("scope", name);
    let s = scopes.get(name);
    if (s === undefined) scopes.set(name, s = { leases: new Map(), members: new Map() });
    return s;
  };
  const viewOf = (name: string, s: Scope): ScopedLeaseView => ({
    scope: name,
    now: now(),
    leases: [...s.leases.values()],
    members: [...s.members.values()],
  });
  return {
    // Fenced memory checkpoints name it too: a source refuses checkpoints of another store.
    location: `memory lease store #${++stores}`,
    heartbeat(scope, member, durationMs, held, units) {
      const s = scopeOf(scope);
      checkText("member", member);
      checkInteger("durationMs", durationMs, 1, MAX_TIMER_MS);
      if (units !== undefined) checkText("units", units);
      const t = now();
      // Members that died without leaving (a crash) go once long expired, as in the PostgreSQL
      // store: a crashed start with a random id must not stay in every view.
      for (const [name, m] of s.members) {
        if (name !== member && m.expiresAt < t - DEAD_MEMBER_DURATIONS * durationMs) {
          s.members.delete(name);
        }
      }
      const prior = s.members.get(member);
      s.members.set(member, {
        member,
        expiresAt: t + durationMs,
        renewedAt: t,
        joinedAt: prior?.joinedAt ?? t,
        ...(units === undefined ? {} : { units }),
      });
      const renewed: string[] = [];
      for (const h of checkHeld(held)) {
        const l = s.leases.get(h.unit);
        if (l?.owner === member && l.generation === h.generation && l.expiresAt > t) {
          s.leases.set(h.unit, { ...l, expiresAt: t + durationMs, renewedAt: t });
          renewed.push(h.unit);
        }
      }
      return Promise.resolve({ renewed, view: viewOf(scope, s) });
    },
    acquire(scope, unit, member, durationMs) {
      const s = scopeOf(scope);
      checkText("unit", unit);
      checkText("member", member);
      checkInteger("durationMs", durationMs, 1, MAX_TIMER_MS);
      const t = now();
      const l = s.leases.get(unit);
      if (l?.owner !== undefined && l.expiresAt > t) return Promise.resolve(undefined);
      const lease: Lease = {
        unit,
        owner: member,
        generation: (l?.generation ?? 0n) + 1n,
        expiresAt: t + durationMs,
        acquiredAt: t,
        renewedAt: t,
      };
      s.leases.set(unit, lease);
      return Promise.resolve(lease);
    },
    request(scope, unit, member) {
      const s = scopeOf(scope);
      checkText("unit", unit);
      checkText("member", member);
      const l = s.leases.get(unit);
      if (l?.owner !== undefined && l.owner !== member && l.expiresAt > now()) {
        s.leases.set(unit, { ...l, requestedBy: member });
      }
      return Promise.resolve();
    },
    release(scope, held, member) {
      const s = scopeOf(scope);
      checkText("member", member);
      const [h] = checkHeld([held]);
      const l = s.leases.get(h.unit);
      if (l?.owner === member && l.generation === h.generation) {
        s.leases.set(h.unit, { unit: h.unit, generation: l.generation, expiresAt: now() });
      }
      return Promise.resolve();
    },
    leave(scope, member) {
      checkText("member", member);
      scopeOf(scope).members.delete(member);
      return Promise.resolve();
    },
    list(scope) {
      if (scope !== undefined) return Promise.resolve([viewOf(scope, scopeOf(scope))]);
      return Promise.resolve([...scopes].map(([name, s]) => viewOf(name, s)));
    },
    holds(fence) {
      const l = scopes.get(fence.scope)?.leases.get(fence.unit);
      return l?.owner === fence.owner && l.generation === fence.generation && l.expiresAt > now();
    },
  };
}

function checkText(field: string, value: unknown): void {
  if (typeof value !== "string" || value.length === 0) {
    throw new InvalidArgumentError(field, "must be a non-empty string");
  }
}

function checkHeld(held: readonly HeldLease[]): readonly HeldLease[] {
  if (!Array.isArray(held)) throw new InvalidArgumentError("held", "must be an array of leases");
  for (const h of held) {
    checkText("held.unit", h?.unit);
    if (typeof h.generation !== "bigint") {
      throw new InvalidArgumentError("held.generation", "must be a bigint");
    }
  }
  return held;
}
