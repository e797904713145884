/**
 * Stream configuration: one place to declare, per category or queue name (or a prefix pattern
 * ending in `*`), its delivery mode, retention, dead-letter behaviour and lifecycle, checked
 * whole at start. The retention job and the streams sink's failure policy read from it, through
 * the parsers they already use (`retention/policy.ts`, the failure policy's own check), so an
 * option means the same wherever it is written.
 *
 * - `delivery`: `"broadcast"` — a MessageDB category read by persistent sources, every consumer
 *   group sees every event; `"queue"` — a queue of `queues/postgres.ts`, each message to one
 *   consumer. It says what `match` names (categories or queues) and what retention removes
 *   (events, or dead letters).
 * - `retention`: `{ maxAgeMs?, maxCount?, keepLast? }` ({@linkcode RetentionPolicy}).
 * - `deadLetter` (broadcast): the failure policy of the matching streams — typically
 *   `{ kind: "park", maxAttempts, store }` (the parked streams' policy), or `deadLetter`,
 *   `retry`, `fault`. Queues dead-letter after their store's `maxDeliveries`.
 * - `lifecycle`: `autoCreate` (default true): a name matched only by a pattern may come into
 *   existence on its first write; false: only names an exact entry declares, checked by
 *   {@linkcode StreamConfig.check} (MessageDB and the queue store create names on first write
 *   by themselves; a writer that wants the rule calls `check`). `expired`: `"delete"` (default)
 *   or `"archive"` (retention copies what it removes to the archive tables first).
 *
 * Entries are matched in order, first match wins, per delivery mode; an entry no name can reach
 * (after a pattern that covers it) is an error, as is a repeated one.
 *
 * @example
 * ```ts
 * import { streamConfig } from "@impel/impel/streams";
 * import { memoryParkStore } from "@impel/impel/parked/memory";
 * const config = streamConfig([
 *   { match: "Payment", delivery: "broadcast", retention: { maxAgeMs: 90 * 86_400_000 },
 *     deadLetter: { kind: "park", maxAttempts: 3, store: memoryParkStore() } },
 *   { match: "Audit", delivery: "broadcast" }, // kept forever, failures retried
 *   { match: "*", delivery: "broadcast", retention: { maxAgeMs: 30 * 86_400_000 },
 *     lifecycle: { expired: "archive" } },
 *   { match: "emails", delivery: "queue", retention: { maxAgeMs: 7 * 86_400_000 } },
 * ]);
 * console.log(config.resolve("broadcast", "Payment")?.deadLetter?.kind); // "park"
 * console.log(config.failurePolicy().kind); // "byStream"
 * console.log(config.retentionRules().length); // 4
 * ```
 *
 * @module
 */
import { describe, ImpelError, InvalidArgumentError } from "./errors.ts";
import { checkFailurePolicy, type FailurePolicy, type StreamPolicy } from "./failure.ts";
import {
  checkNamePattern,
  checkRetentionPolicy,
  matchesName,
  type RetentionPolicy,
  type RetentionRule,
} from "../retention/policy.ts";

export type { RetentionPolicy, RetentionRule } from "../retention/policy.ts";
export type { FailurePolicy, StreamPolicy } from "./failure.ts";
export { ImpelError } from "./errors.ts";

/**
 * How a category or queue is delivered: `broadcast` (every consumer group sees every event: a
 * persistent source) or `queue` (each message to one consumer).
 *
 * @example
 * ```ts
 * import type { DeliveryMode } from "@impel/impel/streams";
 * const mode: DeliveryMode = "queue";
 * ```
 *
 * @category Streams
 */
export type DeliveryMode = "broadcast" | "queue";

/**
 * Lifecycle of the matching names.
 *
 * @example
 * ```ts
 * import type { StreamLifecycle } from "@impel/impel/streams";
 * const lifecycle: StreamLifecycle = { autoCreate: false, expired: "archive" };
 * ```
 *
 * @category Streams
 */
export interface StreamLifecycle {
  /** A name only a pattern matches may be created by its first write (default true). */
  readonly autoCreate?: boolean;
  /** What retention does with what expires: `"delete"` (default) or `"archive"`. */
  readonly expired?: "delete" | "archive";
}

/**
 * One entry of a stream configuration.
 *
 * @example
 * ```ts
 * import type { StreamConfigEntry } from "@impel/impel/streams";
 * const entry: StreamConfigEntry = {
 *   match: "Order*",
 *   delivery: "broadcast",
 *   retention: { maxCount: 1_000_000 },
 *   deadLetter: { kind: "fault", maxAttempts: 5 },
 * };
 * ```
 *
 * @category Streams
 */
export interface StreamConfigEntry {
  /** A category (broadcast) or queue name, or a prefix ending in `*` (`*`: every name). */
  readonly match: string;
  /** What the name is: a broadcast category or a queue. */
  readonly delivery: DeliveryMode;
  /** What retention may remove (default: nothing). */
  readonly retention?: RetentionPolicy;
  /** Broadcast only: the failure policy of the matching streams (default: retry). */
  readonly deadLetter?: StreamPolicy;
  /** Creation and expiry. */
  readonly lifecycle?: StreamLifecycle;
}

/**
 * A stream configuration entry is not valid: `entry` is its index, `match` its pattern (if it
 * had a readable one) and `field` the offending field, e.g. `entries[2].retention.keepLast`.
 *
 * @example
 * ```ts
 * import { StreamConfigError, streamConfig } from "@impel/impel/streams";
 * try {
 *   streamConfig([{ match: "Order", delivery: "broadcast", retention: { keepLast: 0 } }]);
 * } catch (e) {
 *   if (e instanceof StreamConfigError) console.log(e.field); // "entries[0].retention.keepLast"
 * }
 * ```
 *
 * @category Streams
 */
export class StreamConfigError extends ImpelError {
  /** The index of the entry. */
  readonly entry: number;
  /** Its `match`, when it was a string. */
  readonly match: string | undefined;
  /** The offending field, from `entries[i]`. */
  readonly field: string;
  /** Creates the error; `problem` completes "field ...". */
  constructor(entry: number, match: string | undefined, field: string, problem: string) {
    const which = match === undefined
      ? `entry ${entry}`
      : `entry ${entry} (${JSON.stringify(match)})`;
    super("StreamConfig", `stream configuration ${which}: ${field} ${problem}`);
    this.entry = entry;
    this.match = match;
    this.field = field;
  }
}

/**
 * A name a writer asked {@linkcode StreamConfig.check} about is not declared: no entry matches,
 * or only a pattern whose `lifecycle.autoCreate` is false.
 *
 * @example
 * ```ts
 * import { StreamNotDeclaredError } from "@impel/impel/streams";
 * const e = new StreamNotDeclaredError("queue", "emails", undefined);
 * console.log(e.code); // "StreamNotDeclared"
 * ```
 *
 * @category Streams
 */
export class StreamNotDeclaredError extends ImpelError {
  /** Creates the error for `name`; `pattern` is the entry that matched, if one did. */
  constructor(delivery: DeliveryMode, name: string, pattern: string | undefined) {
    super(
      "StreamNotDeclared",
      pattern === undefined
        ? `${delivery} ${JSON.stringify(name)} matches no entry of the stream configuration`
        : `${delivery} ${JSON.stringify(name)} is matched only by ${JSON.stringify(pattern)}, ` +
          `whose lifecycle.autoCreate is false: declare it with an entry of its own`,
    );
  }
}

/**
 * A checked stream configuration.
 *
 * @example
 * ```ts
 * import { run, streamsSink } from "@impel/impel";
 * import { createMemoryStore, memorySource } from "@impel/impel/sources/memory";
 * import { streamConfig } from "@impel/impel/streams";
 * const config = streamConfig([
 *   { match: "Order", delivery: "broadcast", deadLetter: { kind: "fault", maxAttempts: 1 } },
 * ]);
 * const store = createMemoryStore();
 * await store.append("Order-1", [{ type: "Placed", data: {} }], 0);
 * const sink = streamsSink({ handler: () => {}, failure: config.failurePolicy() });
 * const ac = new AbortController();
 * const running = run(memorySource({ store }), sink, { signal: ac.signal });
 * await sink.monitor.awaitCompletion({ tail: true });
 * ac.abort();
 * await running;
 * ```
 *
 * @category Streams
 */
export interface StreamConfig {
  /** The entries, as given. */
  readonly entries: readonly StreamConfigEntry[];
  /** The first entry of `delivery` whose pattern matches `name`. */
  resolve(delivery: DeliveryMode, name: string): StreamConfigEntry | undefined;
  /**
   * Throws {@linkcode StreamNotDeclaredError} unless `name` may be written: an exact entry
   * declares it, or the first pattern matching it allows `autoCreate`.
   */
  check(delivery: DeliveryMode, name: string): void;
  /**
   * The streams sink's `failure` policy: per broadcast entry, in order, its `deadLetter`
   * (retry when it has none), as `byStream` rules over the entry's streams.
   */
  failurePolicy(): FailurePolicy;
  /** The retention job's rules (`postgresRetention(pool, { streams: config })` reads them). */
  retentionRules(): readonly RetentionRule[];
}

const ENTRY_KEYS = ["match", "delivery", "retention", "deadLetter", "lifecycle"];

/**
 * Checks a stream configuration and returns it. Every problem is a
 * {@linkcode StreamConfigError} naming the entry and field.
 *
 * @example
 * ```ts
 * import { streamConfig } from "@impel/impel/streams";
 * const config = streamConfig([
 *   { match: "jobs", delivery: "queue", lifecycle: { autoCreate: false } },
 *   { match: "jobs*", delivery: "queue", lifecycle: { autoCreate: false } },
 * ]);
 * config.check("queue", "jobs"); // declared
 * try {
 *   config.check("queue", "jobs-extra");
 * } catch (e) {
 *   console.log((e as Error).name); // "StreamNotDeclaredError"
 * }
 * ```
 *
 * @category Streams
 */
export function streamConfig(entries: readonly StreamConfigEntry[]): StreamConfig {
  if (!Array.isArray(entries)) {
    throw new InvalidArgumentError(
      "entries",
      `must be an array of stream configuration entries, got ${describe(entries)}`,
    );
  }
  const checked = entries.map((entry, i) => checkEntry(entry, i));
  // Repeated and unreachable entries: an earlier pattern of the same mode covering this one.
  checked.forEach((entry, i) => {
    for (let j = 0; j < i; j++) {
      const earlier = checked[j];
      if (earlier.delivery !== entry.delivery) continue;
      if (earlier.match === entry.match) {
        throw new StreamConfigError(i, entry.match, `entries[${i}].match`, `repeats entry ${j}`);
      }
      if (covers(earlier.match, entry.match)) {
        throw new StreamConfigError(
          i,
          entry.match,
          `entries[${i}].match`,
          `is never reached: entry ${j} (${JSON.stringify(earlier.match)}) matches every name ` +
            `it does, and the first match wins (put the more specific entry first)`,
        );
      }
    }
  });

  const resolve = (delivery: DeliveryMode, name: string) =>
    checked.find((e) => e.delivery === delivery && matchesName(e.match, name));

  const broadcast = checked.filter((e) => e.delivery === "broadcast");
  const failure: FailurePolicy = broadcast.length === 0 ? { kind: "retry" } : {
    kind: "byStream",
    rules: broadcast.map((e) => ({
      // A category pattern is a prefix without '-', so as a stream pattern it matches exactly
      // the streams of the categories it matches; a category name matches its streams.
      match: e.match.endsWith("*") ? e.match : `${e.match}-*`,
      policy: e.deadLetter ?? { kind: "retry" },
    })),
  };
  checkFailurePolicy(failure); // each rule was checked already; this checks the assembly
  const rules: RetentionRule[] = checked.map((e) => ({
    target: e.delivery === "broadcast" ? "category" : "queue",
    match: e.match,
    policy: e.retention ?? {},
    archive: e.lifecycle?.expired === "archive",
  }));

  return {
    entries: checked,
    resolve,
    check(delivery, name) {
      if (delivery !== "broadcast" && delivery !== "queue") {
        throw new InvalidArgumentError(
          "delivery",
          `must be "broadcast" or "queue", got ${describe(delivery)}`,
        );
      }
      const entry = resolve(delivery, name);
      if (entry === undefined) throw new StreamNotDeclaredError(delivery, name, undefined);
      if (entry.match.endsWith("*") && entry.lifecycle?.autoCreate === false) {
        throw new StreamNotDeclaredError(delivery, name, entry.match);
      }
    },
    failurePolicy: () => failure,
    retentionRules: () => rules,
  };
}

/** Whether every name `later` matches is matched by `earlier` (prefix patterns and names). */
function covers(earlier: string, later: string): boolean {
  if (!earlier.endsWith("*")) return false;
  return later.startsWith(earlier.slice(0, -1));
}

function checkEntry(entry: StreamConfigEntry, i: number): StreamConfigEntry {
  const at = `entries[${i}]`;
  const match = typeof entry?.match === "string" ? entry.match : undefined;
  const fail = (field: string, problem: string): never => {
    throw new StreamConfigError(i, match, field, problem);
  };
  // The shared checkers throw InvalidArgumentError naming the field: rethrown naming the entry.
  const via = <T>(fn: () => T): T => {
    try {
      return fn();
    } catch (error) {
      if (error instanceof InvalidArgumentError) {
        throw new StreamConfigError(
          i,
          match,
          error.field,
          error.message.slice(error.field.length + 1),
        );
      }
      throw error;
    }
  };
  if (entry === null || typeof entry !== "object" || Array.isArray(entry)) {
    fail(
      at,
      `must be { match, delivery, retention?, deadLetter?, lifecycle? }, got ${describe(entry)}`,
    );
  }
  for (const key of Object.keys(entry)) {
    if (!ENTRY_KEYS.includes(key)) {
      fail(`${at}.${key}`, `is not a field (${ENTRY_KEYS.join(", ")})`);
    }
  }
  if (entry.delivery !== "broadcast" && entry.delivery !== "queue") {
    fail(`${at}.delivery`, `must be "broadcast" or "queue", got ${describe(entry.delivery)}`);
  }
  const target = entry.delivery === "broadcast" ? "category" : "queue";
  via(() => checkNamePattern(`${at}.match`, entry.match, target));
  if (entry.retention !== undefined) {
    via(() => checkRetentionPolicy(`${at}.retention`, entry.retention, target));
  }
  if (entry.deadLetter !== undefined) {
    if (entry.delivery === "queue") {
      fail(
        `${at}.deadLetter`,
        "applies to broadcast streams; a queue dead-letters after its store's maxDeliveries",
      );
    }
    const p = entry.deadLetter as FailurePolicy;
    if (p?.kind === "fault") {
      const extra = Object.keys(p).filter((k) => k !== "kind" && k !== "maxAttempts");
      if (extra.length > 0) {
        fail(
          `${at}.deadLetter.${extra[0]}`,
          "is a pipeline-wide limit: an entry's fault policy takes only maxAttempts",
        );
      }
    }
    via(() => checkFailurePolicy(p, `${at}.deadLetter`));
  }
  const life = entry.lifecycle;
  if (life !== undefined) {
    if (life === null || typeof life !== "object") {
      fail(`${at}.lifecycle`, `must be { autoCreate?, expired? }, got ${describe(life)}`);
    }
    for (const key of Object.keys(life)) {
      if (key !== "autoCreate" && key !== "expired") {
        fail(`${at}.lifecycle.${key}`, "is not a lifecycle field (autoCreate, expired)");
      }
    }
    if (life.autoCreate !== undefined && typeof life.autoCreate !== "boolean") {
      fail(`${at}.lifecycle.autoCreate`, `must be a boolean, got ${describe(life.autoCreate)}`);
    }
    if (life.expired !== undefined && life.expired !== "delete" && life.expired !== "archive") {
      fail(
        `${at}.lifecycle.expired`,
        `must be "delete" or "archive", got ${describe(life.expired)}`,
      );
    }
    if (
      life.expired === "archive" &&
      entry.retention?.maxAgeMs === undefined && entry.retention?.maxCount === undefined
    ) {
      fail(
        `${at}.lifecycle.expired`,
        `is "archive" but the entry's retention removes nothing (give maxAgeMs or maxCount)`,
      );
    }
  }
  return entry;
}
