/**
 * The delivery handler: streams of events to remote clients over plain HTTP (Server-Sent Events,
 * NDJSON or one JSON page) and queue consumption (receive with a visibility timeout, ack and nack
 * by id), each behind a bearer token per scope. It is a `(Request) => Promise<Response>` like the
 * management handler, so it mounts in `Deno.serve`, `Bun.serve` or a framework route, beside it.
 *
 * Backpressure: a subscription's body is a pull stream. The store is read one page at a time,
 * only when the server has taken the last page from the body, which it does only as the socket
 * drains; a client that stops reading stops the reads, so the server holds at most a page and
 * the socket's buffers for it, whatever is appended meanwhile.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { Position } from "../core/batch.ts";
import { checkInteger, describe, ImpelError, InvalidArgumentError } from "../core/errors.ts";
import { errorText } from "../core/failure.ts";
import { readBodyText, sameSecret } from "../core/http.ts";
import { sleep } from "../core/tranches.ts";
import type { QueueMessage, QueueStore } from "../queues/queue.ts";
import type { DeliveryFeed, FeedEvent, FeedScope } from "./feeds.ts";

const log = getLogger(["impel", "delivery"]);

export * from "./feeds.ts";
export type { QueueMessage, QueueStore } from "../queues/queue.ts";
export type { Position } from "../core/batch.ts";
export type { StreamEvent } from "../core/event.ts";
export type { MemoryStore } from "../sources/memory.ts";
export type { NotificationSource, SqlClient, SqlRow } from "../stores/sql.ts";

/**
 * Options of {@linkcode createDeliveryHandler}.
 *
 * @example
 * ```ts
 * import { createDeliveryHandler, type DeliveryHandlerOptions, memoryFeed } from "@impel/impel/delivery";
 * import { createMemoryStore } from "@impel/impel/sources/memory";
 * const options: DeliveryHandlerOptions = {
 *   feed: memoryFeed(createMemoryStore()),
 *   tokens: { "reader-token-0123456789": ["read:Order"] },
 *   heartbeatMs: 10_000,
 * };
 * const handler = createDeliveryHandler(options);
 * ```
 *
 * @category Delivery
 */
export interface DeliveryHandlerOptions {
  /** Where `GET /streams/…` reads (none: those routes answer 404). */
  readonly feed?: DeliveryFeed;
  /** The queues `POST /queues/…` serves (none: those routes answer 404). */
  readonly queues?: QueueStore;
  /**
   * Each token (at least 16 characters) with the scopes it grants: `read:<category>` (the
   * category and its streams), `consume:<queue>`, or `read:*` / `consume:*` for all.
   */
  readonly tokens: Readonly<Record<string, readonly string[]>>;
  /** A prefix the routes live under (default none), e.g. `/impel`. */
  readonly basePath?: string;
  /** A heartbeat after this long without events (default 15 000 ms). */
  readonly heartbeatMs?: number;
  /** Events read from the store per page (default 500, at most 10 000). */
  readonly pageSize?: number;
  /** The SSE `retry:` a browser waits before reconnecting (default 1 000 ms). */
  readonly retryMs?: number;
  /**
   * Subscriptions (SSE and NDJSON) open at once (default 1 000); past it a new one is refused
   * with 503 `TooManyClients` and `Retry-After: 10`. JSON pages do not count.
   */
  readonly maxClients?: number;
  /**
   * A subscriber that has not taken anything the server sent for this long is dropped (default
   * 60 000 ms): its store reads stop, a warning names it, and it is sent a `ClientTooSlow` error
   * (an SSE `event: error` or an NDJSON line) before the close if it reads again within a second;
   * else the connection is cut. A client that resumes later reconnects from its last position.
   */
  readonly stallTimeoutMs?: number;
}

/**
 * An event as delivered: JSON, with the position as a decimal string.
 *
 * @example
 * ```ts
 * import type { DeliveredEvent } from "@impel/impel/delivery";
 * const e: DeliveredEvent = {
 *   position: "41", stream: "Order-1", index: 0, type: "Placed", id: "6f1c…",
 *   time: "2026-01-01T00:00:00.000Z", data: { total: 3 }, meta: null,
 * };
 * ```
 *
 * @category Delivery
 */
export interface DeliveredEvent {
  /** The position in the feed; the SSE `id`, and what `Last-Event-ID` resumes after. */
  readonly position: string;
  /** The stream. */
  readonly stream: string;
  /** The event's index in its stream. */
  readonly index: number;
  /** The event type. */
  readonly type: string;
  /** The event's id. */
  readonly id: string;
  /** When it was stored (ISO 8601). */
  readonly time: string;
  /** The body. */
  readonly data: unknown;
  /** The metadata. */
  readonly meta: unknown;
  /** The correlation id, if any. */
  readonly correlationId?: string;
  /** The causation id, if any. */
  readonly causationId?: string;
}

/**
 * A request the delivery handler refused: `status` is the HTTP status, `code` and `message`
 * the JSON body's `error.code` and `error.message`.
 *
 * @example
 * ```ts
 * import { DeliveryRequestError } from "@impel/impel/delivery";
 * const e = new DeliveryRequestError(401, "MissingToken", "send Authorization: Bearer <token>");
 * console.log(e.status, e.code); // 401 "MissingToken"
 * ```
 *
 * @category Delivery
 */
export class DeliveryRequestError extends ImpelError {
  /** The HTTP status. */
  readonly status: number;
  /** Headers the refusal carries (`Retry-After` of a 503). */
  readonly headers: Readonly<Record<string, string>>;
  /** Creates the error. */
  constructor(status: number, code: string, message: string, headers: Record<string, string> = {}) {
    super(code, message);
    this.status = status;
    this.headers = headers;
  }
}

/**
 * A delivery request handler.
 *
 * @example
 * ```ts
 * import type { DeliveryHandler } from "@impel/impel/delivery";
 * const notFound: DeliveryHandler = () => Promise.resolve(new Response(null, { status: 404 }));
 * ```
 *
 * @category Delivery
 */
export type DeliveryHandler = (request: Request) => Promise<Response>;

const JSON_HEADERS = {
  "content-type": "application/json; charset=utf-8",
  "cache-control": "no-store",
};
const MAX_BODY = 256 * 1024;
/** The most bytes of a page handed to the server at once (see `rest` in the stream). */
const PIECE = 64 * 1024;

/** The wire form of a feed event. */
export function deliveredEvent(e: FeedEvent): DeliveredEvent {
  const { event } = e;
  return {
    position: e.position.toString(),
    stream: e.stream,
    index: event.index,
    type: event.type,
    id: event.id,
    time: event.time.toISOString(),
    data: event.data,
    meta: event.meta,
    ...(event.correlationId === undefined ? {} : { correlationId: event.correlationId }),
    ...(event.causationId === undefined ? {} : { causationId: event.causationId }),
  };
}

function fail(
  status: number,
  code: string,
  message: string,
  headers?: Record<string, string>,
): never {
  throw new DeliveryRequestError(status, code, message, headers);
}

function position(field: string, text: string): Position {
  if (!/^(0|[1-9][0-9]{0,18})$/.test(text)) {
    fail(
      400,
      "BadPosition",
      `${field} must be a non-negative integer, got ${JSON.stringify(text)}`,
    );
  }
  return BigInt(text);
}

/**
 * Creates the delivery handler: `GET {basePath}/streams/{category or stream}` and
 * `POST {basePath}/queues/{queue}/receive|ack|nack`.
 *
 * Subscriptions: `?format=sse|ndjson|json` (or the `Accept` header: `text/event-stream`,
 * `application/x-ndjson`, `application/json`; default NDJSON); `?from=<position>|start|now`
 * (default `start`) or `Last-Event-ID` (resumes after it); `?types=A,B` keeps those event types;
 * `?limit=N` (json only) the most events of the page. The token comes as
 * `Authorization: Bearer <token>` or `?token=` (for `EventSource`, which cannot set headers).
 * Refusals are JSON `{ error: { code, message } }`, the management handler's shape: 400 bad
 * position or parameter, 401 no or unknown token, 403 a token without the scope, 404 unknown
 * route, 413 a body past 256 KiB. A read failing mid-subscription ends it with the same object
 * as its last line (NDJSON) or an `event: error` (SSE).
 *
 * @example
 * ```ts
 * import { createDeliveryHandler, memoryFeed } from "@impel/impel/delivery";
 * import { createMemoryStore } from "@impel/impel/sources/memory";
 * const store = createMemoryStore();
 * await store.append("Order-1", [{ type: "Placed", data: { total: 3 } }], 0);
 * const handler = createDeliveryHandler({
 *   feed: memoryFeed(store),
 *   tokens: { "reader-token-0123456789": ["read:Order"] },
 * });
 * // Deno.serve({ hostname: "127.0.0.1", port: 8080 }, handler), or Bun.serve({ fetch: handler })
 * const response = await handler(
 *   new Request("http://localhost/streams/Order?format=json", {
 *     headers: { authorization: "Bearer reader-token-0123456789" },
 *   }),
 * );
 * const page = await response.json();
 * console.log(page.events[0].type, page.next); // "Placed" "1"
 * ```
 *
 * @category Delivery
 */
export function createDeliveryHandler(options: DeliveryHandlerOptions): DeliveryHandler {
  const tokens: Array<readonly [string, readonly string[]]> = [];
  if (options.tokens === null || typeof options.tokens !== "object") {
    throw new InvalidArgumentError(
      "tokens",
      `must be an object of token: scopes, got ${describe(options.tokens)}`,
    );
  }
  for (const [token, scopes] of Object.entries(options.tokens)) {
    if (token.length < 16) {
      throw new InvalidArgumentError("tokens", "must have tokens of at least 16 characters");
    }
    if (!Array.isArray(scopes) || scopes.some((s) => !/^(read|consume):.+$/.test(s))) {
      throw new InvalidArgumentError(
        `tokens scopes`,
        `must be arrays of "read:<category>" or "consume:<queue>", got ${describe(scopes)}`,
      );
    }
    tokens.push([token, scopes]);
  }
  const basePath = options.basePath ?? "";
  if (typeof basePath !== "string" || !/^(\/[^/]+)*$/.test(basePath)) {
    throw new InvalidArgumentError(
      "basePath",
      `must be empty or start with / and not end with /, got ${describe(basePath)}`,
    );
  }
  const heartbeatMs = checkInteger("heartbeatMs", options.heartbeatMs ?? 15_000, 1, 2 ** 31 - 1);
  const pageSize = checkInteger("pageSize", options.pageSize ?? 500, 1, 10_000);
  const retryMs = checkInteger("retryMs", options.retryMs ?? 1_000, 0, 2 ** 31 - 1);
  const maxClients = checkInteger("maxClients", options.maxClients ?? 1_000, 1, 1_000_000);
  const stallTimeoutMs = checkInteger(
    "stallTimeoutMs",
    options.stallTimeoutMs ?? 60_000,
    1,
    2 ** 31 - 1,
  );
  // Open subscriptions: a slot is taken before the first await, so that subscribers arriving
  // together cannot pass maxClients together.
  let clients = 0;
  const encoder = new TextEncoder();

  const authorize = async (request: Request, url: URL, scope: string) => {
    const header = request.headers.get("authorization");
    let token: string | null = null;
    if (header !== null) {
      const match = /^Bearer\s+(\S+)$/i.exec(header);
      if (match === null) fail(401, "BadToken", "the Authorization header must be Bearer <token>");
      token = match[1];
    } else token = url.searchParams.get("token");
    if (token === null || token === "") {
      fail(
        401,
        "MissingToken",
        `no token: send Authorization: Bearer <token> or ?token= (scope ${scope})`,
      );
    }
    // Compared as secrets, against every token (no early exit), as the management handler
    // does: how long a refusal takes says nothing about how close the token was.
    let scopes: readonly string[] | undefined;
    for (const [known, granted] of tokens) {
      if (await sameSecret(token, known)) scopes = granted;
    }
    if (scopes === undefined) fail(401, "InvalidToken", "the token is not known");
    const [kind] = scope.split(":");
    if (!scopes.includes(scope) && !scopes.includes(`${kind}:*`)) {
      fail(403, "NotInScope", `the token does not grant ${scope}`);
    }
  };

  const subscription = async (request: Request, url: URL, name: string): Promise<Response> => {
    if (options.feed === undefined) fail(404, "NotFound", "no feed is served here");
    const dash = name.indexOf("-");
    if (name === "" || dash === 0 || dash === name.length - 1) {
      fail(400, "BadStreamName", `${JSON.stringify(name)} is neither a category nor a stream name`);
    }
    const scope: FeedScope = dash < 0 ? { kind: "category", name } : { kind: "stream", name };
    await authorize(request, url, `read:${dash < 0 ? name : name.slice(0, dash)}`);
    const accept = request.headers.get("accept") ?? "";
    const format = url.searchParams.get("format") ??
      (accept.includes("text/event-stream")
        ? "sse"
        : accept.includes("application/json")
        ? "json"
        : "ndjson");
    if (format !== "sse" && format !== "ndjson" && format !== "json") {
      fail(400, "BadFormat", `format must be sse, ndjson or json, got ${JSON.stringify(format)}`);
    }
    const typesText = url.searchParams.get("types");
    const types = typesText === null
      ? undefined
      : new Set(typesText.split(",").filter((t) => t !== ""));
    if (types !== undefined && types.size === 0) {
      fail(400, "BadTypes", "types must name at least one event type");
    }
    const limitText = url.searchParams.get("limit");
    const limit = limitText === null ? pageSize : Number(position("limit", limitText));
    if (limit < 1 || limit > 10_000) {
      fail(400, "BadLimit", `limit must be in [1, 10000], got ${limit}`);
    }

    if (format === "json") return await page(scope, url, request, limit, types);
    if (clients >= maxClients) {
      fail(
        503,
        "TooManyClients",
        `${clients} subscriptions are open (maxClients ${maxClients}); retry later, or read JSON pages`,
        { "retry-after": "10" },
      );
    }
    clients++;
    let released = false;
    const release = () => {
      if (!released) clients--;
      released = true;
    };
    try {
      return await stream(scope, url, request, format === "sse", types, release);
    } catch (error) {
      release();
      throw error;
    }
  };

  /** Where a request starts reading: `Last-Event-ID`, `from`, or the first position. */
  const start = async (scope: FeedScope, url: URL, request: Request) => {
    const feed = options.feed!;
    const head = await feed.head(scope);
    const first = feed.first(scope);
    const lastId = request.headers.get("last-event-id") ?? url.searchParams.get("lastEventId");
    const fromText = url.searchParams.get("from");
    let from: Position;
    if (lastId !== null && lastId !== "") {
      // "-1" is what an SSE stream that opened before position 0 names (see the opening chunk).
      from = lastId === "-1" ? 0n : position("Last-Event-ID", lastId) + 1n;
      if (from < first) {
        fail(400, "BadPosition", `Last-Event-ID ${lastId} is before the first position ${first}`);
      }
    } else if (fromText === null || fromText === "start") from = first;
    else if (fromText === "now") from = head;
    else {
      from = position("from", fromText);
      if (from < first) {
        fail(400, "BadPosition", `from ${from} is before the first position ${first}`);
      }
    }
    // A position past the head would skip whatever is appended up to it.
    if (from > head) {
      fail(
        400,
        "PositionPastHead",
        `position ${from} is past the head of ${scope.name} (${head}): nothing is there yet`,
      );
    }
    return { from, head };
  };

  const keeper = (types: ReadonlySet<string> | undefined) => (e: FeedEvent) =>
    types === undefined || types.has(e.event.type);

  const page = async (
    scope: FeedScope,
    url: URL,
    request: Request,
    limit: number,
    types: ReadonlySet<string> | undefined,
  ): Promise<Response> => {
    const feed = options.feed!;
    const { from, head } = await start(scope, url, request);
    const read = await feed.read(scope, from, limit);
    return new Response(
      JSON.stringify({
        events: read.events.filter(keeper(types)).map(deliveredEvent),
        next: read.next.toString(),
        tail: read.next >= head && read.events.length < limit,
      }),
      { headers: JSON_HEADERS },
    );
  };

  const stream = async (
    scope: FeedScope,
    url: URL,
    request: Request,
    sse: boolean,
    types: ReadonlySet<string> | undefined,
    release: () => void,
  ): Promise<Response> => {
    const feed = options.feed!;
    const { from } = await start(scope, url, request);
    const keep = keeper(types);
    const encode = (events: readonly FeedEvent[]) => {
      let text = "";
      for (const e of events) {
        const json = JSON.stringify(deliveredEvent(e));
        text += sse ? `id: ${e.position}\ndata: ${json}\n\n` : json + "\n";
      }
      return encoder.encode(text);
    };
    const heartbeat = () =>
      encoder.encode(sse ? ": heartbeat\n\n" : `{"heartbeat":"${new Date().toISOString()}"}\n`);
    const frame = (code: string, message: string) => {
      const reason = JSON.stringify({ error: { code, message } });
      return encoder.encode(sse ? `event: error\ndata: ${reason}\n\n` : reason + "\n");
    };
    // Only a cancel of the body ends the reads: Deno aborts request.signal once the response is
    // returned (its legacy behaviour), long before a subscription ends.
    const ac = new AbortController();
    let next = from;
    // Armed whenever something is queued for the server to take; the server takes a chunk only
    // as the socket drains, so a client that stops reading leaves it there until this fires.
    let stall: ReturnType<typeof setTimeout> | undefined;
    let dropping: ReturnType<typeof setTimeout> | undefined;
    const end = () => {
      clearTimeout(stall);
      clearTimeout(dropping);
      ac.abort();
      release();
    };
    // What of the last page the server has not taken yet. A page goes out in pieces of at most
    // PIECE bytes, one per pull, so that the stall timer measures the time between pieces: a
    // client that reads slowly but steadily keeps taking them, however long a whole page (up
    // to pageSize large events) takes to drain.
    let rest: Uint8Array | undefined;
    // A piece ends with a whole event (an SSE event ends "\n\n"; JSON has no raw newlines), so a
    // drop's error frame never lands inside one; an event past PIECE goes whole.
    const isEnd = (chunk: Uint8Array, i: number) => !sse || chunk[i - 1] === 10;
    const cutAt = (chunk: Uint8Array) => {
      for (let i = chunk.lastIndexOf(10, PIECE - 1); i > 0; i = chunk.lastIndexOf(10, i - 1)) {
        if (isEnd(chunk, i)) return i + 1;
      }
      for (let i = chunk.indexOf(10, PIECE); i >= 0; i = chunk.indexOf(10, i + 1)) {
        if (isEnd(chunk, i)) return i + 1;
      }
      return chunk.length;
    };
    const send = (controller: ReadableStreamDefaultController<Uint8Array>, chunk: Uint8Array) => {
      const cut = chunk.length > PIECE ? cutAt(chunk) : chunk.length;
      rest = cut < chunk.length ? chunk.subarray(cut) : undefined;
      // A copy, not a view: Deno's server takes a chunk's buffer over (detaching the rest).
      controller.enqueue(cut < chunk.length ? chunk.slice(0, cut) : chunk);
      stall = setTimeout(() => drop(controller), stallTimeoutMs);
    };
    const drop = (controller: ReadableStreamDefaultController<Uint8Array>) => {
      const message = `the client read nothing for ${stallTimeoutMs} ms (stallTimeoutMs): ` +
        `dropped at position ${next}; reconnect to resume`;
      log.warning(
        "dropped a subscriber of {kind} {name} ({format}) that read nothing for {ms} ms, at position {next}",
        {
          kind: scope.kind,
          name: scope.name,
          format: sse ? "sse" : "ndjson",
          ms: stallTimeoutMs,
          next,
        },
      );
      end();
      // The reason reaches a client that reads again within a second (the server then asks for
      // more: see pull); otherwise erroring the body drops what it queues and cuts the socket.
      controller.enqueue(frame("ClientTooSlow", message));
      dropping = setTimeout(() => controller.error(new Error(message)), 1_000);
    };
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        // Both open with where they start, so that a client that started "now" and loses the
        // connection before any event resumes from there, not from a later "now": an SSE `id`
        // with no data sets the browser's Last-Event-ID without dispatching an event.
        send(
          controller,
          encoder.encode(
            sse
              ? `retry: ${retryMs}\nid: ${from - 1n}\n\n`
              : `{"heartbeat":"${new Date().toISOString()}","next":"${from}"}\n`,
          ),
        );
      },
      // Called only when the body's queue is empty: the read of the next page waits for the
      // server to have taken the last one.
      async pull(controller) {
        clearTimeout(stall);
        if (dropping !== undefined) {
          // Dropped, and the reason has been taken: close after it.
          clearTimeout(dropping);
          return controller.close();
        }
        if (rest !== undefined) return send(controller, rest);
        const deadline = Date.now() + heartbeatMs;
        try {
          while (!ac.signal.aborted) {
            const page = await feed.read(scope, next, pageSize);
            const moved = page.next !== next;
            next = page.next;
            const kept = page.events.filter(keep);
            if (kept.length > 0) return send(controller, encode(kept));
            const left = deadline - Date.now();
            if (left <= 0) return send(controller, heartbeat());
            if (!moved) await feed.changed(left, ac.signal);
            // A page that moved past events of other categories (or types) only: yield before
            // the next, so catching up through a sparse category costs one page per turn of
            // the event loop (the memory feed's reads do not wait on I/O: chained, 2M other
            // events held it ~100 ms per subscriber).
            else await sleep(0, ac.signal);
          }
        } catch (error) {
          if (ac.signal.aborted) return;
          // The client resumes from the last position it has; the reason goes with the close.
          end();
          controller.enqueue(frame("ReadFailed", errorText(error)));
          controller.close();
        }
      },
      cancel() {
        end();
      },
    }, { highWaterMark: 1 });
    return new Response(body, {
      headers: {
        "content-type": sse
          ? "text/event-stream; charset=utf-8"
          : "application/x-ndjson; charset=utf-8",
        "cache-control": "no-store",
        "x-accel-buffering": "no",
      },
    });
  };

  const readBody = async (request: Request): Promise<Record<string, unknown>> => {
    // Bytes, not characters, and no further than the limit: a large body is never held whole.
    const text = await readBodyText(request, MAX_BODY, fail, {
      tooLarge: "BodyTooLarge",
      notText: "BadBody",
    });
    if (text === "") return {};
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      fail(400, "BadBody", "the body must be JSON");
    }
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      fail(400, "BadBody", "the body must be a JSON object");
    }
    return value as Record<string, unknown>;
  };

  // An ack or nack names a delivery by id and receipt (the receipt proves the delivery is the
  // caller's: a message redelivered to someone else after its visibility has a new one).
  const delivery = (queue: string, value: unknown, field: string): QueueMessage => {
    const v = value as { id?: unknown; receipt?: unknown } | null;
    if (
      v === null || typeof v !== "object" || typeof v.id !== "string" ||
      typeof v.receipt !== "string"
    ) {
      fail(
        400,
        "BadDelivery",
        `${field} must be { id, receipt } strings from a receive, got ${describe(value)}`,
      );
    }
    return { id: v.id, receipt: v.receipt, queue } as QueueMessage;
  };

  const queueCall = async (
    request: Request,
    url: URL,
    queue: string,
    action: string,
  ): Promise<Response> => {
    const queues = options.queues ?? fail(404, "NotFound", "no queues are served here");
    if (request.method !== "POST") fail(405, "MethodNotAllowed", "queue calls are POST");
    await authorize(request, url, `consume:${queue}`);
    const body = await readBody(request);
    const ok = (value: unknown) => new Response(JSON.stringify(value), { headers: JSON_HEADERS });
    try {
      if (action === "receive") {
        const visibilityTimeoutMs = body.visibilityTimeoutMs ?? 30_000;
        const max = body.max ?? 1;
        const waitMs = checkInteger("waitMs", body.waitMs ?? 0, 0, 60_000);
        let messages = await queues.dequeue(queue, {
          visibilityTimeoutMs: visibilityTimeoutMs as number,
          max: max as number,
        });
        if (messages.length === 0 && waitMs > 0) {
          await queues.wait(queue, waitMs, request.signal);
          messages = await queues.dequeue(queue, {
            visibilityTimeoutMs: visibilityTimeoutMs as number,
            max: max as number,
          });
        }
        return ok({
          messages: messages.map((m) => ({
            id: m.id,
            receipt: m.receipt,
            body: m.body,
            deliveries: m.deliveries,
            enqueuedAt: m.enqueuedAt.toISOString(),
            visibleUntil: m.visibleUntil.toISOString(),
            ...(m.lastError === undefined ? {} : { lastError: m.lastError }),
          })),
        });
      }
      if (action === "ack") {
        if (
          !Array.isArray(body.messages) || body.messages.length === 0 || body.messages.length > 1000
        ) {
          fail(400, "BadDelivery", "messages must be an array of 1 to 1000 { id, receipt }");
        }
        const messages = body.messages.map((m, i) => delivery(queue, m, `messages[${i}]`));
        return ok({ acked: await queues.ackMany(messages) });
      }
      if (action === "nack") {
        const message = delivery(queue, body, "the body");
        const nacked = await queues.nack(message, {
          delayMs: body.delayMs as number | undefined,
          error: body.error as string | undefined,
        });
        return ok({ nacked });
      }
    } catch (error) {
      if (error instanceof InvalidArgumentError) fail(400, "InvalidArgument", error.message);
      throw error;
    }
    fail(404, "NotFound", `no queue action ${JSON.stringify(action)}: receive, ack or nack`);
  };

  return async (request: Request): Promise<Response> => {
    try {
      const url = new URL(request.url);
      if (!url.pathname.startsWith(basePath + "/")) {
        fail(404, "NotFound", `no route ${url.pathname}`);
      }
      const parts = url.pathname.slice(basePath.length + 1).split("/").map((part) => {
        try {
          return decodeURIComponent(part);
        } catch {
          return fail(400, "BadPath", `${url.pathname} is not a valid percent-encoded path`);
        }
      });
      if (parts[0] === "streams" && parts.length === 2) {
        if (request.method !== "GET") fail(405, "MethodNotAllowed", "subscriptions are GET");
        return await subscription(request, url, parts[1]);
      }
      if (parts[0] === "queues" && parts.length === 3) {
        return await queueCall(request, url, parts[1], parts[2]);
      }
      fail(404, "NotFound", `no route ${url.pathname}`);
    } catch (error) {
      // The management handler's shape, { error: { code, message } }: one parser for both.
      const refused = error instanceof DeliveryRequestError;
      const status = refused ? error.status : 500;
      const code = refused ? error.code : "InternalError";
      const message = refused ? error.message : errorText(error);
      const headers: Record<string, string> = {
        ...JSON_HEADERS,
        ...(refused ? error.headers : {}),
      };
      if (status === 401) headers["www-authenticate"] = 'Bearer realm="impel"';
      return new Response(JSON.stringify({ error: { code, message } }), { status, headers });
    }
  };
}
