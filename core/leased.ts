/**
 * A source of a consumer group with leases, over any source that can read one tranche: the
 * members of `{source}/{group}` share the tranches (units) through a {@linkcode LeaseStore}
 * (`core/lease.ts`); each tranche this member holds is read by a source of its own, under an
 * ownership that is revoked before the lease can lapse, and committed with the lease as fence.
 * The MessageDB source (hash slots of categories) and the Cosmos source (feed ranges) are built
 * on it.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { ObservableSource, Position, SourceProblem } from "./batch.ts";
import { type CheckpointStore, StaleCommitError } from "./checkpoints.ts";
import {
  createLeaseMember,
  type LeaseMember,
  type LeaseSnapshot,
  type LeaseStore,
} from "./lease.ts";
import { createOwnership, type OwnershipControl } from "./ownership.ts";
import { errorText } from "./failure.ts";
import { type TrancheContext, trancheStream } from "./tranches.ts";

const log = getLogger(["impel", "leases"]);

/**
 * The lease settings of a leased source (see `core/lease.ts` for the timing rule).
 *
 * @example
 * ```ts
 * import { memoryLeases } from "@impel/impel/leases/memory";
 * import type { LeasedSourceLeases } from "./leased.ts";
 * const leases: LeasedSourceLeases = { store: memoryLeases(), durationMs: 30_000 };
 * ```
 */
export interface LeasedSourceLeases {
  /** Where the leases are kept. */
  readonly store: LeaseStore;
  /** This member's id (default: a random UUID per start). */
  readonly member?: string;
  /** How long a lease lasts unless renewed. */
  readonly durationMs?: number;
  /** How often leases are renewed. */
  readonly heartbeatMs?: number;
  /** How long before expiry a member that cannot renew must have let go. */
  readonly handoverMs?: number;
  /** The `stopTimeoutMs` of the sink the source feeds. */
  readonly stopTimeoutMs?: number;
}

/**
 * What {@linkcode leasedSource} needs.
 *
 * @example
 * ```ts
 * import { memoryCheckpoints } from "../checkpoints/memory.ts";
 * import { memoryLeases } from "../leases/memory.ts";
 * import type { LeasedSourceOptions } from "./leased.ts";
 * import { pagedSource } from "./reader.ts";
 * const leases = memoryLeases();
 * const options: LeasedSourceOptions = {
 *   scope: "numbers/g",
 *   units: ["0", "1"],
 *   leases: { store: leases },
 *   stopTimeoutMs: 10_000,
 *   checkpoints: memoryCheckpoints({ leases }),
 *   group: "g",
 *   sourceName: "numbers",
 *   reading: (tranche, checkpoints, signal) =>
 *     pagedSource({
 *       name: "numbers",
 *       tranches: [tranche],
 *       checkpoints,
 *       readPage: (_t, position) => Promise.resolve({ items: [], next: position ?? 0n, isTail: true }),
 *       signal,
 *     }),
 * };
 * ```
 */
export interface LeasedSourceOptions {
  /** The lease scope: `{source}/{group}`. */
  readonly scope: string;
  /** The tranches the members share (every member must be configured with the same ones). */
  readonly units: readonly string[];
  /** The lease settings. */
  readonly leases: LeasedSourceLeases;
  /** The sink's stop timeout to assume when `leases.stopTimeoutMs` is not given. */
  readonly stopTimeoutMs: number;
  /** The fenced checkpoint store the tranches commit to. */
  readonly checkpoints: CheckpointStore;
  /**
   * A source reading only `tranche`, committing to `checkpoints` (a view of the fenced store
   * that adds this member's fence to every commit), stopping when `signal` aborts.
   */
  readonly reading: (
    tranche: string,
    checkpoints: CheckpointStore,
    signal: AbortSignal,
  ) => ObservableSource;
  /** The heads of the tranches held, when the source can tell them. */
  readonly heads?: (tranches: readonly string[]) => Promise<ReadonlyMap<string, Position>>;
  /**
   * Acquires what reading needs for as long as the source runs (a LISTEN connection); the
   * function it returns is called once the member has stopped.
   */
  readonly open?: () => Promise<(() => Promise<void>) | undefined | void>;
  /** The consumer group (its checkpoints' `group`). */
  readonly group: string;
  /** The checkpoint keys' `source`. */
  readonly sourceName: string;
  /** Aborting stops the member: every tranche is revoked and its lease released. */
  readonly signal?: AbortSignal;
}

/**
 * What {@linkcode leasedSource} returns: the batches of the tranches held, who holds what, and
 * when everything was let go.
 *
 * @example
 * ```ts
 * import type { LeasedSource } from "./leased.ts";
 * const held = (source: LeasedSource) => source.leases().held.map((h) => h.unit);
 * ```
 */
export type LeasedSource = ObservableSource & {
  /** This member's leases, their ages, the live members, hand-overs and losses. */
  leases(): LeaseSnapshot;
  /** Resolves once the source has stopped and revoked and released every tranche. */
  readonly released: Promise<void>;
};

/** A held tranche: its reader and the ownership its batches carry. */
interface Held {
  readonly control: OwnershipControl;
  readonly stop: AbortController;
  readonly source: ObservableSource;
}

/**
 * Shares `options.units` with the other members of `options.scope`; see the module
 * documentation.
 *
 * @example
 * ```ts ignore
 * import { leasedSource } from "./leased.ts";
 * const source = leasedSource(options); // options as in LeasedSourceOptions' example
 * for await (const batch of source) console.log(batch.tranche, batch.ownership !== undefined);
 * ```
 */
export function leasedSource(options: LeasedSourceOptions): LeasedSource {
  const { scope, leases: lease } = options;
  const held = new Map<string, Held>();
  let released!: () => void;
  const done = new Promise<void>((resolve) => (released = resolve));
  let context: TrancheContext | undefined;

  const member: LeaseMember = createLeaseMember({
    store: lease.store,
    scope,
    units: options.units,
    member: lease.member,
    durationMs: lease.durationMs,
    heartbeatMs: lease.heartbeatMs,
    handoverMs: lease.handoverMs,
    stopTimeoutMs: lease.stopTimeoutMs ?? options.stopTimeoutMs,
    onAcquired({ unit, generation }) {
      const { signal, enqueue, spawn } = context!;
      const fence = { scope, unit, owner: member.member, generation };
      const control = createOwnership(unit, { held: () => member.holds(unit) });
      const stop = new AbortController();
      // Let go of already: refused here, without asking the store.
      const stale = () => member.fence(unit)?.generation !== generation;
      const base = options.checkpoints;
      const checkpoints: CheckpointStore = {
        ...base,
        commit(key, position) {
          if (stale()) return Promise.reject(new StaleCommitError(key, position, fence));
          return base.commit(key, position, fence);
        },
        ...(base.commitCheckpoint === undefined ? {} : {
          commitCheckpoint(key, checkpoint) {
            if (stale()) {
              return Promise.reject(new StaleCommitError(key, checkpoint.position, fence));
            }
            return base.commitCheckpoint!(key, checkpoint, fence);
          },
        }),
      };
      const source = options.reading(unit, checkpoints, AbortSignal.any([signal, stop.signal]));
      held.set(unit, { control, stop, source });
      spawn(async () => {
        for await (const batch of source) {
          if (control.revoked) break;
          await enqueue({ ...batch, ownership: control.ownership });
        }
      });
    },
    async onRevoked({ unit }, reason) {
      const slot = held.get(unit);
      if (slot === undefined) return { abandoned: 0 };
      slot.stop.abort();
      const outcome = await slot.control.revoke(reason);
      if (held.get(unit) === slot) held.delete(unit);
      if (outcome.abandoned > 0 || outcome.commitError !== undefined) {
        log.warn(
          "{scope}: letting go of {unit}: {abandoned} calls abandoned, final commit: {commit}",
          {
            scope,
            unit,
            abandoned: outcome.abandoned,
            commit: outcome.commitError === undefined ? "ok" : errorText(outcome.commitError),
          },
        );
      }
      // Calls still running: the member keeps renewing the lease until they end, then releases it.
      return outcome.settled === undefined
        ? { abandoned: outcome.abandoned }
        : { abandoned: outcome.abandoned, settled: outcome.settled };
    },
  });

  const stream = trancheStream(async (c) => {
    context = c;
    const close = await options.open?.();
    const running = member.start();
    try {
      if (!c.signal.aborted) {
        await new Promise((resolve) => c.signal.addEventListener("abort", resolve, { once: true }));
      }
    } finally {
      await member.stop();
      await running;
      await close?.().catch(() => {});
      released();
    }
  }, { signal: options.signal });

  const heads = options.heads;
  return Object.assign(stream, {
    problems: (): readonly SourceProblem[] => [
      ...member.problems(),
      ...[...held.values()].flatMap((slot) => slot.source.problems?.() ?? []),
    ],
    leases: (): LeaseSnapshot => member.snapshot(),
    released: done,
    ...(heads === undefined ? {} : { heads: () => heads([...held.keys()]) }),
    group: options.group,
    sourceName: options.sourceName,
  });
}
