/**
 * The client side of delivery: {@linkcode subscribe} reads a subscription of the delivery
 * handler as a `ReadableStream` of events, reconnecting and resuming after the last event it
 * handed on (`Last-Event-ID`), with `fetch` and web streams only, so it runs in Deno, Bun and
 * browsers. {@linkcode remoteSource} (in `@impel/impel/delivery/remote`) feeds a pipeline.
 *
 * @module
 */
import { describe, ImpelError, InvalidArgumentError } from "../core/errors.ts";
import { backoff, type RetryOptions } from "../core/failure.ts";
import { sleep } from "../core/tranches.ts";
import type { DeliveredEvent } from "./server.ts";
import { refusalOf, RETRIED_4XX, retryAfterMs, SubscriptionUnavailableError } from "./wire.ts";

export type { DeliveredEvent } from "./server.ts";
export type { RetryOptions } from "../core/failure.ts";

/**
 * Options of {@linkcode subscribe}.
 *
 * @example
 * ```ts
 * import type { SubscribeOptions } from "@impel/impel/delivery/client";
 * const options: SubscribeOptions = { token: "reader-token-0123456789", from: "now", types: ["Placed"] };
 * ```
 *
 * @category Delivery
 */
export interface SubscribeOptions {
  /** The bearer token. */
  readonly token?: string;
  /** Where to start: a position, `"start"` (default) or `"now"`; ignored once resuming. */
  readonly from?: bigint | number | "start" | "now";
  /** Resume after this position (as the SSE `Last-Event-ID`). */
  readonly lastEventId?: string;
  /** Only these event types. */
  readonly types?: readonly string[];
  /** Reconnect backoff (default 100 ms doubling to 5 s). */
  readonly retry?: RetryOptions;
  /**
   * Reconnect when nothing, not even a heartbeat, arrived for this long (default 45 000 ms:
   * three of the server's default heartbeats).
   */
  readonly idleTimeoutMs?: number;
  /**
   * The longest line (one event) accepted, in bytes (default 16 MiB); a longer one errors the
   * stream with {@linkcode SubscriptionLineTooLongError} instead of buffering without bound.
   */
  readonly maxLineBytes?: number;
  /** Called before each reconnection, with the failure and the attempt. */
  readonly onReconnect?: (reason: unknown, attempt: number) => void;
  /** Ends the stream. */
  readonly signal?: AbortSignal;
  /** The fetch to use (default `globalThis.fetch`). */
  readonly fetch?: typeof fetch;
}

/**
 * The server refused a subscription (a bad token or position): retrying would not help, so the
 * stream errors with it. `status` and `code` are the server's.
 *
 * @example
 * ```ts
 * import { SubscriptionRefusedError } from "@impel/impel/delivery/client";
 * const e = new SubscriptionRefusedError(401, "InvalidToken", "the token is not known");
 * console.log(e.status); // 401
 * ```
 *
 * @category Delivery
 */
export class SubscriptionRefusedError extends ImpelError {
  /** The HTTP status. */
  readonly status: number;
  /** Creates the error. */
  constructor(status: number, code: string, message: string) {
    super(code, `subscription refused (${status} ${code}): ${message}`);
    this.status = status;
  }
}

/**
 * The server sent a line longer than `maxLineBytes` without a newline: not a delivery handler's
 * NDJSON, or an event larger than the client accepts. The stream errors with it (reconnecting
 * would read the same line again).
 *
 * @example
 * ```ts
 * import { SubscriptionLineTooLongError } from "@impel/impel/delivery/client";
 * const e = new SubscriptionLineTooLongError(1024);
 * console.log(e.code, e.maxLineBytes); // "SubscriptionLineTooLong" 1024
 * ```
 *
 * @category Delivery
 */
export class SubscriptionLineTooLongError extends ImpelError {
  /** The limit that was passed. */
  readonly maxLineBytes: number;
  /** Creates the error. */
  constructor(maxLineBytes: number) {
    super(
      "SubscriptionLineTooLong",
      `the server sent a line longer than ${maxLineBytes} bytes (maxLineBytes) without a newline`,
    );
    this.maxLineBytes = maxLineBytes;
  }
}

/**
 * Subscribes to `url` (a delivery handler's `…/streams/{category or stream}`): a stream of
 * events, every event once and in order, across reconnections. It reads NDJSON; pulling from
 * the stream is what reads the connection, so a slow reader slows the server's reads of the
 * store rather than buffering. A refusal (400, 401, 403, 404 and any other 4xx but 408, 425
 * and 429) errors the stream with {@linkcode SubscriptionRefusedError}; 408/425/429, 5xx and
 * broken connections reconnect with the backoff (`retry`), waiting at least a `Retry-After`
 * (up to 10 minutes).
 *
 * @example
 * ```ts ignore
 * import { subscribe } from "@impel/impel/delivery/client";
 * const events = subscribe("http://127.0.0.1:8080/streams/Order", { token: "reader-token-0123456789" });
 * for await (const event of events) console.log(event.position, event.stream, event.type);
 * ```
 *
 * @category Delivery
 */
export function subscribe(
  url: string | URL,
  options: SubscribeOptions = {},
): ReadableStream<DeliveredEvent> {
  const base = new URL(url);
  const fetching = options.fetch ?? globalThis.fetch;
  const idleTimeoutMs = options.idleTimeoutMs ?? 45_000;
  if (!Number.isInteger(idleTimeoutMs) || idleTimeoutMs < 1) {
    throw new InvalidArgumentError(
      "idleTimeoutMs",
      `must be a positive integer, got ${describe(idleTimeoutMs)}`,
    );
  }
  const maxLineBytes = options.maxLineBytes ?? 16 * 2 ** 20;
  if (!Number.isInteger(maxLineBytes) || maxLineBytes < 1) {
    throw new InvalidArgumentError(
      "maxLineBytes",
      `must be a positive integer, got ${describe(maxLineBytes)}`,
    );
  }
  const retry = backoff({ initialDelayMs: 100, maxDelayMs: 5_000, ...options.retry });
  const from = options.from ?? "start";
  if (typeof from !== "bigint" && typeof from !== "number" && from !== "start" && from !== "now") {
    throw new InvalidArgumentError(
      "from",
      `must be a position, "start" or "now", got ${describe(from)}`,
    );
  }
  let last: string | undefined = options.lastEventId;
  let reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
  let connection: AbortController | undefined;
  let opened: string | undefined;
  let attempt = 0;
  let text = "";
  // Bytes received since the last newline: what `text` holds undecoded is bounded by it.
  let pending = 0;
  const decoder = new TextDecoder();
  const stop = new AbortController();
  options.signal?.addEventListener("abort", () => stop.abort(options.signal!.reason), {
    once: true,
  });

  const drop = () => {
    // Cancelling the body is what closes the connection at once (an abort alone left Deno's
    // fetch holding it, and the server writing into it, for half a minute).
    reader?.cancel().catch(() => {});
    connection?.abort();
    connection = undefined;
    reader = undefined;
    text = "";
    pending = 0;
    // Forget a character cut by the drop: its first bytes would spoil the next connection's
    // first line (one more reconnect, a SyntaxError given to onReconnect).
    decoder.decode();
  };

  // Counts the bytes of each line as they arrive, so a line without an end is refused as soon
  // as it passes the bound, not once it is whole.
  const measure = (chunk: Uint8Array) => {
    let from = 0;
    for (let nl = chunk.indexOf(10); nl >= 0; nl = chunk.indexOf(10, from)) {
      if (pending + nl - from > maxLineBytes) throw new SubscriptionLineTooLongError(maxLineBytes);
      pending = 0;
      from = nl + 1;
    }
    pending += chunk.length - from;
    if (pending > maxLineBytes) throw new SubscriptionLineTooLongError(maxLineBytes);
  };

  const connect = async (): Promise<void> => {
    const target = new URL(base);
    target.searchParams.set("format", "ndjson");
    if (options.types !== undefined) target.searchParams.set("types", options.types.join(","));
    const headers: Record<string, string> = { accept: "application/x-ndjson" };
    if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`;
    if (last !== undefined) headers["last-event-id"] = last;
    else target.searchParams.set("from", String(opened ?? from));
    connection = new AbortController();
    const signal = AbortSignal.any([connection.signal, stop.signal]);
    const response = await fetching(target, { headers, signal });
    if (RETRIED_4XX.has(response.status) || response.status >= 500) {
      await response.body?.cancel();
      throw new SubscriptionUnavailableError(
        response.status,
        retryAfterMs(response.headers.get("retry-after")),
      );
    }
    if (response.status >= 400 && response.status < 500) {
      const { code, message } = refusalOf(await response.json().catch(() => ({})));
      throw new SubscriptionRefusedError(
        response.status,
        code ?? "Refused",
        message ?? response.statusText,
      );
    }
    if (!response.ok || response.body === null) {
      await response.body?.cancel();
      throw new ImpelError("SubscriptionFailed", `the server answered ${response.status}`);
    }
    // Bun's types give fetch bodies a reader of their own; the web one is what is used.
    reader = response.body.getReader() as ReadableStreamDefaultReader<Uint8Array>;
  };

  // One chunk of the connection, or a timeout when nothing came for idleTimeoutMs.
  const readChunk = (r: ReadableStreamDefaultReader<Uint8Array>) => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const idle = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new ImpelError("SubscriptionIdle", `nothing arrived for ${idleTimeoutMs} ms`)),
        idleTimeoutMs,
      );
    });
    return Promise.race([r.read(), idle]).finally(() => clearTimeout(timer));
  };

  return new ReadableStream<DeliveredEvent>({
    async pull(controller) {
      while (!stop.signal.aborted) {
        try {
          if (reader === undefined) await connect();
          const { done, value } = await readChunk(reader!);
          if (done) throw new ImpelError("SubscriptionEnded", "the server ended the subscription");
          measure(value);
          text += decoder.decode(value, { stream: true });
          let end: number;
          let handed = 0;
          while ((end = text.indexOf("\n")) >= 0) {
            const line = text.slice(0, end);
            text = text.slice(end + 1);
            if (line === "") continue;
            const parsed = JSON.parse(line) as DeliveredEvent & {
              heartbeat?: string;
              error?: unknown;
            };
            if (parsed.heartbeat !== undefined) {
              const next = (parsed as { next?: unknown }).next;
              if (typeof next === "string" && last === undefined) opened = next;
              continue;
            }
            if (parsed.error !== undefined) {
              const { code, message } = refusalOf(parsed);
              throw new ImpelError(
                code ?? "SubscriptionFailed",
                message ?? "the server failed the subscription",
              );
            }
            last = parsed.position;
            controller.enqueue(parsed);
            handed++;
          }
          attempt = 0;
          if (handed > 0) return;
        } catch (error) {
          if (
            error instanceof SubscriptionRefusedError ||
            error instanceof SubscriptionLineTooLongError
          ) {
            drop();
            controller.error(error);
            return;
          }
          if (stop.signal.aborted) break;
          drop();
          attempt++;
          options.onReconnect?.(error, attempt);
          const later = error instanceof SubscriptionUnavailableError ? error.retryAfterMs : 0;
          await sleep(Math.max(retry.delay(attempt), later), stop.signal);
        }
      }
      drop();
      controller.close();
    },
    cancel() {
      stop.abort();
      drop();
    },
  }, { highWaterMark: 0 });
}
