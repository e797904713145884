/**
 * The queue contract shared by the PostgreSQL and in-memory queue stores: ephemeral messages
 * with a visibility timeout, delivered to one consumer at a time ("queue" delivery, as opposed to
 * the "broadcast" delivery of impel's persistent sources, where every group sees every event).
 *
 * - **At least once, never lost.** A dequeued message is hidden for `visibilityTimeoutMs`; if it
 *   is neither acked nor nacked by then (its consumer died, or took too long without
 *   {@linkcode QueueStore.extend}), it is delivered again.
 * - **One holder at a time.** Each delivery carries a fresh `receipt`; `ack`, `nack` and `extend`
 *   need it and do nothing (returning `false`) once the message was delivered to someone else or
 *   settled, so a consumer that lost a message cannot settle it under its new holder.
 * - **Dead letters.** A message that was delivered `maxDeliveries` times without an ack is moved,
 *   instead of its next delivery, to the queue's dead letters with its last error.
 * - **Order.** Messages become visible in enqueue order and are dequeued oldest visible first;
 *   with several consumers, redeliveries and delays there is no stronger ordering.
 *
 * @module
 */
import { checkInteger, describe, InvalidArgumentError } from "../core/errors.ts";
import { utf8Length } from "../core/event.ts";

/**
 * One delivery of a message, as `dequeue` returns it.
 *
 * @example
 * ```ts
 * import { memoryQueues } from "@impel/impel/queues/memory";
 * import type { QueueMessage } from "@impel/impel/queues/postgres";
 * const queues = memoryQueues();
 * await queues.enqueue("emails", [{ to: "ada@example.com" }]);
 * const [message]: QueueMessage[] = await queues.dequeue("emails", { visibilityTimeoutMs: 30_000 });
 * console.log(message.body, message.deliveries); // { to: "ada@example.com" } 1
 * await queues.ack(message);
 * ```
 *
 * @category Queues
 */
export interface QueueMessage<T = unknown> {
  /** The message's id, unique within its store, increasing in enqueue order. */
  readonly id: string;
  /** The queue it was taken from. */
  readonly queue: string;
  /** The body as enqueued (a JSON value). */
  readonly body: T;
  /** How many times it has been delivered, this delivery included (1 on the first). */
  readonly deliveries: number;
  /** This delivery's token: `ack`, `nack` and `extend` need it. */
  readonly receipt: string;
  /** When it was enqueued. */
  readonly enqueuedAt: Date;
  /** Until when it is hidden from other consumers, as of this delivery. */
  readonly visibleUntil: Date;
  /** The error its previous delivery ended with (a nack's, or an expired visibility). */
  readonly lastError?: string;
}

/**
 * A message that was moved to its queue's dead letters.
 *
 * @example
 * ```ts
 * import { memoryQueues } from "@impel/impel/queues/memory";
 * import type { DeadLetter } from "@impel/impel/queues/postgres";
 * const queues = memoryQueues({ maxDeliveries: 1 });
 * await queues.enqueue("emails", [{ to: "nobody" }]);
 * const [m] = await queues.dequeue("emails", { visibilityTimeoutMs: 1_000 });
 * await queues.nack(m, { error: "no such mailbox" });
 * await queues.dequeue("emails", { visibilityTimeoutMs: 1_000 }); // moves it: delivered once already
 * const [dead]: DeadLetter[] = await queues.deadLetters("emails");
 * console.log(dead.lastError); // "no such mailbox"
 * ```
 *
 * @category Queues
 */
export interface DeadLetter<T = unknown> {
  /** The message's id. */
  readonly id: string;
  /** Its queue. */
  readonly queue: string;
  /** Its body. */
  readonly body: T;
  /** How many times it was delivered. */
  readonly deliveries: number;
  /** When it was enqueued. */
  readonly enqueuedAt: Date;
  /** When it was moved here. */
  readonly deadAt: Date;
  /** The error of its last delivery. */
  readonly lastError: string;
}

/**
 * A message as it waits in its queue, seen without taking it ({@linkcode QueueStore.peek}).
 *
 * @example
 * ```ts
 * import { memoryQueues } from "@impel/impel/queues/memory";
 * import type { PeekedMessage } from "@impel/impel/queues/postgres";
 * const queues = memoryQueues();
 * await queues.enqueue("emails", [{ to: "ada@example.com" }]);
 * const [oldest]: PeekedMessage[] = await queues.peek("emails", 1);
 * console.log(oldest.state, oldest.deliveries); // "ready" 0
 * ```
 *
 * @category Queues
 */
export interface PeekedMessage<T = unknown> {
  /** The message's id. */
  readonly id: string;
  /** Its queue. */
  readonly queue: string;
  /** Its body. */
  readonly body: T;
  /** `ready` (the next dequeue can take it), `inFlight` (delivered, hidden), `delayed`. */
  readonly state: "ready" | "inFlight" | "delayed";
  /** How many times it has been delivered so far. */
  readonly deliveries: number;
  /** When it was enqueued. */
  readonly enqueuedAt: Date;
  /** When it is (or became) visible. */
  readonly visibleAt: Date;
  /**
   * The error its last ended delivery ended with (a nack's, or an expired visibility); while a
   * delivery is in flight, the one before it's.
   */
  readonly lastError?: string;
}

/**
 * Options of {@linkcode QueueStore.enqueue}.
 *
 * @example
 * ```ts
 * import type { EnqueueOptions } from "@impel/impel/queues/postgres";
 * const options: EnqueueOptions = { delayMs: 5_000 }; // visible in 5 s
 * ```
 *
 * @category Queues
 */
export interface EnqueueOptions {
  /** Hides the messages for this long first, ms (default 0). */
  readonly delayMs?: number;
  /**
   * For the PostgreSQL store: a client inside the caller's transaction (a `pg.PoolClient` after
   * `BEGIN`), so the messages exist exactly when that transaction commits. The memory store
   * refuses it.
   */
  readonly client?: { query(text: string, params?: unknown[]): Promise<unknown> };
}

/**
 * Options of {@linkcode QueueStore.dequeue}.
 *
 * @example
 * ```ts
 * import type { DequeueOptions } from "@impel/impel/queues/postgres";
 * const options: DequeueOptions = { visibilityTimeoutMs: 30_000, max: 10 };
 * ```
 *
 * @category Queues
 */
export interface DequeueOptions {
  /** How long the messages stay hidden from other consumers, ms (1 to 2^31 − 1). */
  readonly visibilityTimeoutMs: number;
  /** At most this many messages (default 1, at most 1000). */
  readonly max?: number;
}

/**
 * Options of {@linkcode QueueStore.nack}.
 *
 * @example
 * ```ts
 * import type { NackOptions } from "@impel/impel/queues/postgres";
 * const options: NackOptions = { delayMs: 1_000, error: "mail server down" };
 * ```
 *
 * @category Queues
 */
export interface NackOptions {
  /** Hides the message for this long before its next delivery, ms (default 0). */
  readonly delayMs?: number;
  /** Why it failed: kept as its last error (and shown in its dead letter if it comes to that). */
  readonly error?: string;
}

/**
 * Options of {@linkcode QueueStore.purgeDead}.
 *
 * @example
 * ```ts
 * import type { PurgeDeadOptions } from "@impel/impel/queues/postgres";
 * const weekOld: PurgeDeadOptions = { olderThanMs: 7 * 24 * 3600_000, limit: 500 };
 * ```
 *
 * @category Queues
 */
export interface PurgeDeadOptions {
  /** Only dead letters dead for at least this long, ms (0 to ten years). */
  readonly olderThanMs: number;
  /** At most this many (default 1000, at most 10,000). */
  readonly limit?: number;
}

/** Checks purgeDead options. */
export function checkPurge(options: PurgeDeadOptions): { olderThanMs: number; limit: number } {
  if (options === null || typeof options !== "object") {
    throw new InvalidArgumentError(
      "options",
      `must be { olderThanMs, limit? }, got ${describe(options)}`,
    );
  }
  return {
    olderThanMs: checkInteger("olderThanMs", options.olderThanMs, 0, 10 * 366 * 86_400_000),
    limit: checkLimit(options.limit ?? 1000),
  };
}

/**
 * What a queue holds now.
 *
 * @example
 * ```ts
 * import { memoryQueues } from "@impel/impel/queues/memory";
 * import type { QueueStats } from "@impel/impel/queues/postgres";
 * const queues = memoryQueues();
 * await queues.enqueue("emails", [{}, {}]);
 * const stats: QueueStats = await queues.stats("emails");
 * console.log(stats); // { ready: 2, inFlight: 0, delayed: 0, dead: 0 }
 * ```
 *
 * @category Queues
 */
export interface QueueStats {
  /** Visible now: the next dequeue can take them. */
  readonly ready: number;
  /** Delivered and within their visibility timeout. */
  readonly inFlight: number;
  /** Not delivered yet and hidden (an enqueue's or a nack's delay). */
  readonly delayed: number;
  /** In the dead letters. */
  readonly dead: number;
}

/**
 * A store of ephemeral queues: {@linkcode postgresQueues} or {@linkcode memoryQueues}; the
 * guarantees are in this module's documentation.
 *
 * @example
 * ```ts
 * import { memoryQueues } from "@impel/impel/queues/memory";
 * import type { QueueStore } from "@impel/impel/queues/postgres";
 * const queues: QueueStore = memoryQueues();
 * await queues.enqueue("emails", [{ to: "ada@example.com" }]);
 * for (const m of await queues.dequeue("emails", { visibilityTimeoutMs: 30_000, max: 10 })) {
 *   console.log(m.body);
 *   await queues.ack(m);
 * }
 * ```
 *
 * @category Queues
 */
export interface QueueStore {
  /** Adds `bodies` (JSON values) to `queue`, in order; resolves with their ids. */
  enqueue(queue: string, bodies: readonly unknown[], options?: EnqueueOptions): Promise<string[]>;
  /**
   * Takes up to `max` visible messages of `queue`, oldest first, hiding each for
   * `visibilityTimeoutMs`; messages due for a delivery past `maxDeliveries` go to the dead
   * letters instead. Never blocks: an empty array when nothing is visible.
   */
  dequeue(queue: string, options: DequeueOptions): Promise<QueueMessage[]>;
  /** Deletes a delivered message; `false` if this delivery no longer holds it. */
  ack(message: QueueMessage): Promise<boolean>;
  /**
   * Deletes several delivered messages in one round trip; each result says whether that
   * delivery still held its message (as {@linkcode QueueStore.ack}). At most 1000.
   */
  ackMany(messages: readonly QueueMessage[]): Promise<boolean[]>;
  /** Gives a delivered message back, visible after `delayMs`; `false` if this delivery no longer holds it. */
  nack(message: QueueMessage, options?: NackOptions): Promise<boolean>;
  /** Hides a delivered message for `visibilityTimeoutMs` from now; `false` if this delivery no longer holds it. */
  extend(message: QueueMessage, visibilityTimeoutMs: number): Promise<boolean>;
  /** Counts by state. */
  stats(queue: string): Promise<QueueStats>;
  /**
   * The oldest messages of `queue` (at most `limit`, default 100), in enqueue order, without
   * taking them: for inspection (`impel queue peek`) and the oldest message's age.
   */
  peek(queue: string, limit?: number): Promise<PeekedMessage[]>;
  /** The oldest dead letters of `queue` (at most `limit`, default 100). */
  deadLetters(queue: string, limit?: number): Promise<DeadLetter[]>;
  /**
   * Moves the oldest dead letters of `queue` (at most `limit`, default 1000) back into it, visible
   * at once with their delivery count reset to 0 and their last error kept; resolves with how
   * many moved. For after the cause was fixed.
   */
  requeueDead(queue: string, limit?: number): Promise<number>;
  /**
   * Deletes dead letters of `queue` that have been dead for at least `olderThanMs` (0: all), the
   * oldest first, at most `limit` (default 1000) in one statement so no lock is held long; resolves
   * with how many went. A retention job calls it until it returns less than `limit`.
   */
  purgeDead(queue: string, options: PurgeDeadOptions): Promise<number>;
  /**
   * Resolves when a message may have become visible in `queue` (an enqueue or a nack without
   * delay, as far as the store can tell), after `timeoutMs` otherwise, or at once when `signal`
   * aborts. A consumer calls it when a dequeue came back empty; spurious wake-ups are allowed.
   */
  wait(queue: string, timeoutMs: number, signal?: AbortSignal): Promise<void>;
  /** The most deliveries a message gets before it is dead-lettered. */
  readonly maxDeliveries: number;
}

/** The longest delay a timer takes (2^31 − 1 ms), and so the longest visibility or delay. */
export const MAX_MS = 2 ** 31 - 1;
/** The most messages one `dequeue` returns. */
export const MAX_DEQUEUE = 1000;
/** The most bodies one `enqueue` takes. */
export const MAX_ENQUEUE = 10_000;
/** Queue names: 1 to 200 of letters, digits, `_ . : -`, starting with a letter or digit. */
const QUEUE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$/;

/** Throws {@linkcode InvalidArgumentError} unless `queue` is a valid queue name. */
export function checkQueueName(queue: unknown, field = "queue"): string {
  if (typeof queue !== "string" || !QUEUE_NAME.test(queue)) {
    throw new InvalidArgumentError(
      field,
      `must be a queue name (1 to 200 letters, digits, _ . : -, starting with a letter or ` +
        `digit), got ${describe(queue)}`,
    );
  }
  return queue;
}

/** Checks a delay or timeout in ms, `min` to {@linkcode MAX_MS}. */
export function checkMs(field: string, value: unknown, min: number): number {
  return checkInteger(field, value, min, MAX_MS);
}

/**
 * Encodes bodies as JSON text, each at most `maxBytes` UTF-8 bytes; errors name the index of the
 * body that cannot be encoded (undefined, a function, a bigint, a cycle) or is too large.
 */
export function encodeBodies(bodies: unknown, maxBytes: number): string[] {
  if (!Array.isArray(bodies)) {
    throw new InvalidArgumentError(
      "messages",
      `must be an array of bodies, got ${describe(bodies)}`,
    );
  }
  if (bodies.length > MAX_ENQUEUE) {
    throw new InvalidArgumentError(
      "messages",
      `must hold at most ${MAX_ENQUEUE} bodies per enqueue, got ${bodies.length}`,
    );
  }
  return bodies.map((body, i) => {
    let text: string | undefined;
    try {
      text = JSON.stringify(body);
    } catch (error) {
      throw new InvalidArgumentError(
        `messages[${i}]`,
        `is not JSON-encodable: ${(error as Error).message}`,
      );
    }
    if (text === undefined) {
      throw new InvalidArgumentError(
        `messages[${i}]`,
        `is not JSON-encodable (got ${describe(body)}); bodies are JSON values`,
      );
    }
    const bytes = utf8Length(text);
    if (bytes > maxBytes) {
      throw new InvalidArgumentError(
        `messages[${i}]`,
        `is ${bytes} bytes as JSON, over the limit of ${maxBytes} (maxMessageBytes)`,
      );
    }
    return text;
  });
}

/** Checks dequeue options at the public boundary. */
export function checkDequeue(options: DequeueOptions): { visibilityMs: number; max: number } {
  if (options === null || typeof options !== "object") {
    throw new InvalidArgumentError(
      "options",
      `must be { visibilityTimeoutMs, max? }, got ${describe(options)}`,
    );
  }
  return {
    visibilityMs: checkMs("visibilityTimeoutMs", options.visibilityTimeoutMs, 1),
    max: checkInteger("max", options.max ?? 1, 1, MAX_DEQUEUE),
  };
}

/** Checks that `message` looks like a delivery (`ack`, `nack`, `extend`). */
export function checkDelivery(message: QueueMessage): QueueMessage {
  if (
    message === null || typeof message !== "object" || typeof message.id !== "string" ||
    !/^[1-9][0-9]{0,18}$/.test(message.id) ||
    typeof message.receipt !== "string" || typeof message.queue !== "string"
  ) {
    throw new InvalidArgumentError(
      "message",
      `must be a message returned by dequeue ({ id, queue, receipt, ... }), got ${
        describe(message)
      }`,
    );
  }
  return message;
}

/** Checks the messages of `ackMany`. */
export function checkDeliveries(messages: readonly QueueMessage[]): readonly QueueMessage[] {
  if (!Array.isArray(messages) || messages.length > MAX_DEQUEUE) {
    throw new InvalidArgumentError(
      "messages",
      `must be an array of at most ${MAX_DEQUEUE} delivered messages, got ${describe(messages)}`,
    );
  }
  messages.forEach((m, i) => {
    try {
      checkDelivery(m);
    } catch {
      throw new InvalidArgumentError(
        `messages[${i}]`,
        `must be a message returned by dequeue, got ${describe(m)}`,
      );
    }
  });
  return messages;
}

/** Checks the `limit` of `deadLetters`. */
export function checkLimit(limit: unknown): number {
  return checkInteger("limit", limit, 1, 10_000);
}

/** Checks nack options; the error text is cut to 16 KB, saying so. */
export function checkNack(options: NackOptions = {}): { delayMs: number; error: string } {
  const delayMs = checkMs("delayMs", options.delayMs ?? 0, 0);
  const raw = options.error ?? "nacked";
  if (typeof raw !== "string") {
    throw new InvalidArgumentError("error", `must be a string, got ${describe(raw)}`);
  }
  const error = raw.length > MAX_ERROR ? raw.slice(0, MAX_ERROR) + " [cut at 16 KB]" : raw;
  return { delayMs, error };
}

const MAX_ERROR = 16_384;

/** What the last error of a delivery that ended by its visibility timeout starts with. */
export const EXPIRED_ERROR =
  "visibility timeout expired before ack or nack (consumer gone or too slow) on delivery ";

/**
 * The last error of delivery number `deliveries` once its visibility timeout expired: recorded
 * when that is known (the next dequeue of the message, its dead letter, and shown by `peek`),
 * never while the delivery is in flight.
 */
export const expiredError = (deliveries: number): string => EXPIRED_ERROR + deliveries;

/** Checks a store's `maxDeliveries` and `maxMessageBytes` options. */
export function checkStoreOptions(
  options: { maxDeliveries?: number; maxMessageBytes?: number },
): { maxDeliveries: number; maxMessageBytes: number } {
  return {
    maxDeliveries: checkInteger("maxDeliveries", options.maxDeliveries ?? 5, 1, 1_000_000),
    maxMessageBytes: checkInteger("maxMessageBytes", options.maxMessageBytes ?? 1_048_576, 2),
  };
}
