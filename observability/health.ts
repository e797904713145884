/**
 * Health assessment: what is wrong with each registered pipeline, how bad, and since when.
 * `/health` of the HTTP handler (`@impel/impel/http`) answers with {@linkcode checkHealth}.
 *
 * A pipeline is `failing` when it faulted or stopped; otherwise each of these adds a reason,
 * `degraded` or `failing` by its thresholds or its own severity:
 *
 * | kind | what | default |
 * | --- | --- | --- |
 * | `stuck` | the oldest stream making no progress, by age | degraded at once, failing from 5 min |
 * | `failing` | the oldest stream whose handler throws, by age | degraded from 1 min, failing from 5 min |
 * | `commitFailing` | a tranche whose checkpoint commits keep failing, by age | degraded at once, failing from 1 min |
 * | `source` | a problem the source reports (`ObservableSource.problems()`) | the source's severity |
 * | `parked` | parked streams, by count and by the age of the oldest | degraded from 1 stream; age not checked |
 * | `parkStore` | the park store cannot be read or written, by age | degraded at once, failing from 1 min |
 * | `parkRequestUnclaimed` | release or skip requests no sink claimed for longer than a claim lasts, by how long they can be claimed | degraded at once, failing from 5 min |
 * | `lag` | a tranche behind its head, in position units | not checked (needs `positions.head`) |
 * | `lagUnknown` | asking for the heads failed | degraded |
 *
 * Queues registered with `metrics.addQueue` are checked too (pass `metrics.queues()`), each
 * reason naming the queue in `group` and `queue`:
 *
 * | kind | what | default |
 * | --- | --- | --- |
 * | `queueOldest` | the age of the queue's oldest message | degraded from 5 min |
 * | `queueDeadLetters` | dead letters added over the queue's `deadWindowMs` (default 5 min) | degraded from 1 |
 * | `queueUnavailable` | the queue's store could not be read | degraded |
 *
 * A source with leases (a MessageDB consumer group with `leases`) reports its lease trouble as
 * `source` reasons: heartbeats failing (failing while it holds leases, or from the third in a
 * row), acquisitions failing (failing from the third in a row), members configured with other
 * units, holding no lease while units are unowned for a lease's duration (failing), leases lost
 * in the last minute (degraded). Each pipeline's report also carries its members' lease state
 * ({@linkcode LeaseHealth}).
 *
 * @module
 */
import type { SourceProblem } from "../core/batch.ts";
import { checkNumber, describe, InvalidArgumentError } from "../core/errors.ts";
import { errorText, PipelineFaultError } from "../core/failure.ts";
import type { StreamStatus } from "../core/scheduler.ts";
import type { ParkedSnapshot } from "../core/scheduler.ts";
import type { SinkStats, TrancheStats } from "../core/stats.ts";
import type { LeaseSnapshot } from "../core/lease.ts";
import type { MeteredPipeline, MeteredQueue, QueueSnapshot } from "./metrics.ts";

/**
 * Overall and per-pipeline health.
 *
 * @example
 * ```ts
 * import { streamsSink } from "@impel/impel";
 * import { createMetrics } from "@impel/impel/metrics";
 * import { checkHealth, type HealthStatus } from "@impel/impel/http";
 * const metrics = createMetrics({ defaultMetrics: false });
 * const sink = streamsSink({ handler: () => {}, statsIntervalMs: 0 });
 * metrics.addPipeline({ group: "default", source: "memory", sink });
 * const status: HealthStatus = (await checkHealth(metrics.pipelines())).status;
 * // A readiness probe: only a failing pipeline takes the instance out of service.
 * const httpStatus = status === "failing" ? 503 : 200;
 * console.log(status, httpStatus); // "ok" 200
 * await sink.stop();
 * ```
 */
export type HealthStatus = "ok" | "degraded" | "failing";

/**
 * A pair of thresholds: at or above `degraded` the pipeline is degraded, at or above `failing`
 * failing.
 *
 * @example
 * ```ts
 * import { streamsSink } from "@impel/impel";
 * import { createMemoryStore } from "@impel/impel/sources/memory";
 * import { createMetrics } from "@impel/impel/metrics";
 * import { checkHealth, type Thresholds } from "@impel/impel/http";
 * const store = createMemoryStore();
 * const metrics = createMetrics({ defaultMetrics: false });
 * const sink = streamsSink({ handler: () => {}, statsIntervalMs: 0 });
 * metrics.addPipeline({
 *   group: "default",
 *   source: "memory",
 *   sink,
 *   positions: { head: () => Promise.resolve(BigInt(store.head)) },
 * });
 * // Degraded from 1 000 events behind, failing from 100 000.
 * const lag: Thresholds = { degraded: 1_000, failing: 100_000 };
 * const report = await checkHealth(metrics.pipelines(), { lag });
 * console.log(report.status); // "ok"
 * await sink.stop();
 * ```
 */
export interface Thresholds {
  /** Where `degraded` starts (omit: never degraded on this account). */
  readonly degraded?: number;
  /** Where `failing` starts (omit: never failing on this account). */
  readonly failing?: number;
}

/**
 * What makes a pipeline degraded or failing.
 *
 * @example
 * ```ts
 * import { createMetrics } from "@impel/impel/metrics";
 * import { checkHealth, createHttpHandler, type HealthThresholds } from "@impel/impel/http";
 * const thresholds: HealthThresholds = {
 *   lag: { degraded: 10_000 }, // never failing on lag alone
 *   stuckMs: { degraded: 30_000, failing: 600_000 }, // tolerate brief stalls
 *   failingMs: { degraded: 0, failing: 120_000 }, // any failing stream degrades
 *   commitFailingMs: { degraded: 10_000, failing: 120_000 }, // ride out a brief store outage
 * };
 * const metrics = createMetrics({ defaultMetrics: false });
 * // The same thresholds for a direct check and for the /health route.
 * const report = await checkHealth(metrics.pipelines(), thresholds);
 * const handler = createHttpHandler({ metrics, health: thresholds });
 * console.log(report.status, (await handler(new Request("http://localhost/health"))).status);
 * // "ok" 200
 * ```
 */
export interface HealthThresholds {
  /** Lag of any tranche, in the source's position units (default: not checked; needs `positions.head`). */
  readonly lag?: Thresholds;
  /** Age of the oldest stuck stream in ms (default: degraded from 0, i.e. any stuck stream; failing from 300 000). */
  readonly stuckMs?: Thresholds;
  /** Age of the oldest failing stream in ms (default: degraded from 60 000, failing from 300 000). */
  readonly failingMs?: Thresholds;
  /**
   * How long a tranche's checkpoint commits have been failing, in ms (default: degraded from 0,
   * i.e. at the first failed commit; failing from 60 000). Nothing handled meanwhile is
   * checkpointed, so a restart would handle it all again.
   */
  readonly commitFailingMs?: Thresholds;
  /**
   * Parked streams of a pipeline, by count (default: degraded from 1, i.e. any parked stream;
   * never failing on this account). A parked stream waits for someone to release or skip it.
   */
  readonly parked?: Thresholds;
  /** Age of the oldest parked stream in ms (default: not checked). */
  readonly parkedAgeMs?: Thresholds;
  /**
   * How long the park store has been failing (reads at start or when polling, writes), in ms
   * (default: degraded from 0, failing from 60 000): parked streams are not in hand meanwhile.
   */
  readonly parkStoreFailingMs?: Thresholds;
  /**
   * How long a release or skip request has waited for a sink to claim it, in ms, counted from
   * when it could be claimed (asked, or its last claim lapsed); reported only once it has waited
   * longer than a claim lasts (ten polls, at least 1 s), since a sink that may apply it claims
   * it at its next poll (default: degraded from 0, failing from 300 000). An operator asked for
   * it and nothing is done: the members owning its tranche are busy with other requests, not
   * running, or failing to claim.
   */
  readonly parkRequestUnclaimedMs?: Thresholds;
  /**
   * Age of a metered queue's oldest message, in ms (default: degraded from 300 000): nobody
   * takes its messages, or not fast enough.
   */
  readonly queueOldestMs?: Thresholds;
  /**
   * Dead letters a metered queue gained over its `deadWindowMs` (default: degraded from 1, i.e.
   * any new dead letter in the window; never failing on this account).
   */
  readonly queueDeadLetters?: Thresholds;
}

/**
 * One reason for a status other than ok.
 *
 * @example
 * ```ts
 * import { streamsSink } from "@impel/impel";
 * import { createMetrics } from "@impel/impel/metrics";
 * import { checkHealth, type HealthReason } from "@impel/impel/http";
 * const metrics = createMetrics({ defaultMetrics: false });
 * const sink = streamsSink({ group: "printer", handler: () => {}, statsIntervalMs: 0 });
 * metrics.addPipeline({ group: "printer", source: "memory", sink });
 * await sink.stop();
 * const reasons: readonly HealthReason[] = (await checkHealth(metrics.pipelines())).reasons;
 * for (const r of reasons) console.log(r.status, r.group, r.kind, r.message);
 * // "failing" "printer" "stopped" "pipeline stopped"
 * ```
 */
export interface HealthReason {
  /** How bad. */
  readonly status: "degraded" | "failing";
  /** The pipeline's group. */
  readonly group: string;
  /** What was found. */
  readonly kind:
    | "lag"
    | "lagUnknown"
    | "stuck"
    | "failing"
    | "commitFailing"
    | "source"
    | "parked"
    | "parkStore"
    | "parkRequestUnclaimed"
    | "faulted"
    | "stopped"
    | "queueOldest"
    | "queueDeadLetters"
    | "queueUnavailable";
  /** A sentence for people. */
  readonly message: string;
  /** The queue concerned, for the queue kinds (also in `group`). */
  readonly queue?: string;
  /** The tranche concerned: for lag, failing commits, and source problems that name one. */
  readonly tranche?: string;
  /** The oldest stream concerned, for stuck, failing and parked streams and unclaimed requests. */
  readonly stream?: string;
  /**
   * The measured value: lag in position units, or an age in ms (of the oldest stuck, failing or
   * parked stream, of the current run of failed commits or park store failures, of a source
   * problem, of the longest wait of an unclaimed park request).
   */
  readonly value?: number;
  /**
   * Since when (ms since the epoch), for failing commits, source problems, park store failures
   * and unclaimed park requests.
   */
  readonly since?: number;
}

/**
 * The health of one pipeline.
 *
 * @example
 * ```ts
 * import { streamsSink } from "@impel/impel";
 * import { createMetrics } from "@impel/impel/metrics";
 * import { checkHealth, type PipelineHealth } from "@impel/impel/http";
 * const metrics = createMetrics({ defaultMetrics: false });
 * const live = streamsSink({ group: "printer", handler: () => {}, statsIntervalMs: 0 });
 * const done = streamsSink({ group: "mailer", handler: () => {}, statsIntervalMs: 0 });
 * metrics.addPipeline({ group: "printer", source: "memory", sink: live });
 * metrics.addPipeline({ group: "mailer", source: "memory", sink: done });
 * await done.stop();
 * const pipelines: readonly PipelineHealth[] = (await checkHealth(metrics.pipelines())).pipelines;
 * for (const p of pipelines) console.log(p.group, p.source, p.status, p.reasons.length);
 * // "printer" "memory" "ok" 0
 * // "mailer" "memory" "failing" 1
 * await live.stop();
 * ```
 */
export interface PipelineHealth {
  /** The pipeline's group. */
  readonly group: string;
  /** Its source. */
  readonly source: string;
  /** The worst of its reasons, `ok` if none. */
  readonly status: HealthStatus;
  /** Why it is not ok. */
  readonly reasons: readonly HealthReason[];
  /** With leases: each member's lease state (absent without leases). */
  readonly leases?: readonly LeaseHealth[];
}

/**
 * One lease member's state in a {@linkcode PipelineHealth}: what it holds against its share,
 * the group it sees, and how its store calls fare.
 *
 * @example
 * ```ts
 * import type { LeaseHealth } from "@impel/impel/http";
 * const lease: LeaseHealth = {
 *   scope: "messagedb/reactor", member: "a", held: 4, share: 4, members: 3, unowned: 0,
 *   mismatched: [], heartbeatFailures: 0, acquireFailures: 0, heartbeatAgoMs: 800,
 *   acquired: 4, handedOver: 0, lost: 0, lateRevocations: 0,
 * };
 * ```
 */
export interface LeaseHealth {
  /** The scope: `<source>/<group>`. */
  readonly scope: string;
  /** This member's id. */
  readonly member: string;
  /** Leases held and worked on. */
  readonly held: number;
  /** Its fair share. */
  readonly share: number;
  /** Live members with the same units, this one included. */
  readonly members: number;
  /** Units without an owner at the last heartbeat. */
  readonly unowned: number;
  /** Live members configured with other units. */
  readonly mismatched: readonly string[];
  /** Heartbeats failed in a row. */
  readonly heartbeatFailures: number;
  /** Acquisitions failed in a row. */
  readonly acquireFailures: number;
  /** Since the last successful heartbeat, ms (undefined before the first). */
  readonly heartbeatAgoMs: number | undefined;
  /** Leases acquired. */
  readonly acquired: number;
  /** Leases handed over on request. */
  readonly handedOver: number;
  /** Leases lost (not renewed in time). */
  readonly lost: number;
  /** Revocations that ended after their lease could expire. */
  readonly lateRevocations: number;
}

function leaseHealth(l: LeaseSnapshot): LeaseHealth {
  return {
    scope: l.scope,
    member: l.member,
    held: l.held.filter((h) => h.state === "working").length,
    share: l.share,
    members: l.members.length,
    unowned: l.unowned,
    mismatched: l.mismatched,
    heartbeatFailures: l.heartbeatFailures,
    acquireFailures: l.acquireFailures,
    heartbeatAgoMs: l.heartbeatAgoMs,
    acquired: l.acquired,
    handedOver: l.handedOver,
    lost: l.lost,
    lateRevocations: l.lateRevocations,
  };
}

/**
 * The health of every pipeline.
 *
 * @example
 * ```ts
 * import { streamsSink } from "@impel/impel";
 * import { createMetrics } from "@impel/impel/metrics";
 * import { checkHealth, type HealthReport } from "@impel/impel/http";
 * const metrics = createMetrics({ defaultMetrics: false });
 * const sink = streamsSink({ group: "printer", handler: () => {}, statsIntervalMs: 0 });
 * metrics.addPipeline({ group: "printer", source: "memory", sink });
 * const report: HealthReport = await checkHealth(metrics.pipelines());
 * console.log(report.status, report.reasons.length, report.pipelines.length); // "ok" 0 1
 * console.log(new Date(report.checkedAt) <= new Date()); // true
 * await sink.stop();
 * ```
 */
export interface HealthReport {
  /** The worst status of any pipeline (`ok` when there is none). */
  readonly status: HealthStatus;
  /** When the report was made (ISO 8601). */
  readonly checkedAt: string;
  /** Every reason of every pipeline, worst first. */
  readonly reasons: readonly HealthReason[];
  /** Per pipeline. */
  readonly pipelines: readonly PipelineHealth[];
  /** Per metered queue, when queues were checked. */
  readonly queues?: readonly QueueHealth[];
}

/**
 * The health of one metered queue.
 *
 * @example
 * ```ts
 * import { memoryQueues } from "@impel/impel/queues/memory";
 * import { createMetrics } from "@impel/impel/metrics";
 * import { checkHealth, type QueueHealth } from "@impel/impel/http";
 * const store = memoryQueues();
 * const metrics = createMetrics({ defaultMetrics: false });
 * metrics.addQueue({ store, queue: "emails" });
 * const [q]: readonly QueueHealth[] = (await checkHealth([], {}, metrics.queues())).queues!;
 * console.log(q.queue, q.status); // "emails" "ok"
 * ```
 */
export interface QueueHealth {
  /** The queue. */
  readonly queue: string;
  /** The worst of its reasons, `ok` if none. */
  readonly status: HealthStatus;
  /** Why it is not ok. */
  readonly reasons: readonly HealthReason[];
  /** What was read. */
  readonly snapshot: QueueSnapshot;
}

const RANK: Record<HealthStatus, number> = { ok: 0, degraded: 1, failing: 2 };
const worst = (a: HealthStatus, b: HealthStatus): HealthStatus => RANK[a] >= RANK[b] ? a : b;

function checkThresholds(
  field: string,
  t: Thresholds | undefined,
  defaults: Thresholds,
): Thresholds {
  if (t === undefined) return defaults;
  if (t === null || typeof t !== "object") {
    throw new InvalidArgumentError(field, `must be an object, got ${describe(t)}`);
  }
  if (t.degraded !== undefined) checkNumber(`${field}.degraded`, t.degraded, 0);
  if (t.failing !== undefined) checkNumber(`${field}.failing`, t.failing, 0);
  return t;
}

/**
 * Checks health thresholds and applies the defaults; throws an `InvalidArgumentError` naming
 * the first bad field. Call it where thresholds are configured, so that a mistake fails at
 * start rather than at the first health check.
 *
 * @example
 * ```ts
 * import { resolveHealthThresholds } from "./health.ts";
 * const t = resolveHealthThresholds({ lag: { degraded: 10_000 } });
 * console.log(t.lag.degraded, t.commitFailingMs.failing); // 10000 60000
 * try {
 *   resolveHealthThresholds({ stuckMs: { failing: -1 } });
 * } catch (e) {
 *   console.log((e as Error).message); // "health.stuckMs.failing must be ... got -1"
 * }
 * ```
 */
export function resolveHealthThresholds(t: HealthThresholds = {}): Required<HealthThresholds> {
  if (t === null || typeof t !== "object") {
    throw new InvalidArgumentError("health", `must be an object, got ${describe(t)}`);
  }
  return {
    lag: checkThresholds("health.lag", t.lag, {}),
    stuckMs: checkThresholds("health.stuckMs", t.stuckMs, { degraded: 0, failing: 300_000 }),
    failingMs: checkThresholds("health.failingMs", t.failingMs, {
      degraded: 60_000,
      failing: 300_000,
    }),
    commitFailingMs: checkThresholds("health.commitFailingMs", t.commitFailingMs, {
      degraded: 0,
      failing: 60_000,
    }),
    parked: checkThresholds("health.parked", t.parked, { degraded: 1 }),
    parkedAgeMs: checkThresholds("health.parkedAgeMs", t.parkedAgeMs, {}),
    parkStoreFailingMs: checkThresholds("health.parkStoreFailingMs", t.parkStoreFailingMs, {
      degraded: 0,
      failing: 60_000,
    }),
    parkRequestUnclaimedMs: checkThresholds(
      "health.parkRequestUnclaimedMs",
      t.parkRequestUnclaimedMs,
      { degraded: 0, failing: 300_000 },
    ),
    queueOldestMs: checkThresholds("health.queueOldestMs", t.queueOldestMs, { degraded: 300_000 }),
    queueDeadLetters: checkThresholds("health.queueDeadLetters", t.queueDeadLetters, {
      degraded: 1,
    }),
  };
}

function levelOf(value: number, t: Thresholds): "degraded" | "failing" | undefined {
  if (t.failing !== undefined && value >= t.failing) return "failing";
  if (t.degraded !== undefined && value >= t.degraded) return "degraded";
  return undefined;
}

const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

function streamReason(
  group: string,
  kind: "stuck" | "failing",
  list: readonly StreamStatus[],
  t: Thresholds,
): HealthReason | undefined {
  if (list.length === 0) return undefined;
  const oldest = list.reduce((a, b) => (b.ageMs > a.ageMs ? b : a));
  const status = levelOf(oldest.ageMs, t);
  if (status === undefined) return undefined;
  const what = list.length === 1 ? `1 stream ${kind}` : `${list.length} streams ${kind}`;
  const error = kind === "failing" && oldest.error !== undefined
    ? `; last error: ${errorText(oldest.error)}`
    : "";
  return {
    status,
    group,
    kind,
    stream: oldest.stream,
    value: oldest.ageMs,
    message: `${what}; oldest ${oldest.stream} for ${
      secs(oldest.ageMs)
    } (${oldest.attempts} attempts)${error}`,
  };
}

function commitReason(
  group: string,
  t: TrancheStats,
  thresholds: Thresholds,
): HealthReason | undefined {
  if (t.commitFailures === 0 || t.commitFailingSince === undefined) return undefined;
  const ageMs = Math.max(0, Date.now() - t.commitFailingSince);
  const status = levelOf(ageMs, thresholds);
  if (status === undefined) return undefined;
  const times = t.commitFailures === 1 ? "once" : `${t.commitFailures} times in a row`;
  return {
    status,
    group,
    kind: "commitFailing",
    tranche: t.tranche,
    value: ageMs,
    since: t.commitFailingSince,
    message: `checkpoint commits of tranche ${t.tranche} failing for ${
      secs(ageMs)
    } (${times}); last error: ${errorText(t.commitError)}`,
  };
}

function parkedReasons(
  group: string,
  parked: ParkedSnapshot | undefined,
  t: Required<HealthThresholds>,
): HealthReason[] {
  if (parked === undefined) return [];
  const reasons: HealthReason[] = [];
  const failing = parked.storeFailing;
  if (failing !== undefined) {
    const ageMs = Math.max(0, Date.now() - failing.since);
    const status = levelOf(ageMs, t.parkStoreFailingMs);
    if (status !== undefined) {
      reasons.push({
        status,
        group,
        kind: "parkStore",
        value: ageMs,
        since: failing.since,
        message: `the park store has been failing for ${secs(ageMs)}: ${errorText(failing.error)}`,
      });
    }
  }
  const unclaimed = parked.unclaimed;
  if (unclaimed !== undefined) {
    const ageMs = Math.max(0, Date.now() - unclaimed.oldest.since);
    const status = levelOf(ageMs, t.parkRequestUnclaimedMs);
    if (status !== undefined) {
      const o = unclaimed.oldest;
      const what = unclaimed.requests === 1
        ? "1 park request"
        : `${unclaimed.requests} park requests`;
      reasons.push({
        status,
        group,
        kind: "parkRequestUnclaimed",
        stream: o.stream,
        value: ageMs,
        since: o.since,
        message: `${what} unclaimed past the claim lease; oldest: the ${o.action} of ${o.stream}${
          o.tranche === undefined ? "" : ` (tranche ${o.tranche})`
        }, asked by ${o.by}, claimable for ${
          secs(ageMs)
        } and not claimed by a member that may apply it (those owning its tranche are busy with other requests, not running, or failing to claim)`,
      });
    }
  }
  if (parked.streams === 0) return reasons;
  const byCount = levelOf(parked.streams, t.parked);
  const byAge = levelOf(parked.oldestMs, t.parkedAgeMs);
  const status = byCount === "failing" || byAge === "failing" ? "failing" : byCount ?? byAge;
  if (status === undefined) return reasons;
  const oldest = parked.oldest[0];
  const what = parked.streams === 1 ? "1 stream parked" : `${parked.streams} streams parked`;
  reasons.push({
    status,
    group,
    kind: "parked",
    ...(oldest === undefined ? {} : { stream: oldest.stream }),
    value: parked.oldestMs,
    message: `${what} (${parked.events} events) until released or skipped; oldest ${
      oldest?.stream ?? "?"
    } for ${secs(parked.oldestMs)}${oldest === undefined ? "" : `: ${oldest.error}`}`,
  });
  return reasons;
}

function sourceReasons(group: string, problems: readonly SourceProblem[]): HealthReason[] {
  const now = Date.now();
  return problems.map((problem) => {
    const ageMs = Math.max(0, now - problem.since);
    const where = problem.tranche === undefined ? "" : ` (tranche ${problem.tranche})`;
    return {
      status: problem.severity,
      group,
      kind: "source",
      ...(problem.tranche === undefined ? {} : { tranche: problem.tranche }),
      value: ageMs,
      since: problem.since,
      message: `source: ${problem.reason}${where}, for ${secs(ageMs)}`,
    };
  });
}

/**
 * Assesses the health of `pipelines`: faulted or stopped pipelines are failing; problems their
 * sources report count at the source's severity; stuck and failing streams, failing checkpoint
 * commits and lag count against `thresholds`.
 *
 * @example
 * ```ts
 * import { streamsSink } from "@impel/impel";
 * import { createMetrics } from "@impel/impel/metrics";
 * import { checkHealth } from "@impel/impel/http";
 * const metrics = createMetrics({ defaultMetrics: false });
 * const sink = streamsSink({ handler: () => {}, statsIntervalMs: 0 });
 * metrics.addPipeline({ group: "default", source: "memory", sink });
 * const report = await checkHealth(metrics.pipelines());
 * console.log(report.status); // "ok"
 * await sink.stop();
 * ```
 */
export async function checkHealth(
  pipelines: readonly MeteredPipeline[],
  thresholds: HealthThresholds = {},
  queues: readonly MeteredQueue[] = [],
): Promise<HealthReport> {
  const t = resolveHealthThresholds(thresholds);
  const [results, queued] = await Promise.all([
    Promise.all(pipelines.map((p) => pipelineHealth(p, t))),
    Promise.all(queues.map((q) => queueHealth(q, t))),
  ]);
  const all = [...results, ...queued];
  const reasons = all.flatMap((r) => r.reasons).sort((a, b) => RANK[b.status] - RANK[a.status]);
  return {
    status: all.reduce<HealthStatus>((s, r) => worst(s, r.status), "ok"),
    checkedAt: new Date().toISOString(),
    reasons,
    pipelines: results,
    ...(queues.length === 0 ? {} : { queues: queued }),
  };
}

async function queueHealth(q: MeteredQueue, t: Required<HealthThresholds>): Promise<QueueHealth> {
  const snapshot = await q.check();
  const queue = q.queue;
  const reasons: HealthReason[] = [];
  const at = { group: queue, queue };
  if (snapshot.error !== undefined) {
    reasons.push({
      status: "degraded",
      ...at,
      kind: "queueUnavailable",
      message: `queue ${queue} cannot be read: ${snapshot.error}`,
    });
  }
  const age = snapshot.oldestAgeMs;
  const old = age === undefined ? undefined : levelOf(age, t.queueOldestMs);
  if (old !== undefined) {
    reasons.push({
      status: old,
      ...at,
      kind: "queueOldest",
      value: age,
      message: `the oldest message of queue ${queue} is ${secs(age!)} old`,
    });
  }
  const dead = levelOf(snapshot.deadGrowth, t.queueDeadLetters);
  if (dead !== undefined && snapshot.deadGrowth > 0) {
    reasons.push({
      status: dead,
      ...at,
      kind: "queueDeadLetters",
      value: snapshot.deadGrowth,
      message: `queue ${queue} gained ${snapshot.deadGrowth} dead letter${
        snapshot.deadGrowth === 1 ? "" : "s"
      } in the last ${secs(snapshot.deadWindowMs)} (${snapshot.stats?.dead ?? "?"} in all)`,
    });
  }
  return {
    queue,
    status: reasons.reduce<HealthStatus>((s, r) => worst(s, r.status), "ok"),
    reasons,
    snapshot,
  };
}

async function pipelineHealth(
  p: MeteredPipeline,
  t: Required<HealthThresholds>,
): Promise<PipelineHealth> {
  const group = p.group;
  const reasons: HealthReason[] = [];
  if (p.state === "faulted") {
    reasons.push({
      status: "failing",
      group,
      kind: "faulted",
      message: p.fault instanceof PipelineFaultError
        ? p.fault.message
        : `pipeline faulted: ${errorText(p.fault)}`,
    });
  } else if (p.state === "stopped") {
    reasons.push({ status: "failing", group, kind: "stopped", message: "pipeline stopped" });
  }
  let stats: SinkStats | undefined;
  try {
    stats = p.stats();
  } catch (error) {
    reasons.push({
      status: "failing",
      group,
      kind: "faulted",
      message: `stats unavailable: ${errorText(error)}`,
    });
  }
  reasons.push(...sourceReasons(group, p.problems()));
  if (stats) {
    for (const tranche of stats.tranches) {
      const reason = commitReason(group, tranche, t.commitFailingMs);
      if (reason) reasons.push(reason);
    }
    const stuck = streamReason(group, "stuck", stats.stuck, t.stuckMs);
    if (stuck) reasons.push(stuck);
    const failing = streamReason(group, "failing", stats.failing, t.failingMs);
    if (failing) reasons.push(failing);
    reasons.push(...parkedReasons(group, stats.parked, t));
    if ((t.lag.degraded !== undefined || t.lag.failing !== undefined) && p.positions?.head) {
      const lags = await p.lags(stats);
      if (lags.error !== undefined) {
        reasons.push({
          status: "degraded",
          group,
          kind: "lagUnknown",
          message: `lag unknown: ${lags.error}`,
        });
      }
      for (const [tranche, { lag }] of lags.tranches) {
        const status = lag === undefined ? undefined : levelOf(lag, t.lag);
        if (status === undefined) continue;
        reasons.push({
          status,
          group,
          kind: "lag",
          tranche,
          value: lag,
          message: `tranche ${tranche} is ${lag} behind`,
        });
      }
    }
  }
  // A hand-made pipeline may lack leases().
  const leases = (p as Partial<MeteredPipeline>).leases?.() ?? [];
  const health = {
    group,
    source: p.source,
    status: reasons.reduce<HealthStatus>((s, r) => worst(s, r.status), "ok"),
    reasons,
  };
  return leases.length === 0 ? health : { ...health, leases: leases.map(leaseHealth) };
}
