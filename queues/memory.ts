/**
 * Ephemeral queues in memory, for tests and examples: the contract of
 * {@linkcode QueueStore} (see `queues/queue.ts`) within one process, nothing durable.
 *
 * @module
 */
import { InvalidArgumentError } from "../core/errors.ts";
import { sleep } from "../core/tranches.ts";
import {
  checkDeliveries,
  checkDelivery,
  checkDequeue,
  checkLimit,
  checkMs,
  checkNack,
  checkPurge,
  checkQueueName,
  checkStoreOptions,
  type DeadLetter,
  type DequeueOptions,
  encodeBodies,
  type EnqueueOptions,
  expiredError,
  type NackOptions,
  type PeekedMessage,
  type PurgeDeadOptions,
  type QueueMessage,
  type QueueStats,
  type QueueStore,
} from "./queue.ts";

export type {
  DeadLetter,
  DequeueOptions,
  EnqueueOptions,
  NackOptions,
  PeekedMessage,
  PurgeDeadOptions,
  QueueMessage,
  QueueStats,
  QueueStore,
} from "./queue.ts";
export { queueConsumer } from "./consumer.ts";
export { ImpelError, InvalidArgumentError } from "../core/errors.ts";
export type { RetryOptions } from "../core/failure.ts";
export type { QueueConsumer, QueueConsumerOptions, QueueConsumerStats } from "./consumer.ts";

/**
 * Options of {@linkcode memoryQueues}.
 *
 * @example
 * ```ts
 * import { memoryQueues, type MemoryQueuesOptions } from "@impel/impel/queues/memory";
 * const options: MemoryQueuesOptions = { maxDeliveries: 3, now: () => Date.now() };
 * const queues = memoryQueues(options);
 * console.log(queues.maxDeliveries); // 3
 * ```
 *
 * @category Queues
 */
export interface MemoryQueuesOptions {
  /** Deliveries before a message is dead-lettered (default 5). */
  readonly maxDeliveries?: number;
  /** The largest body, in UTF-8 bytes of its JSON (default 1 MiB). */
  readonly maxMessageBytes?: number;
  /** The clock (default `Date.now`); tests can move it to expire visibility. */
  readonly now?: () => number;
}

interface Row {
  readonly id: bigint;
  readonly queue: string;
  readonly text: string;
  readonly enqueuedAt: number;
  visibleAt: number;
  deliveries: number;
  receipt: string | undefined;
  lastError: string | undefined;
}

interface Dead {
  readonly row: Row;
  readonly deadAt: number;
  readonly lastError: string;
}

/**
 * Creates an in-memory {@linkcode QueueStore}. Bodies are kept as JSON text, so a dequeued body
 * is a copy, as from PostgreSQL.
 *
 * @example
 * ```ts
 * import { memoryQueues } from "@impel/impel/queues/memory";
 * const queues = memoryQueues();
 * await queues.enqueue("emails", [{ to: "ada@example.com" }]);
 * const [m] = await queues.dequeue("emails", { visibilityTimeoutMs: 30_000 });
 * console.log(await queues.ack(m), await queues.ack(m)); // true false
 * ```
 *
 * @category Queues
 */
export function memoryQueues(options: MemoryQueuesOptions = {}): QueueStore {
  const { maxDeliveries, maxMessageBytes } = checkStoreOptions(options);
  const now = options.now ?? Date.now;
  if (typeof now !== "function") {
    throw new InvalidArgumentError("now", "must be a function returning ms since the epoch");
  }
  const queues = new Map<string, Map<bigint, Row>>();
  const dead = new Map<string, Dead[]>();
  const waiters = new Map<string, Set<() => void>>();
  // Wake-ups counted per queue, and the count each dequeue saw: a wait after an empty dequeue
  // returns at once if something was enqueued in between, instead of missing it.
  const wakes = new Map<string, number>();
  const seen = new Map<string, number>();
  let nextId = 1n;
  let nextReceipt = 1;

  const rowsOf = (queue: string) => {
    let rows = queues.get(queue);
    if (rows === undefined) queues.set(queue, rows = new Map());
    return rows;
  };
  const wake = (queue: string) => {
    wakes.set(queue, (wakes.get(queue) ?? 0) + 1);
    for (const fn of waiters.get(queue) ?? []) fn();
  };
  const held = (message: QueueMessage): Row | undefined => {
    checkDelivery(message);
    const row = queues.get(message.queue)?.get(BigInt(message.id));
    return row !== undefined && row.receipt === message.receipt ? row : undefined;
  };
  // A row still holding a receipt past its visibility: that delivery timed out. The expiry is
  // only known then, so it is recorded then (not written ahead at the delivery, which would
  // hide the real previous error while the message is in flight).
  const lastErrorOf = (row: Row, at: number): string | undefined =>
    row.receipt !== undefined && row.visibleAt <= at ? expiredError(row.deliveries) : row.lastError;
  const deliver = (row: Row, visibilityMs: number, at: number): QueueMessage => {
    const previous = row.lastError = lastErrorOf(row, at);
    row.deliveries++;
    row.receipt = `m${nextReceipt++}`;
    row.visibleAt = at + visibilityMs;
    return {
      id: String(row.id),
      queue: row.queue,
      body: JSON.parse(row.text),
      deliveries: row.deliveries,
      receipt: row.receipt,
      enqueuedAt: new Date(row.enqueuedAt),
      visibleUntil: new Date(row.visibleAt),
      ...(previous === undefined ? {} : { lastError: previous }),
    };
  };

  return {
    maxDeliveries,
    enqueue(queue: string, bodies: readonly unknown[], opts: EnqueueOptions = {}) {
      try {
        checkQueueName(queue);
        const texts = encodeBodies(bodies, maxMessageBytes);
        const delayMs = checkMs("delayMs", opts.delayMs ?? 0, 0);
        if (opts.client !== undefined) {
          throw new InvalidArgumentError(
            "client",
            "is for the PostgreSQL store: memory queues have no transactions",
          );
        }
        const rows = rowsOf(queue);
        const at = now();
        const ids = texts.map((text) => {
          const id = nextId++;
          rows.set(id, {
            id,
            queue,
            text,
            enqueuedAt: at,
            visibleAt: at + delayMs,
            deliveries: 0,
            receipt: undefined,
            lastError: undefined,
          });
          return String(id);
        });
        if (ids.length > 0 && delayMs === 0) wake(queue);
        return Promise.resolve(ids);
      } catch (error) {
        return Promise.reject(error);
      }
    },
    dequeue(queue: string, opts: DequeueOptions) {
      try {
        checkQueueName(queue);
        const { visibilityMs, max } = checkDequeue(opts);
        seen.set(queue, wakes.get(queue) ?? 0);
        const rows = queues.get(queue);
        if (rows === undefined) return Promise.resolve([]);
        const at = now();
        const visible = [...rows.values()].filter((r) => r.visibleAt <= at)
          .sort((a, b) => a.visibleAt - b.visibleAt || (a.id < b.id ? -1 : 1));
        const out: QueueMessage[] = [];
        for (const row of visible) {
          if (out.length === max) break;
          if (row.deliveries >= maxDeliveries) {
            rows.delete(row.id);
            let list = dead.get(queue);
            if (list === undefined) dead.set(queue, list = []);
            list.push({ row, deadAt: at, lastError: lastErrorOf(row, at) ?? "" });
            continue;
          }
          out.push(deliver(row, visibilityMs, at));
        }
        return Promise.resolve(out);
      } catch (error) {
        return Promise.reject(error);
      }
    },
    ack(message: QueueMessage) {
      try {
        const row = held(message);
        if (row === undefined) return Promise.resolve(false);
        queues.get(row.queue)!.delete(row.id);
        return Promise.resolve(true);
      } catch (error) {
        return Promise.reject(error);
      }
    },
    ackMany(messages: readonly QueueMessage[]) {
      try {
        return Promise.resolve(
          checkDeliveries(messages).map((m) => {
            const row = held(m);
            if (row !== undefined) queues.get(row.queue)!.delete(row.id);
            return row !== undefined;
          }),
        );
      } catch (error) {
        return Promise.reject(error);
      }
    },
    nack(message: QueueMessage, opts?: NackOptions) {
      try {
        const { delayMs, error } = checkNack(opts);
        const row = held(message);
        if (row === undefined) return Promise.resolve(false);
        row.receipt = undefined;
        row.lastError = error;
        row.visibleAt = now() + delayMs;
        if (delayMs === 0) wake(row.queue);
        return Promise.resolve(true);
      } catch (error) {
        return Promise.reject(error);
      }
    },
    extend(message: QueueMessage, visibilityTimeoutMs: number) {
      try {
        const ms = checkMs("visibilityTimeoutMs", visibilityTimeoutMs, 1);
        const row = held(message);
        if (row === undefined) return Promise.resolve(false);
        row.visibleAt = now() + ms;
        return Promise.resolve(true);
      } catch (error) {
        return Promise.reject(error);
      }
    },
    stats(queue: string) {
      try {
        checkQueueName(queue);
        const at = now();
        let ready = 0, inFlight = 0, delayed = 0;
        for (const row of queues.get(queue)?.values() ?? []) {
          if (row.visibleAt <= at) ready++;
          else if (row.receipt !== undefined) inFlight++;
          else delayed++;
        }
        const stats: QueueStats = { ready, inFlight, delayed, dead: dead.get(queue)?.length ?? 0 };
        return Promise.resolve(stats);
      } catch (error) {
        return Promise.reject(error);
      }
    },
    peek(queue: string, limit = 100) {
      try {
        checkQueueName(queue);
        checkLimit(limit);
        const at = now();
        const list = [...(queues.get(queue)?.values() ?? [])]
          .sort((a, b) => a.enqueuedAt - b.enqueuedAt || (a.id < b.id ? -1 : 1))
          .slice(0, limit)
          .map((row): PeekedMessage => {
            const lastError = lastErrorOf(row, at);
            return {
              id: String(row.id),
              queue,
              body: JSON.parse(row.text),
              state: row.visibleAt <= at
                ? "ready"
                : row.receipt !== undefined
                ? "inFlight"
                : "delayed",
              deliveries: row.deliveries,
              enqueuedAt: new Date(row.enqueuedAt),
              visibleAt: new Date(row.visibleAt),
              ...(lastError === undefined ? {} : { lastError }),
            };
          });
        return Promise.resolve(list);
      } catch (error) {
        return Promise.reject(error);
      }
    },
    deadLetters(queue: string, limit = 100) {
      try {
        checkQueueName(queue);
        checkLimit(limit);
        const list: DeadLetter[] = (dead.get(queue) ?? []).slice(0, limit).map((d) => ({
          id: String(d.row.id),
          queue,
          body: JSON.parse(d.row.text),
          deliveries: d.row.deliveries,
          enqueuedAt: new Date(d.row.enqueuedAt),
          deadAt: new Date(d.deadAt),
          lastError: d.lastError,
        }));
        return Promise.resolve(list);
      } catch (error) {
        return Promise.reject(error);
      }
    },
    requeueDead(queue: string, limit = 1000) {
      try {
        checkQueueName(queue);
        checkLimit(limit);
        const list = dead.get(queue) ?? [];
        const moved = list.splice(0, limit);
        const rows = rowsOf(queue);
        const at = now();
        for (const { row, lastError } of moved) {
          rows.set(row.id, {
            ...row,
            visibleAt: at,
            deliveries: 0,
            receipt: undefined,
            lastError,
          });
        }
        if (moved.length > 0) wake(queue);
        return Promise.resolve(moved.length);
      } catch (error) {
        return Promise.reject(error);
      }
    },
    purgeDead(queue: string, opts: PurgeDeadOptions) {
      try {
        checkQueueName(queue);
        const { olderThanMs, limit } = checkPurge(opts);
        const list = dead.get(queue) ?? [];
        const before = now() - olderThanMs;
        // Dead letters are kept in the order they died: the old ones are a prefix.
        let n = 0;
        while (n < list.length && n < limit && list[n].deadAt <= before) n++;
        list.splice(0, n);
        return Promise.resolve(n);
      } catch (error) {
        return Promise.reject(error);
      }
    },
    async wait(queue: string, timeoutMs: number, signal?: AbortSignal) {
      checkQueueName(queue);
      checkMs("timeoutMs", timeoutMs, 0);
      const woken = wakes.get(queue) ?? 0;
      if (woken !== (seen.get(queue) ?? 0)) return void seen.set(queue, woken);
      const inner = new AbortController();
      const onAbort = () => inner.abort();
      signal?.addEventListener("abort", onAbort, { once: true });
      if (signal?.aborted) inner.abort();
      let set = waiters.get(queue);
      if (set === undefined) waiters.set(queue, set = new Set());
      set.add(onAbort);
      try {
        await sleep(timeoutMs, inner.signal);
      } finally {
        set.delete(onAbort);
        if (set.size === 0) waiters.delete(queue);
        signal?.removeEventListener("abort", onAbort);
      }
    },
  };
}
