/**
 * What the delivery handler reads: a feed of a category or of one stream, in position order,
 * through the stores' own read APIs (the memory store's log, MessageDB's
 * `get_category_messages` and `get_stream_messages`). A position is the store's: the memory
 * log's index, MessageDB's global position for a category, the event's index for a stream. A
 * subscriber resumes from the position after the last one it received.
 *
 * @module
 */
import type { Position } from "../core/batch.ts";
import type { StreamEvent } from "../core/event.ts";
import { sleep } from "../core/tranches.ts";
import type { MemoryStore } from "../sources/memory.ts";
import { MESSAGE_COLUMNS, messageRowToEvent } from "../stores/messagedb.ts";
import { type NotificationSource, type SqlClient, toBigInt } from "../stores/sql.ts";

/**
 * What a subscription reads: every stream of a category, or one stream.
 *
 * @example
 * ```ts
 * import type { FeedScope } from "@impel/impel/delivery";
 * const orders: FeedScope = { kind: "category", name: "Order" };
 * const one: FeedScope = { kind: "stream", name: "Order-17" };
 * ```
 *
 * @category Delivery
 */
export interface FeedScope {
  /** A category (every stream `name-…`) or one stream. */
  readonly kind: "category" | "stream";
  /** The category or the stream's name. */
  readonly name: string;
}

/**
 * One event read from a feed, at its position.
 *
 * @example
 * ```ts
 * import type { FeedEvent } from "@impel/impel/delivery";
 * const e: FeedEvent = {
 *   position: 7n,
 *   stream: "Order-1",
 *   event: { index: 0, type: "Placed", data: {}, meta: null, id: "a", time: new Date(), size: 2 },
 * };
 * ```
 *
 * @category Delivery
 */
export interface FeedEvent {
  /** The event's position in the feed (resume from `position + 1n`). */
  readonly position: Position;
  /** The stream it belongs to. */
  readonly stream: string;
  /** The event. */
  readonly event: StreamEvent;
}

/**
 * A page read from a feed.
 *
 * @example
 * ```ts
 * import type { FeedPage } from "@impel/impel/delivery";
 * const empty: FeedPage = { events: [], next: 10n };
 * ```
 *
 * @category Delivery
 */
export interface FeedPage {
  /** The events, in position order. */
  readonly events: readonly FeedEvent[];
  /** Where the next read starts (past what was looked at, even if nothing matched). */
  readonly next: Position;
}

/**
 * The read side the delivery handler needs.
 *
 * @example
 * ```ts
 * import { memoryFeed } from "@impel/impel/delivery";
 * import { createMemoryStore } from "@impel/impel/sources/memory";
 * const store = createMemoryStore();
 * await store.append("Order-1", [{ type: "Placed", data: {} }], 0);
 * const feed = memoryFeed(store);
 * const page = await feed.read({ kind: "category", name: "Order" }, 0n, 100);
 * console.log(page.events.length, page.next); // 1 1n
 * ```
 *
 * @category Delivery
 */
export interface DeliveryFeed {
  /** Reads at most `max` events of `scope` from position `from` (inclusive). */
  read(scope: FeedScope, from: Position, max: number): Promise<FeedPage>;
  /** The position the next event of `scope` will have (where "from now" starts). */
  head(scope: FeedScope): Promise<Position>;
  /**
   * Resolves when something may have been appended, after `timeoutMs` otherwise, or at once
   * when `signal` aborts; spurious wake-ups are allowed.
   */
  changed(timeoutMs: number, signal: AbortSignal): Promise<void>;
  /** The first position there is (memory: 0, MessageDB: 1 for a category). */
  readonly first: (scope: FeedScope) => Position;
}

/** Resolves on the next `subscribe` call of a store-like notifier, or the timeout or abort. */
function waitFor(
  subscribe: (listener: () => void) => () => void,
  timeoutMs: number,
  signal: AbortSignal,
): Promise<void> {
  return new Promise<void>((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      unsubscribe();
      signal.removeEventListener("abort", done);
      resolve();
    };
    const unsubscribe = subscribe(done);
    const timer = setTimeout(done, timeoutMs);
    signal.addEventListener("abort", done, { once: true });
  });
}

/**
 * A feed over a {@linkcode MemoryStore}: a category is read from the global log (position: the
 * log's index), a stream through `readStream` (position: the event's index).
 *
 * @example
 * ```ts
 * import { memoryFeed } from "@impel/impel/delivery";
 * import { createMemoryStore } from "@impel/impel/sources/memory";
 * const store = createMemoryStore();
 * const feed = memoryFeed(store);
 * await store.append("Order-1", [{ type: "Placed", data: {} }], 0);
 * console.log(await feed.head({ kind: "stream", name: "Order-1" })); // 1n
 * ```
 *
 * @category Delivery
 */
export function memoryFeed(store: MemoryStore): DeliveryFeed {
  // Scanning a sparse category stops after this many log entries, so one read stays short.
  const SCAN = 10_000;
  return {
    first: () => 0n,
    async read(scope, from, max) {
      if (scope.kind === "stream") {
        const events = await store.readStream(scope.name, {
          fromIndex: Number(from),
          maxCount: max,
        });
        return {
          events: events.map((event) => ({
            position: BigInt(event.index),
            stream: scope.name,
            event,
          })),
          next: from + BigInt(events.length),
        };
      }
      const start = Number(from);
      const end = Math.min(store.head, start + SCAN);
      const entries = store.readLog(start, end);
      const events: FeedEvent[] = [];
      let i = 0;
      for (; i < entries.length && events.length < max; i++) {
        const entry = entries[i];
        if (entry.category !== scope.name) continue;
        events.push({ position: BigInt(start + i), stream: entry.stream, event: entry.event });
      }
      return { events, next: BigInt(start + i) };
    },
    async head(scope) {
      if (scope.kind === "category") return BigInt(store.head);
      const last = await store.readLastEvent(scope.name);
      return last === undefined ? 0n : BigInt(last.index + 1);
    },
    changed: (timeoutMs, signal) => waitFor(store.subscribe, timeoutMs, signal),
  };
}

/**
 * Options of {@linkcode messageDbFeed}.
 *
 * @example
 * ```ts
 * import type { MessageDbFeedOptions } from "@impel/impel/delivery";
 * const options: MessageDbFeedOptions = { pollMs: 250 };
 * ```
 *
 * @category Delivery
 */
export interface MessageDbFeedOptions {
  /**
   * Notifications of appends (the NOTIFY trigger of `installNotifyTrigger`); without them the
   * feed polls every `pollMs`.
   */
  readonly notifications?: NotificationSource;
  /** The NOTIFY channel (default `impel_messagedb`, the trigger's). */
  readonly channel?: string;
  /** How long a subscriber at the tail waits between reads without notifications (default 200 ms). */
  readonly pollMs?: number;
}

/**
 * A feed over a MessageDB database: a category through `get_category_messages` (position: the
 * global position), a stream through `get_stream_messages` (position: the event's index).
 *
 * @example
 * ```ts ignore
 * import pg from "pg";
 * import { messageDbFeed } from "@impel/impel/delivery";
 * const pool = new pg.Pool({ connectionString: Deno.env.get("IMPEL_PG_URL") });
 * const feed = messageDbFeed(pool);
 * console.log(await feed.head({ kind: "category", name: "Order" }));
 * ```
 *
 * @category Delivery
 */
export function messageDbFeed(client: SqlClient, options: MessageDbFeedOptions = {}): DeliveryFeed {
  const pollMs = options.pollMs ?? 200;
  const listeners = new Set<() => void>();
  let listening: Promise<unknown> | undefined;
  const subscribe = (listener: () => void) => {
    listeners.add(listener);
    if (options.notifications !== undefined && listening === undefined) {
      // One LISTEN for the feed's lifetime, shared by every subscriber.
      listening = options.notifications.listen(
        options.channel ?? "impel_messagedb",
        () => [...listeners].forEach((l) => l()),
      ).catch(() => undefined);
    }
    return () => void listeners.delete(listener);
  };
  const categoryText = `SELECT ${MESSAGE_COLUMNS}
    FROM message_store.get_category_messages($1, $2::bigint, $3)`;
  const streamText = `SELECT ${MESSAGE_COLUMNS}
    FROM message_store.get_stream_messages($1, $2::bigint, $3)`;
  return {
    first: (scope) => scope.kind === "category" ? 1n : 0n,
    async read(scope, from, max) {
      const { rows } = await client.query(scope.kind === "category" ? categoryText : streamText, [
        scope.name,
        from.toString(),
        max,
      ]);
      const events = rows.map((row): FeedEvent => {
        const event = messageRowToEvent(row);
        return {
          position: scope.kind === "category" ? toBigInt(row.global_position) : BigInt(event.index),
          stream: row.stream_name as string,
          event,
        };
      });
      return { events, next: events.length > 0 ? events[events.length - 1].position + 1n : from };
    },
    async head(scope) {
      if (scope.kind === "stream") {
        const { rows } = await client.query(
          "SELECT coalesce(message_store.stream_version($1), -1)::text AS v",
          [scope.name],
        );
        return toBigInt(rows[0].v) + 1n;
      }
      const { rows } = await client.query(
        "SELECT coalesce(max(global_position), 0)::text AS last FROM message_store.messages",
        [],
      );
      return toBigInt(rows[0].last) + 1n;
    },
    changed: (timeoutMs, signal) =>
      options.notifications === undefined
        ? sleep(Math.min(timeoutMs, pollMs), signal).then(() => undefined)
        : waitFor(subscribe, timeoutMs, signal),
  };
}
