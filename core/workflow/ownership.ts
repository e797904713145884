/**
 * One runner per workflow category across processes: a lease on the unit `runner` of scope
 * `workflow/{category}` in a {@linkcode LeaseStore}, taken before the runner dispatches anything
 * and renewed by heartbeat; a second runner finds it held and fails with
 * {@linkcode WorkflowRunnerConflictError}.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { HeldLease, LeaseStore } from "../lease.ts";
import { checkInteger, describe, ImpelError, InvalidArgumentError } from "../errors.ts";
import { errorText } from "../failure.ts";
import { sleep } from "../tranches.ts";
import { withTimeout } from "../timeout.ts";

/**
 * Options of {@linkcode WorkflowRunnerOptions.owner}: where the runner's lease is kept.
 *
 * @example
 * ```ts
 * import type { WorkflowOwnerOptions } from "@impel/impel/workflow";
 * import { memoryLeases } from "@impel/impel/leases/memory";
 * const owner: WorkflowOwnerOptions = { leases: memoryLeases(), member: "worker-1", durationMs: 15_000 };
 * ```
 *
 * @category Workflows
 */
export interface WorkflowOwnerOptions {
  /** The lease store (e.g. `postgresLeases(pool)` beside a MessageDB store). */
  readonly leases: LeaseStore;
  /** This runner's member id (default: a random UUID per start). */
  readonly member?: string;
  /**
   * How long the lease lasts unless renewed (default 15 000 ms; renewed every third of it): a
   * runner killed without a stop holds its category that long after its last heartbeat.
   */
  readonly durationMs?: number;
  /**
   * How long a runner that finds the lease held keeps trying to take it before it fails
   * (default `durationMs` and a third: a runner killed without a stop lets it lapse within
   * `durationMs`, so its restart takes over, while a live runner keeps renewing it, so a second
   * one fails). 0: fail at once.
   */
  readonly waitMs?: number;
}

/**
 * Another runner holds the category's lease (it runs in another process, or one killed without a
 * stop still holds it until its lease lapses), or this runner lost it: the runner dispatches
 * nothing, and its `running` rejects with this. `code` is `"WorkflowRunnerConflict"`.
 *
 * @example
 * ```ts
 * import { WorkflowRunnerConflictError } from "@impel/impel/workflow";
 * const e = new WorkflowRunnerConflictError("Fulfilment", "worker-2", "is held by worker-1");
 * console.log(e.code, e.category); // "WorkflowRunnerConflict" "Fulfilment"
 * ```
 *
 * @category Workflows
 */
export class WorkflowRunnerConflictError extends ImpelError {
  /** The workflow's category. */
  readonly category: string;
  /** This runner's member id. */
  readonly member: string;
  /** Creates the error: `what` says what happened to the lease. */
  constructor(category: string, member: string, what: string) {
    super(
      "WorkflowRunnerConflict",
      `the runner lease of ${category} (scope workflow/${category}) ${what}: runner ${member} ` +
        "dispatches nothing (one runner per category: stop the other, or wait for its lease to lapse)",
    );
    this.category = category;
    this.member = member;
  }
}

/**
 * A runner's hold on its category: `ready` once taken (rejects if another holds it), `lost`
 * rejects if it is lost later; `check` throws (and loses it) if it has lapsed by this process's
 * clock, whether or not a heartbeat noticed yet, and throws the loss once one was found (a
 * heartbeat told it was taken) though its lapse time is still ahead; `stop` releases it.
 *
 * @example
 * ```ts
 * import type { RunnerLease } from "./ownership.ts";
 * const release = (lease: RunnerLease) => lease.stop();
 * ```
 */
export interface RunnerLease {
  readonly member: string;
  readonly ready: Promise<void>;
  readonly lost: Promise<never>;
  check(): void;
  stop(): Promise<void>;
}

const UNIT = "runner";

/**
 * Takes and keeps the runner lease of `category` (see the module documentation).
 *
 * @example
 * ```ts
 * import { memoryLeases } from "../../leases/memory.ts";
 * import { holdRunnerLease } from "./ownership.ts";
 * const lease = holdRunnerLease({ leases: memoryLeases() }, "Fulfilment");
 * await lease.ready;
 * await lease.stop();
 * ```
 */
export function holdRunnerLease(options: WorkflowOwnerOptions, category: string): RunnerLease {
  if (options === null || typeof options !== "object") {
    throw new InvalidArgumentError(
      "owner",
      `must be { leases, member?, durationMs? }, got ${describe(options)}`,
    );
  }
  const { leases } = options;
  if (typeof leases?.acquire !== "function" || typeof leases.heartbeat !== "function") {
    throw new InvalidArgumentError("owner.leases", "must be a LeaseStore");
  }
  const member = options.member ?? crypto.randomUUID();
  if (typeof member !== "string" || member.length === 0) {
    throw new InvalidArgumentError(
      "owner.member",
      `must be a non-empty string, got ${describe(member)}`,
    );
  }
  const durationMs = checkInteger("owner.durationMs", options.durationMs ?? 15_000, 3);
  const waitMs = checkInteger(
    "owner.waitMs",
    options.waitMs ?? durationMs + Math.ceil(durationMs / 3),
    0,
  );
  const scope = `workflow/${category}`;
  const log = getLogger(["impel", "workflow", category]);
  let held: HeldLease | undefined;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let stopped = false;
  let reject!: (error: Error) => void;
  const lost = new Promise<never>((_, r) => reject = r);
  // Kept for check: a lease known lost (taken, lapsed) is not sent under until its lapse time.
  let lostWith: Error | undefined;
  const loseIt = (error: Error) => {
    lostWith ??= error;
    reject(error);
  };
  lost.catch(() => {});
  // When the lease lapses unless a heartbeat lands (by this process's clock, conservatively
  // counted from before each call).
  let lapsesAt = 0;

  const beat = async () => {
    timer = undefined;
    if (stopped || held === undefined) return;
    const sent = Date.now();
    try {
      // Bounded by the lease's lapse: a heartbeat that hangs (a partitioned database) must not
      // leave this runner dispatching after another took the category over.
      const { renewed } = await withTimeout(
        leases.heartbeat(scope, member, durationMs, [held]),
        Math.max(1, lapsesAt - sent + 1),
        `renewing the runner lease of ${category}`,
      );
      if (!renewed.includes(UNIT)) {
        throw new WorkflowRunnerConflictError(category, member, "was lost (taken or lapsed)");
      }
      lapsesAt = sent + durationMs;
    } catch (error) {
      if (error instanceof WorkflowRunnerConflictError) return loseIt(error);
      log.warn("{category}: runner lease heartbeat failed: {error}", {
        category,
        error: errorText(error),
      });
      if (Date.now() >= lapsesAt) {
        return loseIt(
          new WorkflowRunnerConflictError(category, member, "lapsed while heartbeats failed"),
        );
      }
    }
    if (!stopped) timer = setTimeout(beat, Math.floor(durationMs / 3));
  };

  const ready = (async () => {
    const giveUpAt = Date.now() + waitMs;
    let sent = Date.now();
    await leases.heartbeat(scope, member, durationMs, []);
    let lease = await leases.acquire(scope, UNIT, member, durationMs);
    while (lease === undefined && !stopped && Date.now() < giveUpAt) {
      // Held: by a live runner (which renews it) or one killed without a stop (it lapses).
      await sleep(Math.min(Math.ceil(durationMs / 6), Math.max(1, giveUpAt - Date.now())));
      sent = Date.now();
      lease = await leases.acquire(scope, UNIT, member, durationMs);
    }
    if (lease === undefined) {
      const view = await leases.list(scope).then((v) => v[0], () => undefined);
      const holder = view?.leases.find((l) => l.unit === UNIT)?.owner;
      throw new WorkflowRunnerConflictError(
        category,
        member,
        `is held by ${holder === undefined ? "another runner" : holder}`,
      );
    }
    held = { unit: UNIT, generation: lease.generation };
    lapsesAt = sent + durationMs;
    if (!stopped) timer = setTimeout(beat, Math.floor(durationMs / 3));
  })();
  ready.catch(() => {});

  return {
    member,
    ready,
    lost,
    check() {
      // A process paused past its lease (stopped, a long GC, a blocked loop) resumes where it
      // was, before any timer runs: what it does next must not rest on the heartbeats.
      if (lostWith !== undefined) throw lostWith;
      if (held !== undefined && Date.now() < lapsesAt) return;
      const error = new WorkflowRunnerConflictError(
        category,
        member,
        held === undefined ? "is not held" : "lapsed (renewals stalled past it)",
      );
      loseIt(error);
      throw error;
    },
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await ready.catch(() => {});
      // Released first, so a runner started next takes it at once.
      if (held !== undefined) await leases.release(scope, held, member).catch(() => {});
      await leases.leave(scope, member).catch(() => {});
    },
  };
}
