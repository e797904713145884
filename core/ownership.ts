/**
 * Tranche ownership: how a source that can lose a tranche (a Kafka rebalance, an expired lease)
 * tells the sink to let go of it, and learns when the sink has.
 *
 * The flow stays one-way. The source creates an {@linkcode Ownership} for each period in which
 * it owns a tranche and attaches it to every batch of that period, just as it attaches `commit`.
 * Revoking aborts the ownership's signal. A sink that holds work of it reacts at once, without
 * queueing behind batches or a full read-ahead: it stops starting calls on the tranche's streams,
 * drops their buffered events, waits for in-flight calls (bounded, then aborts their signal),
 * commits what was complete, forgets the streams and reports back through the ownership. Batches
 * that arrive with a revoked ownership are dropped and do not count against the read-ahead.
 *
 * @module
 */
import type { Position } from "./batch.ts";

/**
 * How a sink let go of a revoked tranche.
 *
 * @example
 * ```ts
 * import { createOwnership, type RevocationOutcome } from "@impel/impel";
 * const owned = createOwnership("orders/0");
 * const outcome: RevocationOutcome = await owned.revoke(); // no sink held it: resolves at once
 * console.log(outcome.committed, outcome.abandoned); // undefined 0
 * ```
 *
 * @category Sources
 */
export interface RevocationOutcome {
  /** The last position committed for the tranche by the sink, if any. */
  readonly committed: Position | undefined;
  /** Handler calls still running when the sink stopped waiting (their signal was aborted). */
  readonly abandoned: number;
  /** Why the final commit of the revoked tranche failed, if it did. */
  readonly commitError?: unknown;
  /**
   * With `abandoned > 0`: resolves once those calls have really ended (a handler that ignores
   * its signal runs on). A source that shares the tranche with other processes (a lease) keeps
   * its claim until then, so that nobody starts on the tranche while they run.
   */
  readonly settled?: Promise<void>;
}

/**
 * A source's claim on one tranche for one period of ownership, carried by that period's batches.
 *
 * @example
 * ```ts
 * import { type Batch, createOwnership } from "@impel/impel";
 * const owned = createOwnership("orders/0");
 * const batch: Batch = { tranche: "orders/0", items: [], position: 0n, isTail: true, ownership: owned.ownership };
 * console.log(batch.ownership?.signal.aborted); // false
 * ```
 *
 * @category Sources
 */
export interface Ownership {
  /** The tranche owned. */
  readonly tranche: string;
  /** Aborts when the source revokes the tranche. */
  readonly signal: AbortSignal;
  /**
   * For sinks: registers one holder of work of this ownership. The revocation waits until every
   * holder has called the function returned, with how it let go.
   */
  hold(): (outcome: RevocationOutcome) => void;
  /**
   * For sinks: whether work may start on the tranche now; ask before each handler call. False
   * once revoked, and for a leased tranche as soon as its lease can no longer be relied on, even
   * before the source's timer has revoked it (a process resumed after a pause runs the timers
   * that were due in order, so a handler's timer may fire before the source's). Absent on
   * ownerships made by hand: held until revoked.
   */
  held?(): boolean;
}

/**
 * Options of {@linkcode createOwnership}.
 *
 * @example
 * ```ts
 * import { createOwnership, type OwnershipOptions } from "@impel/impel";
 * const until = performance.now() + 5_000;
 * const options: OwnershipOptions = { held: () => performance.now() < until };
 * const owned = createOwnership("orders/0", options);
 * console.log(owned.ownership.held?.()); // true, for five seconds
 * ```
 *
 * @category Sources
 */
export interface OwnershipOptions {
  /** Whether the source still holds the tranche (a lease's deadline); see `Ownership.held`. */
  readonly held?: () => boolean;
}

/**
 * The source's side of an {@linkcode Ownership}.
 *
 * @example
 * ```ts
 * import { createOwnership } from "@impel/impel";
 * const owned = createOwnership("orders/0");
 * // ... emit batches with `ownership: owned.ownership` ...
 * const { committed } = await owned.revoke(); // after a rebalance, before rejoining
 * console.log(owned.revoked, committed); // true undefined
 * ```
 *
 * @category Sources
 */
export interface OwnershipControl {
  /** Attach to every batch of this period. */
  readonly ownership: Ownership;
  /** Whether `revoke` was called. */
  readonly revoked: boolean;
  /**
   * Revokes the tranche; resolves once every sink that held work of it has let go (at once if
   * none did). Idempotent: later calls return the same promise.
   */
  revoke(reason?: unknown): Promise<RevocationOutcome>;
}

/**
 * Creates an ownership of `tranche` for a source to attach to its batches.
 *
 * @example
 * ```ts
 * import { createOwnership } from "@impel/impel";
 * const owned = createOwnership("orders/3");
 * const release = owned.ownership.hold(); // what a sink does on the first batch
 * const revoking = owned.revoke();
 * release({ committed: 42n, abandoned: 0 }); // what the sink does once it let go
 * console.log((await revoking).committed); // 42n
 * ```
 *
 * @category Sources
 */
export function createOwnership(
  tranche: string,
  options: OwnershipOptions = {},
): OwnershipControl {
  const abort = new AbortController();
  const outcomes: RevocationOutcome[] = [];
  let holders = 0;
  let settle: (() => void) | undefined;
  let revoking: Promise<RevocationOutcome> | undefined;

  const combined = (): RevocationOutcome => {
    let committed: Position | undefined;
    let abandoned = 0;
    let commitError: unknown;
    const settled: Promise<void>[] = [];
    for (const o of outcomes) {
      if (o.committed !== undefined && (committed === undefined || o.committed > committed)) {
        committed = o.committed;
      }
      abandoned += o.abandoned;
      commitError ??= o.commitError;
      if (o.settled !== undefined) settled.push(o.settled);
    }
    return {
      committed,
      abandoned,
      ...(settled.length === 0 ? {} : { settled: Promise.all(settled).then(() => {}) }),
      ...(commitError === undefined ? {} : { commitError }),
    };
  };

  const ownership: Ownership = {
    tranche,
    signal: abort.signal,
    hold() {
      holders++;
      let called = false;
      return (outcome) => {
        if (called) return;
        called = true;
        outcomes.push(outcome);
        if (--holders === 0) settle?.();
      };
    },
    held: () => !abort.signal.aborted && (options.held?.() ?? true),
  };
  return {
    ownership,
    get revoked() {
      return revoking !== undefined;
    },
    revoke(reason) {
      revoking ??= new Promise<void>((resolve) => {
        settle = resolve;
        abort.abort(reason);
        if (holders === 0) resolve();
      }).then(combined);
      return revoking;
    },
  };
}
