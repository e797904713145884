/**
 * Kafka source: consumes topics in a consumer group through kafkajs. Each partition
 * (`topic/partition`) is a tranche; each fetch is split into batches of at most
 * `maxBatchMessages` messages, so that commits follow the work closely whatever the fetch size.
 * How messages become events (streams from keys, indexes, invalid records) is described in
 * `sources/kafka_records.ts`, whose exports this module re-exports.
 *
 * Ownership: every period in which this member holds a partition is an {@linkcode Ownership}
 * carried by that period's batches. When kafkajs reports a rebalance, a crash or a stop, every
 * partition is revoked (kafkajs uses the eager protocol: a rebalance takes every partition away
 * and hands out a new assignment), and the sink stops calls on their streams, drops their
 * buffered events, waits for the calls in flight and commits what was completed. kafkajs learns
 * of a rebalance from a heartbeat, and rejoins as soon as it does; the source makes sure that
 * heartbeat is its own, sent from `eachBatch`, whenever this member has work in flight: a fetch
 * that reached the tail of its partition keeps `eachBatch` waiting (heartbeating) until what was
 * fetched is committed, for at most `maxTailHoldMs`, so kafkajs never sends the heartbeat of an
 * empty fetch while that work runs. A rebalance seen by the source's heartbeat is answered by
 * letting go of every partition, and of any commit still on its way, before kafkajs rejoins; so
 * no stream is handled by two members at once. kafkajs still notices a rebalance by itself when
 * no work is in flight (nothing to let go of), when a hold outlasted `maxTailHoldMs` (a stuck
 * stream), or from a fetch to another broker that has nothing to fetch (partitions led by
 * several brokers); the revocation then starts at once, but kafkajs rejoins meanwhile. The next
 * assignment (GROUP_JOIN) is the truth, across kafkajs restarts.
 *
 * A partition is an ordered log, so its batches are marked `gapsAreFinal`: a gap in a stream's
 * indexes is permanent and goes to the sink's `gaps` policy.
 *
 * Commits: an offset counts as committed only once the broker accepted it (kafkajs's
 * COMMIT_OFFSETS event); a commit kafkajs resolves without sending (its runner is down or
 * rejoining) or that fails rejects with {@linkcode KafkaCommitFailedError}, so the sink keeps it
 * pending and sends it again. Commits for a partition whose revocation has ended are refused,
 * and are never sent after it: the source holds kafkajs's rejoin until a commit kafkajs is still
 * retrying has settled, since kafkajs would otherwise send it under the new generation, for a
 * partition another member may own by then.
 *
 * Failures: a kafkajs crash it restarts from is survived; one it gives up on, or a consumer
 * down for longer than `maxConsumerDownMs` (default 60 s) since a crash, errors the stream with
 * {@linkcode KafkaConsumerCrashedError}, so `run()` rejects. The returned stream has
 * `problems()` (see {@linkcode ObservableSource}) for health checks.
 *
 * The consumer is the caller's: create it with the group id and timeouts you want, and call
 * `consumer.disconnect()` only after the pipeline has stopped, because the sink's final commit
 * on stop goes through it. Keep the sink's `stopTimeoutMs` below the consumer's
 * `rebalanceTimeout`, so that a revocation ends before the group gives up on this member.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { Batch, ObservableSource, Position, SourceProblem } from "../core/batch.ts";
import { checkInteger, ImpelError, InvalidArgumentError } from "../core/errors.ts";
import { createOwnership, type OwnershipControl } from "../core/ownership.ts";
import { checkCategory } from "../core/streamName.ts";
import { withTimeout } from "../core/timeout.ts";
import {
  createRecordReader,
  type KafkaIncomingMessage,
  type RecordReader,
} from "./kafka_records.ts";

export { kafkajsLogCreator } from "../sinks/kafka.ts";
export {
  createRecordReader,
  type KafkaIncomingMessage,
  type KafkaInvalidReason,
  KafkaInvalidRecordError,
  type KafkaMessageMeta,
  keyStream,
  noKeyStream,
  type RecordReader,
  type RecordReaderOptions,
} from "./kafka_records.ts";

/**
 * What kafkajs hands to `eachBatch`, as far as the source uses it.
 *
 * @example
 * ```ts
 * import type { KafkaEachBatchPayload } from "@impel/impel/sources/kafka";
 * const count = ({ batch }: KafkaEachBatchPayload) => batch.messages.length;
 * ```
 */
export interface KafkaEachBatchPayload {
  /** The fetched batch of one partition. */
  readonly batch: {
    readonly topic: string;
    readonly partition: number;
    readonly highWatermark: string;
    readonly messages: KafkaIncomingMessage[];
    lastOffset(): string;
  };
  /** Whether a seek made the batch obsolete. */
  isStale(): boolean;
  /** Sends a heartbeat if one is due; rejects when the group is rebalancing. */
  heartbeat(): Promise<void>;
  /** False once the consumer is stopping. */
  isRunning(): boolean;
}

/**
 * The part of a kafkajs `Consumer` the source uses: pass the consumer itself, created with
 * `kafka.consumer({ groupId, ... })`.
 *
 * @example
 * ```ts
 * import { Kafka } from "kafkajs";
 * import type { KafkaConsumer } from "@impel/impel/sources/kafka";
 * const consumer: KafkaConsumer = new Kafka({ brokers: ["127.0.0.1:9092"] }).consumer({ groupId: "g" });
 * ```
 */
export interface KafkaConsumer {
  /** Connects (idempotent). */
  connect(): Promise<void>;
  /** Subscribes to topics before `run`. */
  subscribe(subscription: { topics: string[]; fromBeginning?: boolean }): Promise<void>;
  /** Joins the group and starts fetching. */
  run(config: {
    autoCommit?: boolean;
    eachBatchAutoResolve?: boolean;
    partitionsConsumedConcurrently?: number;
    eachBatch?: (payload: KafkaEachBatchPayload) => Promise<void>;
  }): Promise<void>;
  /** Commits offsets (the next offset to read) under the current generation. */
  commitOffsets(
    offsets: Array<{ topic: string; partition: number; offset: string }>,
  ): Promise<void>;
  /** Stops fetching the given topics (all their partitions when `partitions` is omitted); used on stop. */
  pause(topics: Array<{ topic: string; partitions?: number[] }>): void;
  /** Instrumentation event names. */
  readonly events: {
    readonly GROUP_JOIN: string;
    readonly CRASH: string;
    readonly STOP: string;
    readonly REBALANCING: string;
    readonly COMMIT_OFFSETS: string;
  };
  /** Subscribes to an instrumentation event; returns the unsubscribe function. */
  on(eventName: string, listener: (event: { payload: unknown }) => void): () => void;
}

/**
 * Options of {@linkcode kafkaSource}.
 *
 * @example
 * ```ts
 * import type { KafkaConsumer, KafkaSourceOptions } from "@impel/impel/sources/kafka";
 * declare const consumer: KafkaConsumer;
 * const options: KafkaSourceOptions = { consumer, topics: ["orders"], defaultCategory: "Order" };
 * ```
 */
export interface KafkaSourceOptions {
  /** A kafkajs consumer created for the group; the source connects, subscribes and runs it. */
  readonly consumer: KafkaConsumer;
  /** The topics to consume. */
  readonly topics: readonly string[];
  /** Where a partition without a committed offset starts: earliest (default) or latest. */
  readonly fromBeginning?: boolean;
  /** The category of streams for keys that are not stream names (default `"Kafka"`). */
  readonly defaultCategory?: string;
  /** Maps a non-empty key to its stream instead of the default (see `keyStream`). */
  readonly keyToStream?: (key: Uint8Array) => string;
  /** The most messages in one batch (default 1000); a larger fetch becomes several batches. */
  readonly maxBatchMessages?: number;
  /**
   * Fetching stops while this many fetched messages (default 50 000) wait for the sink to take
   * them, and goes on as it catches up; the sink's own read-ahead limit bounds the rest.
   */
  readonly maxBufferedMessages?: number;
  /**
   * How long the consumer may stay down after a crash kafkajs restarts from (a broker outage)
   * before the stream errors with {@linkcode KafkaConsumerCrashedError} (default 60 000 ms).
   */
  readonly maxConsumerDownMs?: number;
  /**
   * The longest the source holds kafkajs's rejoin while the sink lets go of revoked partitions
   * (default 60 000 ms); the sink's `stopTimeoutMs` should end it well before.
   */
  readonly revocationTimeoutMs?: number;
  /**
   * How long `eachBatch` may hold kafkajs after a fetch that reached the tail of its partition,
   * while what was fetched is not yet committed (default 30 000 ms). The hold keeps kafkajs from
   * rejoining on a rebalance while that work runs; it also delays the next fetch of partitions
   * read from the same broker, so a stream that makes no progress (failing, stuck) ends it, and
   * the partition is not held again until one of its commits is accepted.
   */
  readonly maxTailHoldMs?: number;
  /** Stops consumption: the stream closes and the sink drains; the group is not left. */
  readonly signal?: AbortSignal;
  /**
   * A kafkajs admin client (`kafka.admin()`, connected), for the source's `heads()`: the high
   * watermark of each partition it is assigned, read when asked. Without it the source reports
   * no heads (lag needs `positions.head`, and `awaitCompletion` waits for the tail only).
   */
  readonly admin?: KafkaAdmin;
}

/**
 * What the source uses of a kafkajs admin client.
 *
 * @example
 * ```ts
 * import type { KafkaAdmin } from "@impel/impel/sources/kafka";
 * const highest = async (admin: KafkaAdmin) =>
 *   (await admin.fetchTopicOffsets("orders")).map((p) => `${p.partition}: ${p.high}`);
 * ```
 */
export interface KafkaAdmin {
  /** Each partition's offsets: `high` is the offset the next message gets. */
  fetchTopicOffsets(
    topic: string,
  ): Promise<Array<{ partition: number; high: string; low: string; offset?: string }>>;
}

/**
 * kafkajs gave up on the consumer (a crash it does not restart from), or the consumer stayed
 * down longer than `maxConsumerDownMs`.
 *
 * @example
 * ```ts
 * import { KafkaConsumerCrashedError } from "@impel/impel/sources/kafka";
 * const e = new KafkaConsumerCrashedError("reactor", "KafkaJSNonRetriableError: boom");
 * console.log(e.code, e.groupId); // KafkaConsumerCrashed reactor
 * ```
 */
export class KafkaConsumerCrashedError extends ImpelError {
  /** The consumer group. */
  readonly groupId: string;
  /** Creates the error; `problem` says what happened. */
  constructor(groupId: string, problem: string, options?: ErrorOptions) {
    super("KafkaConsumerCrashed", `kafka consumer of ${groupId} crashed: ${problem}`, options);
    this.groupId = groupId;
  }
}

/**
 * A commit of a partition's offset was not accepted by the broker; the sink keeps the position
 * pending and sends it again.
 *
 * @example
 * ```ts
 * import { KafkaCommitFailedError } from "@impel/impel/sources/kafka";
 * const e = new KafkaCommitFailedError("orders/0", 42n, "the consumer is not running");
 * console.log(e.code, e.message); // KafkaCommitFailed committing offset 42 of orders/0 failed: the consumer is not running
 * ```
 */
export class KafkaCommitFailedError extends ImpelError {
  /** The partition, `topic/partition`. */
  readonly tranche: string;
  /** The offset that was to be committed. */
  readonly position: Position;
  /** Creates the error; `problem` says why. */
  constructor(tranche: string, position: Position, problem: string, options?: ErrorOptions) {
    super("KafkaCommitFailed", `committing offset ${position} of ${tranche} failed: ${problem}`, {
      ...options,
    });
    this.tranche = tranche;
    this.position = position;
  }
}

interface GroupJoinPayload {
  readonly groupId: string;
  readonly memberId: string;
  readonly memberAssignment: Record<string, number[]>;
}

interface CrashPayload {
  readonly groupId: string;
  readonly error: unknown;
  readonly restart: boolean;
}

interface CommitPayload {
  readonly topics: ReadonlyArray<{
    readonly topic: string;
    readonly partitions: ReadonlyArray<{ readonly partition: number; readonly offset: unknown }>;
  }>;
}

/** One period of ownership of a partition. */
interface Assignment {
  readonly topic: string;
  readonly partition: number;
  readonly tranche: string;
  /**
   * The assignment (kafkajs generation as seen by this member) this period belongs to: the same
   * for every partition assigned together, so that the record reader starts afresh per assignment.
   */
  readonly period: number;
  readonly control: OwnershipControl;
  /** Set once the sink has let go: commits are refused from then on. */
  released: boolean;
  /** The highest offset the broker accepted in this period. */
  accepted: bigint;
  /** Commits go out one at a time, so that a higher offset is never overtaken by a lower one. */
  commits: Promise<void>;
  /** The position of the last batch queued in this period. */
  queuedTo: bigint;
  /** Set when a tail hold ran out without a commit; cleared by the next accepted commit. */
  holdExpired: boolean;
  failures: number;
  failingSince: number | undefined;
  lastError: string | undefined;
}

interface Fetched {
  readonly assignment: Assignment;
  readonly messages: KafkaIncomingMessage[];
  readonly position: Position;
  readonly isTail: boolean;
}

type Phase = "starting" | "joined" | "rebalancing" | "down" | "stopped" | "failed";

/** kafkajs's `isRebalancing`, plus a member the coordinator forgot: either way it rejoins. */
const REJOIN_ERRORS = new Set([
  "REBALANCE_IN_PROGRESS",
  "ILLEGAL_GENERATION",
  "NOT_COORDINATOR_FOR_GROUP",
  "NOT_COORDINATOR",
  "UNKNOWN_MEMBER_ID",
]);
/** kafkajs workers for the partitions of one fetch; each is a small closure. */
const PARTITIONS_AT_ONCE = 64;
const isRejoin = (e: unknown) => REJOIN_ERRORS.has((e as { type?: string } | null)?.type ?? "");

/**
 * Consumes `topics` with `consumer` and emits batches of at most `maxBatchMessages` messages
 * per partition, as described in the module documentation. A batch's `commit` commits its
 * offset (the next offset to read) and resolves once the broker accepted it.
 *
 * @example
 * ```ts
 * import { Kafka } from "kafkajs";
 * import { kafkaSource, kafkajsLogCreator } from "@impel/impel/sources/kafka";
 * const kafka = new Kafka({ brokers: ["127.0.0.1:9092"], logCreator: kafkajsLogCreator() });
 * const consumer = kafka.consumer({ groupId: "reactor" });
 * const controller = new AbortController();
 * const source = kafkaSource({ consumer, topics: ["orders"], signal: controller.signal });
 * // await run(source, streamsSink({ handler }), { signal: controller.signal });
 * // await consumer.disconnect();
 * ```
 */
export function kafkaSource(options: KafkaSourceOptions): ObservableSource {
  const { consumer, signal } = options;
  if (consumer === null || typeof consumer?.run !== "function") {
    throw new InvalidArgumentError("consumer", "must be a kafkajs Consumer");
  }
  const topics = options.topics;
  if (
    !Array.isArray(topics) || topics.length === 0 ||
    topics.some((t) => typeof t !== "string" || t === "")
  ) {
    throw new InvalidArgumentError("topics", "must be a non-empty array of topic names");
  }
  if (options.admin !== undefined && typeof options.admin?.fetchTopicOffsets !== "function") {
    throw new InvalidArgumentError("admin", "must be a kafkajs Admin (kafka.admin())");
  }
  const defaultCategory = options.defaultCategory ?? "Kafka";
  try {
    checkCategory(defaultCategory);
  } catch {
    throw new InvalidArgumentError(
      "defaultCategory",
      `must be a non-empty string without '-', got ${JSON.stringify(defaultCategory)}`,
    );
  }
  if (options.keyToStream !== undefined && typeof options.keyToStream !== "function") {
    throw new InvalidArgumentError("keyToStream", "must be a function");
  }
  const maxBuffered = checkInteger("maxBufferedMessages", options.maxBufferedMessages ?? 50_000, 1);
  const maxBatch = checkInteger("maxBatchMessages", options.maxBatchMessages ?? 1000, 1);
  const maxDownMs = checkInteger("maxConsumerDownMs", options.maxConsumerDownMs ?? 60_000, 1);
  const revocationMs = checkInteger(
    "revocationTimeoutMs",
    options.revocationTimeoutMs ?? 60_000,
    1,
  );
  const maxHoldMs = checkInteger("maxTailHoldMs", options.maxTailHoldMs ?? 30_000, 0);
  const fromBeginning = options.fromBeginning ?? true;
  const log = getLogger(["impel", "kafka", "source"]);
  const reader: RecordReader = createRecordReader({
    defaultCategory,
    keyToStream: options.keyToStream,
  });

  const current = new Map<string, Assignment>();
  /** Revoked periods whose sinks have not let go yet. */
  const revoking = new Set<Assignment>();
  /** The offset each partition's last accepted commit carried, from COMMIT_OFFSETS. */
  const acceptedNow = new Map<string, bigint>();
  let periods = 0;
  let groupId = "(group not joined yet)";
  let phase: Phase = "starting";
  let phaseSince = Date.now();
  let crashes = 0;
  let lastCrash = "";
  let queue: Fetched[] = [];
  let buffered = 0;
  let wake: (() => void) | undefined;
  let wakeScheduled = false;
  /** Waits in `eachBatch` (backpressure, tail holds), woken by any change they wait on. */
  const waiters = new Set<() => void>();
  /** The commits in flight (kafkajs may be retrying them); a rejoin waits for them. */
  const sending = new Set<Promise<void>>();
  /** The latest revocation, so that concurrent `eachBatch` calls all wait for the same one. */
  let revocation: Promise<void> = Promise.resolve();
  let watchdog: ReturnType<typeof setInterval> | undefined;
  let failure: unknown;
  let controller: ReadableStreamDefaultController<Batch>;
  const ended = () => phase === "stopped" || phase === "failed";
  const setPhase = (next: Phase) => {
    if (phase === next || ended()) return;
    phase = next;
    phaseSince = Date.now();
  };

  const notify = () => {
    if (waiters.size === 0) return; // the common case: called for every batch the sink takes
    for (const w of [...waiters]) w();
  };
  // Resolves after `ms`, or sooner on a change: the sink took batches, a commit was accepted, a
  // revocation or a stop.
  const changeOrTimeout = (ms: number) =>
    new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      waiters.add(done);
    });

  const dropQueued = () => {
    queue = queue.filter((f) => current.get(f.assignment.tranche) === f.assignment);
    buffered = queue.reduce((n, f) => n + f.messages.length, 0);
    notify();
  };

  /** Revokes every partition held; resolves once the sink has let go of all of them. */
  const revokeAll = (reason: string): Promise<void> => {
    const revoked = [...current.values()];
    // Nothing held: the revocation that took it is the one to wait for (it may still run).
    if (revoked.length === 0) return revocation;
    current.clear();
    dropQueued();
    const startedAt = Date.now();
    const letGo = revoked.map(async (a) => {
      revoking.add(a);
      const outcome = await a.control.revoke(reason);
      a.released = true;
      revoking.delete(a);
      return outcome;
    });
    return revocation = withTimeout(
      Promise.all(letGo),
      revocationMs,
      `the revocation of ${revoked.length} partitions`,
      "RevocationTimeout",
    ).then((outcomes) => {
      const abandoned = outcomes.reduce((n, o) => n + o.abandoned, 0);
      const failed = outcomes.find((o) => o.commitError !== undefined)?.commitError;
      log.info(
        "{groupId}: let go of {count} partitions on {reason} in {ms} ms ({abandoned} calls abandoned{failed})",
        {
          groupId,
          count: revoked.length,
          reason,
          ms: Date.now() - startedAt,
          abandoned,
          failed: failed === undefined ? "" : `; final commit failed: ${failed}`,
        },
      );
    }, (error) => {
      for (const a of revoked) {
        a.released = true;
        revoking.delete(a);
      }
      log.error("{groupId}: revocation on {reason} did not end: {error}", {
        groupId,
        reason,
        error: String(error),
      });
    });
  };

  /**
   * Resolves once no commit is in flight. kafkajs retries a commit inside `commitOffsets`, and a
   * retry after a rejoin goes out under the new generation, which the broker accepts for any
   * partition: so kafkajs must not rejoin before they settle (kafkajs's retrier bounds this).
   */
  const sendsSettled = async (): Promise<void> => {
    while (sending.size > 0) {
      const startedAt = Date.now();
      await Promise.allSettled([...sending]);
      log.info("{groupId}: waited {ms} ms for commits in flight before rejoining", {
        groupId,
        ms: Date.now() - startedAt,
      });
    }
  };

  const onJoin = (payload: GroupJoinPayload) => {
    groupId = payload.groupId;
    // A join without a REBALANCING before it (kafkajs also rejoins on stale metadata) still
    // ends every earlier period.
    revokeAll("a new assignment");
    const assigned: string[] = [];
    const period = ++periods;
    for (const [topic, partitions] of Object.entries(payload.memberAssignment)) {
      for (const partition of partitions) {
        const tranche = `${topic}/${partition}`;
        assigned.push(tranche);
        current.set(tranche, {
          topic,
          partition,
          tranche,
          period,
          control: createOwnership(tranche),
          released: false,
          accepted: -1n,
          commits: Promise.resolve(),
          queuedTo: -1n,
          holdExpired: false,
          failures: 0,
          failingSince: undefined,
          lastError: undefined,
        });
      }
    }
    // kafkajs rejoined before a sink let go (a rebalance it noticed by itself): from now on a
    // commit would go out under the new generation, which the broker accepts for any partition,
    // so a partition that went to another member is fenced off here.
    const next = new Set(assigned);
    for (const a of revoking) {
      if (!next.has(a.tranche) && !a.released) {
        a.released = true;
        log.warn("{tranche} went to another member before this one let go of it", {
          tranche: a.tranche,
        });
      }
    }
    if (sending.size > 0) {
      // Only where kafkajs rejoined without the source's say (see the module documentation).
      log.warn("{groupId}: rejoined with {count} commits in flight; kafkajs may send them late", {
        groupId: payload.groupId,
        count: sending.size,
      });
    }
    crashes = 0;
    setPhase("joined");
    log.info("kafka group {groupId} member {memberId} assigned {assigned}", {
      groupId,
      memberId: payload.memberId,
      assigned,
    });
  };

  const fail = (error: unknown) => {
    if (ended()) return;
    phase = "failed";
    phaseSince = Date.now();
    failure = error;
    clearInterval(watchdog);
    queue = [];
    buffered = 0;
    wake?.();
    notify();
    controller.error(error);
  };

  const send = async (a: Assignment, position: Position): Promise<void> => {
    if (position <= a.accepted) return;
    // Queued behind a commit that was still running when the partition was let go.
    if (a.released) return;
    const failed = (problem: string, cause?: unknown) => {
      a.failures++;
      a.failingSince ??= Date.now();
      a.lastError = problem;
      return new KafkaCommitFailedError(a.tranche, position, problem, { cause });
    };
    acceptedNow.delete(a.tranche);
    const sent = consumer.commitOffsets([{
      topic: a.topic,
      partition: a.partition,
      offset: position.toString(),
    }]);
    const tracked = sent.then(() => {}, () => {});
    sending.add(tracked);
    try {
      await sent;
    } catch (e) {
      throw failed(String(e), e);
    } finally {
      sending.delete(tracked);
    }
    const accepted = acceptedNow.get(a.tranche);
    if (accepted === undefined || accepted < position) {
      // kafkajs resolves without sending while its runner is down or rejoining.
      throw failed("the broker did not receive it (the consumer is not running)");
    }
    a.accepted = accepted;
    a.holdExpired = false;
    notify();
    a.failures = 0;
    a.failingSince = undefined;
    a.lastError = undefined;
  };

  const commit = (a: Assignment, position: Position): Promise<void> => {
    if (a.released) {
      // Refused without an error: the sink's stop may still flush a tranche whose revocation
      // runs, and that must not fail the stop; the next owner carries on from what was accepted.
      log.info("not committing {tranche} at {position}: this member no longer owns it", {
        tranche: a.tranche,
        position: position.toString(),
      });
      return Promise.resolve();
    }
    const next = a.commits.catch(() => {}).then(() => send(a, position));
    a.commits = next;
    return next;
  };

  // Called from eachBatch: the one place where the source can hold kafkajs. A rebalance the
  // heartbeat reports is answered by letting go of every partition before kafkajs rejoins.
  const heartbeatOrLetGo = async (heartbeat: () => Promise<void>): Promise<void> => {
    try {
      await heartbeat();
    } catch (e) {
      if (isRejoin(e)) {
        setPhase("rebalancing");
        await revokeAll(`a rebalance (${(e as { type?: string }).type})`);
        await sendsSettled();
      }
      throw e;
    }
  };

  const eachBatch = async (
    { batch, isStale, heartbeat, isRunning }: KafkaEachBatchPayload,
  ): Promise<void> => {
    if (ended() || isStale() || batch.messages.length === 0) return;
    const a = current.get(`${batch.topic}/${batch.partition}`);
    if (a === undefined) return; // revoked while the fetch was on its way
    const messages = batch.messages;
    const highWatermark = BigInt(batch.highWatermark);
    let atTail = false;
    for (let from = 0; from < messages.length; from += maxBatch) {
      const chunk = messages.slice(from, from + maxBatch);
      const last = from + maxBatch >= messages.length;
      // The last batch ends at the fetch's last offset, which may lie past the last message
      // (transaction markers).
      const position = last ? BigInt(batch.lastOffset()) + 1n : BigInt(chunk.at(-1)!.offset) + 1n;
      atTail = position >= highWatermark;
      queue.push({ assignment: a, messages: chunk, position, isTail: atTail });
      a.queuedTo = position;
    }
    buffered += messages.length;
    // The sink starts on the batch in a later macrotask, so that kafkajs first hands over the
    // rest of the fetch response and sends its next fetch: building events and handling them
    // then overlap that round trip instead of delaying it.
    if (wake !== undefined && !wakeScheduled) {
      wakeScheduled = true;
      setTimeout(() => {
        wakeScheduled = false;
        wake?.();
      }, 0);
    }
    await heartbeatOrLetGo(heartbeat);
    // kafkajs heartbeats only from its fetch loop, so waiting here heartbeats itself and gives
    // way to a rebalance (let go of first) or a stop. Two reasons to wait:
    // - Backpressure: holding kafkajs stops its fetch loop until the sink catches up. Pausing
    //   the partitions instead would leave kafkajs sleeping for maxWaitTimeInMs (5 s by default)
    //   once everything is paused, well after the sink had caught up.
    // - A tail hold: after a fetch that reached the tail, kafkajs's next fetch would come back
    //   empty and kafkajs would heartbeat by itself, and rejoin at once on a rebalance while this
    //   partition's work still runs. So wait until that work is committed (the only completion
    //   the source sees), bounded by maxTailHoldMs. A fetch short of the tail needs no hold: the
    //   next fetch brings more of this partition, and its `eachBatch` heartbeats.
    const holdUntil = Date.now() + maxHoldMs;
    while (!ended() && isRunning() && current.get(a.tranche) === a) {
      const full = buffered >= maxBuffered;
      const hold = atTail && !a.holdExpired && a.queuedTo > a.accepted;
      if (!full && !hold) break;
      if (!full && Date.now() >= holdUntil) {
        a.holdExpired = true;
        log.warn(
          "{tranche}: fetched work not committed after {ms} ms at the tail; kafkajs may now rejoin on a rebalance while it runs",
          { tranche: a.tranche, ms: maxHoldMs },
        );
        break;
      }
      await changeOrTimeout(250);
      await heartbeatOrLetGo(heartbeat);
    }
  };

  const stop = () => {
    if (ended()) return;
    phase = "stopped";
    phaseSince = Date.now();
    clearInterval(watchdog);
    // Stop fetching but stay in the group: the sink's final commits go through this consumer.
    try {
      consumer.pause(topics.map((topic) => ({ topic })));
    } catch {
      // Not running (between a crash and its restart): nothing to pause.
    }
    queue = [];
    buffered = 0;
    wake?.();
    notify();
    try {
      controller.close();
    } catch {
      // Already closed or errored.
    }
  };

  const problems = (): readonly SourceProblem[] => {
    const out: SourceProblem[] = [];
    const since = phaseSince;
    if (phase === "failed") {
      out.push({ severity: "failing", reason: String(failure), since });
    } else if (phase === "down") {
      // kafkajs restarts on its own and the source tolerates maxConsumerDownMs: degraded for the
      // first half of that, so a short blip does not fail a liveness probe.
      out.push({
        severity: Date.now() - since < maxDownMs / 2 ? "degraded" : "failing",
        reason: `kafka consumer of ${groupId} is down after a crash (${crashes} in a row): ` +
          lastCrash,
        since,
      });
    } else if (phase === "starting") {
      out.push({ severity: "degraded", reason: "kafka consumer is joining its group", since });
    } else if (phase === "rebalancing") {
      out.push({ severity: "degraded", reason: `kafka group ${groupId} is rebalancing`, since });
    } else if (phase === "joined" && current.size === 0) {
      out.push({
        severity: "failing",
        reason: `kafka consumer of ${groupId} is assigned no partitions`,
        since,
      });
    }
    for (const a of current.values()) {
      if (a.failures === 0) continue;
      out.push({
        severity: "failing",
        reason: `commits of ${a.tranche} failed ${a.failures} times in a row: ${a.lastError}`,
        since: a.failingSince!,
        tranche: a.tranche,
      });
    }
    return out;
  };

  const stream = new ReadableStream<Batch>({
    async start(c) {
      controller = c;
      if (signal?.aborted) {
        phase = "stopped";
        c.close();
        return;
      }
      signal?.addEventListener("abort", stop, { once: true });
      const { events } = consumer;
      // Listeners stay for the life of the consumer object; they only touch this source's state.
      consumer.on(events.GROUP_JOIN, (e) => onJoin(e.payload as GroupJoinPayload));
      consumer.on(events.REBALANCING, () => {
        setPhase("rebalancing");
        revokeAll("a rebalance kafkajs noticed between fetches");
      });
      consumer.on(events.COMMIT_OFFSETS, (e) => {
        for (const { topic, partitions } of (e.payload as CommitPayload).topics) {
          for (const { partition, offset } of partitions) {
            acceptedNow.set(`${topic}/${partition}`, BigInt(String(offset)));
          }
        }
      });
      // kafkajs emits STOP before CRASH, and keeps its listeners across a restart.
      consumer.on(events.STOP, () => {
        revokeAll("the consumer stopping");
        if (!ended()) setPhase("down");
      });
      consumer.on(events.CRASH, (e) => {
        const crash = e.payload as CrashPayload;
        groupId = crash.groupId;
        crashes++;
        lastCrash = String(crash.error);
        if (!crash.restart) {
          fail(new KafkaConsumerCrashedError(groupId, lastCrash, { cause: crash.error }));
          return;
        }
        setPhase("down");
        log.warn("kafka consumer of {groupId} crashed and restarts ({crashes} in a row): {error}", {
          groupId,
          crashes,
          error: lastCrash,
        });
      });
      watchdog = setInterval(() => {
        if (phase === "down" && Date.now() - phaseSince > maxDownMs) {
          fail(
            new KafkaConsumerCrashedError(
              groupId,
              `down for over ${maxDownMs} ms after ${crashes} crashes; last: ${lastCrash}`,
            ),
          );
        }
      }, Math.min(1000, maxDownMs));
      try {
        await consumer.connect();
        await consumer.subscribe({ topics: [...topics], fromBeginning });
        await consumer.run({
          autoCommit: false,
          eachBatchAutoResolve: true,
          // Tail holds wait in eachBatch: the partitions of one fetch hold side by side rather
          // than one after the other.
          partitionsConsumedConcurrently: PARTITIONS_AT_ONCE,
          eachBatch,
        });
      } catch (e) {
        clearInterval(watchdog);
        throw new KafkaConsumerCrashedError(groupId, `could not start: ${e}`, { cause: e });
      }
    },
    async pull(c) {
      while (true) {
        while (queue.length === 0 && !ended()) {
          await new Promise<void>((resolve) => (wake = resolve));
        }
        wake = undefined;
        if (ended()) return;
        const f = queue.shift()!;
        buffered -= f.messages.length;
        if (buffered < maxBuffered) notify();
        const a = f.assignment;
        if (a.control.revoked) continue; // revoked while the batch waited
        c.enqueue({
          tranche: a.tranche,
          items: reader.items(a.topic, a.partition, a.period, f.messages),
          position: f.position,
          isTail: f.isTail,
          commit: (position) => commit(a, position),
          ownership: a.control.ownership,
          // A partition is an ordered log: a stream's missing index never arrives later.
          gapsAreFinal: true,
        });
        return;
      }
    },
    cancel() {
      stop();
    },
  }, { highWaterMark: 0 });
  const admin = options.admin;
  // The high watermark of every partition assigned now: the position its checkpoint then holds.
  const heads = async (): Promise<ReadonlyMap<string, Position>> => {
    const topics = new Set([...current.values()].map((a) => a.topic));
    const positions = new Map<string, Position>();
    for (const topic of topics) {
      for (const p of await admin!.fetchTopicOffsets(topic)) {
        const tranche = `${topic}/${p.partition}`;
        if (current.has(tranche)) positions.set(tranche, BigInt(p.high));
      }
    }
    return positions;
  };
  return Object.assign(stream, { problems, ...(admin === undefined ? {} : { heads }) });
}
