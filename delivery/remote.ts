/**
 * A remote impel stream as a pipeline source: pages of a delivery handler's subscription read
 * through the one paged reader (core/reader.ts), so checkpoints, the tail start, retries and
 * problems work as for any other polling source, and a local `streamsSink` handles what another
 * process stores.
 *
 * @module
 */
import type { BatchItem, ObservableSource, Position } from "../core/batch.ts";
import type { CheckpointStore } from "../core/checkpoints.ts";
import { checkInteger, describe, ImpelError, InvalidArgumentError } from "../core/errors.ts";
import type { RetryOptions } from "../core/failure.ts";
import { pagedSource, type StartFrom } from "../core/reader.ts";
import { SubscriptionRefusedError } from "./client.ts";
import { refusalOf, RETRIED_4XX, retryAfterMs, SubscriptionUnavailableError } from "./wire.ts";
import type { DeliveredEvent } from "./server.ts";

export type { Batch, BatchItem, ObservableSource, Position, SourceProblem } from "../core/batch.ts";
export type { CheckpointKey, CheckpointStore } from "../core/checkpoints.ts";
export type { RetryOptions } from "../core/failure.ts";
export type { StartFrom } from "../core/reader.ts";

/**
 * Options of {@linkcode remoteSource}.
 *
 * @example
 * ```ts
 * import type { RemoteSourceOptions } from "@impel/impel/delivery/remote";
 * const options: RemoteSourceOptions = {
 *   url: "http://127.0.0.1:8080/streams/Order",
 *   token: "reader-token-0123456789",
 *   group: "mailer",
 * };
 * ```
 *
 * @category Delivery
 */
export interface RemoteSourceOptions {
  /** The subscription's URL: a delivery handler's `…/streams/{category or stream}`. */
  readonly url: string | URL;
  /** The bearer token (scope `read:<category>`). */
  readonly token?: string;
  /** Where checkpoints are kept (none: from the start every run, nothing committed). */
  readonly checkpoints?: CheckpointStore;
  /** The consumer group (default `"default"`). */
  readonly group?: string;
  /** The source name in checkpoint keys and logs (default `"remote"`). */
  readonly name?: string;
  /** Where to start (default `"checkpoint"`, from the start without one). */
  readonly startFrom?: StartFrom;
  /** Only these event types (positions still move past the others). */
  readonly types?: readonly string[];
  /** Events per request (default 500, at most 10 000: the delivery handler's bound). */
  readonly pageSize?: number;
  /** Pause at the tail between requests (default 200 ms). */
  readonly tailSleepMs?: number;
  /** Backoff of failed requests. */
  readonly retry?: RetryOptions;
  /** The fetch to use (default `globalThis.fetch`). */
  readonly fetch?: typeof fetch;
  /** Aborting stops reading. */
  readonly signal?: AbortSignal;
}

/**
 * The tranche, and so the checkpoint key, of a remote: its host (with the port) and its path,
 * each segment percent-decoded (`127.0.0.1:8080/impel/streams/Order`), so that two remotes
 * serving a category of the same name keep apart, and one remote written two ways (escapes,
 * `..`, a default port) is one checkpoint. The scheme and the query are not part of it.
 */
function trancheOf(url: URL): string {
  let segments: string[];
  try {
    segments = url.pathname.split("/").map(decodeURIComponent);
  } catch {
    throw new InvalidArgumentError(
      "url",
      `has a path that is not valid percent-encoding: ${url.pathname}`,
    );
  }
  if (segments.at(-1) === "") {
    throw new InvalidArgumentError("url", `must end with the category or stream, got ${url.href}`);
  }
  return `${url.host}${segments.join("/")}`;
}

/**
 * A source reading a remote impel stream through a delivery handler, one tranche named after
 * the remote's host and path (`127.0.0.1:8080/streams/Order`: two remotes with a category of
 * the same name have their own checkpoints); a position is the remote feed's position after
 * the last event read, committed as the checkpoint. A refusal (bad token: a 4xx but 408, 425
 * and 429) fails the source; other failures retry with `retry`'s backoff, waiting at least a
 * `Retry-After` (up to 10 minutes).
 *
 * @example
 * ```ts ignore
 * import { run, streamsSink } from "@impel/impel";
 * import { memoryCheckpoints } from "@impel/impel/checkpoints/memory";
 * import { remoteSource } from "@impel/impel/delivery/remote";
 * const source = remoteSource({
 *   url: "http://127.0.0.1:8080/streams/Order",
 *   token: "reader-token-0123456789",
 *   checkpoints: memoryCheckpoints(),
 *   group: "mailer",
 * });
 * await run(source, streamsSink({ handler: (stream, events) => console.log(stream, events.length) }));
 * ```
 *
 * @category Delivery
 */
export function remoteSource(options: RemoteSourceOptions): ObservableSource {
  let base: URL;
  try {
    base = new URL(options.url);
  } catch {
    throw new InvalidArgumentError("url", `must be an absolute URL, got ${describe(options.url)}`);
  }
  const tranche = trancheOf(base);
  const fetching = options.fetch ?? globalThis.fetch;
  // The delivery handler's own bound on a page (`limit`): refused here, not by every request.
  const pageSize = checkInteger("pageSize", options.pageSize ?? 500, 1, 10_000);

  const page = async (from: string, limit: number, signal: AbortSignal) => {
    const target = new URL(base);
    target.searchParams.set("format", "json");
    target.searchParams.set("from", from);
    target.searchParams.set("limit", String(limit));
    if (options.types !== undefined) target.searchParams.set("types", options.types.join(","));
    const headers: Record<string, string> = { accept: "application/json" };
    if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`;
    const response = await fetching(target, { headers, signal });
    // 408/425/429 (a proxy's rate limit) and 5xx say "later": retried with the backoff, waiting at
    // least a Retry-After, as subscribe() does.
    if (RETRIED_4XX.has(response.status) || response.status >= 500) {
      await response.body?.cancel();
      throw new SubscriptionUnavailableError(
        response.status,
        retryAfterMs(response.headers.get("retry-after")),
      );
    }
    const body = await response.json().catch(() => ({}));
    if (response.status >= 400 && response.status < 500) {
      const { code, message } = refusalOf(body);
      throw new SubscriptionRefusedError(response.status, code ?? "Refused", message ?? "");
    }
    if (!response.ok) {
      throw new ImpelError("RemoteReadFailed", `the server answered ${response.status}`);
    }
    return body as unknown as { events: DeliveredEvent[]; next: string; tail: boolean };
  };

  return pagedSource({
    name: options.name ?? "remote",
    tranches: [tranche],
    checkpoints: options.checkpoints,
    group: options.group,
    startFrom: options.startFrom,
    tailSleepMs: options.tailSleepMs ?? 200,
    retry: options.retry,
    signal: options.signal,
    isRetriable: (error) => !(error instanceof SubscriptionRefusedError),
    readTail: async (_tranche, signal) => BigInt((await page("now", 1, signal)).next),
    readPage: async (_tranche, position, signal) => {
      const read = await page(
        position === undefined ? "start" : String(position),
        pageSize,
        signal,
      );
      const items: BatchItem[] = read.events.map((e) => ({
        stream: e.stream,
        event: {
          index: e.index,
          type: e.type,
          data: e.data,
          meta: e.meta,
          id: e.id,
          time: new Date(e.time),
          correlationId: e.correlationId,
          causationId: e.causationId,
          size: JSON.stringify(e.data ?? null).length,
        },
      }));
      const positions: Position[] = read.events.map((e) => BigInt(e.position) + 1n);
      return { items, positions, next: BigInt(read.next), isTail: read.tail };
    },
    gapsAreFinal: true,
  });
}
