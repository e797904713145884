/**
 * The HTTP handler: health, metrics and a small management API as one web-standard
 * `Request → Response` handler, mountable by `Deno.serve`, `Bun.serve` or any framework that
 * hands out `Request`s. Routes are one table; the health assessment itself lives in `health.ts`
 * and is re-exported here.
 *
 * Routes (under `basePath`):
 *
 * | route | auth | answer |
 * | --- | --- | --- |
 * | `GET /` | none | the status page: one self-contained HTML page (no data in it; it reads the two routes below) |
 * | `GET /status` | token if `protectReads` | every pipeline's live status ({@linkcode StatusSnapshot}); `?since=<ms>`: history after it |
 * | `GET /status/events` | token if `protectReads` | Server-Sent Events: a `snapshot` event now and one per `status.intervalMs` (503 past `status.maxClients`) |
 * | `GET /metrics` | none | the Prometheus exposition of the metrics registry |
 * | `GET /health` | none | `{ status: "ok" \| "degraded" \| "failing", checkedAt, reasons, pipelines, queues? }` (see `checkHealth`; queues metered with `metrics.addQueue`); 503 when failing |
 * | `GET /pipelines` | token if `protectReads` | every pipeline: group, source, state, tranches, checkpoints |
 * | `GET /pipelines/{group}` | token if `protectReads` | one pipeline, with its busy, failing and stuck streams |
 * | `GET /pipelines/{group}/checkpoints` | token if `protectReads` | the stored checkpoints of the pipeline's source and group |
 * | `PUT /pipelines/{group}/checkpoints/{tranche}` | token | body `{ "position": "start" \| "tail" \| "<integer>", "force"?: true }` |
 * | `DELETE /pipelines/{group}/checkpoints/{tranche}` | token (+ `?force=true` while running) | forgets the checkpoint |
 * | `GET /pipelines/{group}/parked` | token | the parked streams (`?resolved=true`: with the history) |
 * | `GET /pipelines/{group}/parked/{stream}` | token | one, with up to `limit` (100) of its events from `from` |
 * | `POST /pipelines/{group}/parked/{stream}/release` | token | body `{ "by"?: string, "reason"?: string }` (JSON; may be left out): replay its events, then resume (202; 200 if already released or the same release already asked; 409 `ParkRequestDiffers` if a release by someone else or for another reason stands) |
 * | `POST /pipelines/{group}/parked/{stream}/skip` | token | JSON body `{ "reason": string, "by"?: string, "upTo"?: integer }`: drop its events below `upTo` (default: its `next` now; the request records the bound) (202; 200 if already skipped or the same skip already asked; 409 `ParkRequestDiffers` if a different skip stands) |
 *
 * Changing a checkpoint always needs `Authorization: Bearer <token>`; a handler created without
 * a token refuses every change (403). A reset takes effect when the pipeline next starts, so it
 * is refused (409) while the pipeline runs unless `force` is set: the running pipeline's own
 * commits would otherwise silently undo a reset backwards. Tranche names are URL path segments:
 * encode them (`GuestStay%3A0%2F2` for `GuestStay:0/2`). Errors are JSON
 * `{ "error": { "code", "message" } }` with a 4xx status naming what was wrong. Positions are
 * JSON strings (they are 64-bit).
 *
 * A release or skip is recorded in the pipeline's park store (the registration's `parked`, or
 * the sink's) and answered 202 Accepted: the running sink of the group applies it within its
 * park policy's `pollMs` (and a stopped one when it next starts). Both are idempotent; another
 * request while one is being applied is refused (409). Stream names are path segments: encode
 * them. Listing and showing parked streams needs the token too (they answer event data).
 *
 * A pipeline may have several park stores (a `byStream` policy naming more than one), numbered
 * from 0 in the policy's order. Every parked route takes `?store=N` to address one; without it,
 * the list merges every store's entries and show, release and skip find the store where the
 * stream is parked (409 `AmbiguousParkStore` if two hold it parked at once). Each entry answered
 * names its `store`, and the list says how many `stores` there are.
 *
 * The status page shows, live, every pipeline of the registry: throughput and handler latency
 * over the last minutes, per tranche the positions, committed checkpoint, lag and read-ahead,
 * the busy, failing, stuck and parked streams with ages, attempts and errors, and health with
 * its reasons. It follows `status/events` (Server-Sent Events; with `protectReads`, the same
 * stream read with the token) and falls back to polling `status` when that fails. Its actions
 * (reset a checkpoint, release a parked stream) call the management routes above with the
 * token the page asks for and keeps in memory only, each after a confirmation; without the
 * token they are refused (401). One snapshot per interval is built and shared by every page; a
 * page that does not keep up skips snapshots and is dropped after `status.dropAfterMs`.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { Position } from "../core/batch.ts";
import { readBodyText, sameSecret } from "../core/http.ts";
import type { CheckpointKey } from "../core/checkpoints.ts";
import { describe, ImpelError, InvalidArgumentError } from "../core/errors.ts";
import { errorText } from "../core/failure.ts";
import {
  encodeParkedEvent,
  type ParkedStream,
  ParkRequestConflictError,
  type ParkStore,
  sameParkRequest,
  StreamNotParkedError,
} from "../core/park.ts";
import { checkHealth, type HealthThresholds, resolveHealthThresholds } from "./health.ts";
import type { ImpelMetrics, MeteredPipeline } from "./metrics.ts";
import {
  createStatusFeed,
  describeTranches,
  resolveStatusOptions,
  type StatusOptions,
  streamRows,
} from "./status.ts";
import { statusPage } from "./status_page.ts";

export type {
  PipelineStatus,
  StatusOptions,
  StatusSnapshot,
  StreamRow,
  TrancheRow,
} from "./status.ts";

export {
  checkHealth,
  type HealthReason,
  type HealthReport,
  type HealthStatus,
  type HealthThresholds,
  type LeaseHealth,
  type PipelineHealth,
  type QueueHealth,
  type Thresholds,
} from "./health.ts";

const log = getLogger(["impel", "http"]);

/**
 * Options of {@linkcode createHttpHandler}.
 *
 * @example
 * ```ts
 * import { createMetrics } from "@impel/impel/metrics";
 * import { createHttpHandler, type HttpHandlerOptions } from "@impel/impel/http";
 * const token = crypto.randomUUID(); // in production: a secret from the environment
 * const options: HttpHandlerOptions = {
 *   metrics: createMetrics({ defaultMetrics: false }),
 *   token,
 *   protectReads: true,
 *   health: { lag: { degraded: 10_000 } },
 *   basePath: "/impel",
 * };
 * const handler = createHttpHandler(options);
 * const anonymous = await handler(new Request("http://localhost/impel/pipelines"));
 * const authorized = await handler(
 *   new Request("http://localhost/impel/pipelines", {
 *     headers: { authorization: `Bearer ${token}` },
 *   }),
 * );
 * console.log(anonymous.status, authorized.status); // 401 200
 * ```
 */
export interface HttpHandlerOptions {
  /** The metrics and pipeline registry to serve. */
  readonly metrics: ImpelMetrics;
  /**
   * The bearer token that checkpoint changes and every route of parked streams need (at least
   * 16 characters). Without one, the management API is read-only and parked streams are not
   * served.
   */
  readonly token?: string;
  /**
   * Also require the token for the management API's other reads (default false; the reads of
   * parked streams, which answer event data, always need it).
   */
  readonly protectReads?: boolean;
  /** What makes `/health` degraded or failing. */
  readonly health?: HealthThresholds;
  /** A path prefix the routes live under, e.g. `/impel` (default: none). */
  readonly basePath?: string;
  /** The status page's feed: its interval and how many pages at once. */
  readonly status?: StatusOptions;
  /**
   * Once aborted, the status feed ends every page's stream and refuses new ones (503). Abort it
   * before a server's graceful shutdown (`server.shutdown()` waits for open responses, and an
   * event stream stays open).
   */
  readonly signal?: AbortSignal;
}

/**
 * A web-standard request handler.
 *
 * @example
 * ```ts
 * import { createMetrics } from "@impel/impel/metrics";
 * import { createHttpHandler, type HttpHandler } from "@impel/impel/http";
 * const metrics = createMetrics({ defaultMetrics: false });
 * const handler: HttpHandler = createHttpHandler({ metrics });
 * // Mount it with Deno.serve({ hostname: "127.0.0.1", port: 9464 }, handler), Bun.serve({ fetch:
 * // handler }), or call it from a framework's route:
 * const response = await handler(new Request("http://localhost/health"));
 * console.log(response.status, await response.json()); // 200 { status: "ok", ... }
 * ```
 */
export type HttpHandler = (request: Request) => Promise<Response>;
/** A request the handler refuses, with its HTTP status. */
class HttpError extends ImpelError {
  readonly status: number;
  readonly headers: Record<string, string>;
  constructor(status: number, code: string, message: string, headers: Record<string, string> = {}) {
    super(code, message);
    this.status = status;
    this.headers = headers;
  }
}

const MAX_BODY = 4096;
const JSON_HEADERS = {
  "content-type": "application/json; charset=utf-8",
  "cache-control": "no-store",
};

/**
 * Creates the handler for `/metrics`, `/health` and the management API.
 *
 * @example
 * ```ts ignore
 * import { createMetrics } from "@impel/impel/metrics";
 * import { createHttpHandler } from "@impel/impel/http";
 * const metrics = createMetrics();
 * // metrics.addPipeline({ group, source, sink, checkpoints, positions }) for each pipeline
 * const handler = createHttpHandler({ metrics, token: Deno.env.get("IMPEL_ADMIN_TOKEN"), health: { lag: { degraded: 10_000 } } });
 * Deno.serve({ hostname: "127.0.0.1", port: 9464 }, handler); // or Bun.serve({ fetch: handler })
 * ```
 */
export function createHttpHandler(options: HttpHandlerOptions): HttpHandler {
  const { metrics } = options;
  if (typeof metrics?.pipelines !== "function") {
    throw new InvalidArgumentError("metrics", "must come from createMetrics()");
  }
  const token = options.token;
  if (token !== undefined && (typeof token !== "string" || token.length < 16)) {
    throw new InvalidArgumentError("token", "must be a string of at least 16 characters");
  }
  const basePath = options.basePath ?? "";
  if (typeof basePath !== "string" || !/^(\/[^/]+)*$/.test(basePath)) {
    throw new InvalidArgumentError(
      "basePath",
      `must be empty or start with / and not end with /, got ${describe(basePath)}`,
    );
  }
  const thresholds = options.health ?? {};
  resolveHealthThresholds(thresholds); // fail at construction, not on the first request
  const protectReads = options.protectReads ?? false;
  const feed = createStatusFeed(metrics, thresholds, {
    ...resolveStatusOptions(options.status),
    actions: token !== undefined,
    protectReads,
  });
  if (options.signal !== undefined) {
    if (typeof options.signal?.addEventListener !== "function") {
      throw new InvalidArgumentError(
        "signal",
        `must be an AbortSignal, got ${describe(options.signal)}`,
      );
    }
    if (options.signal.aborted) feed.close();
    else options.signal.addEventListener("abort", () => feed.close(), { once: true });
  }

  async function authorize(request: Request) {
    if (token === undefined) {
      throw new HttpError(
        403,
        "ManagementDisabled",
        "changes (checkpoint resets, park requests) and reads of parked streams are disabled: the handler was created without a token",
      );
    }
    const header = request.headers.get("authorization");
    const challenge = { "www-authenticate": 'Bearer realm="impel"' };
    if (header === null) {
      throw new HttpError(
        401,
        "MissingToken",
        "an Authorization: Bearer <token> header is required",
        challenge,
      );
    }
    const match = /^Bearer +(\S+) *$/i.exec(header);
    if (!match) {
      throw new HttpError(
        401,
        "InvalidToken",
        "the Authorization header must be 'Bearer <token>'",
        challenge,
      );
    }
    if (!(await sameSecret(match[1], token))) {
      throw new HttpError(401, "InvalidToken", "the token is not valid", challenge);
    }
  }

  function pipelineOf(group: string): MeteredPipeline {
    const p = metrics.pipeline(group);
    if (!p) {
      throw new HttpError(
        404,
        "UnknownPipeline",
        `no pipeline with group ${JSON.stringify(group)}`,
      );
    }
    return p;
  }

  const READ = ["GET", "HEAD"] as const;
  // Matched in order; a path that matches with another method answers 405 with every method
  // the path has.
  const page: Route["answer"] = () => {
    const nonce = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))));
    return Promise.resolve(
      new Response(statusPage(nonce), {
        headers: {
          "content-type": "text/html; charset=utf-8",
          "cache-control": "no-store",
          "content-security-policy": `default-src 'none'; script-src 'nonce-${nonce}'; ` +
            `style-src 'nonce-${nonce}'; connect-src 'self'; base-uri 'none'; ` +
            `form-action 'none'; frame-ancestors 'none'`,
          "x-content-type-options": "nosniff",
          "referrer-policy": "no-referrer",
        },
      }),
    );
  };
  const routes: readonly Route[] = [
    // The page holds no data (it reads /status), so it is open even with protectReads.
    { path: [""], methods: READ, access: "open", answer: page },
    { path: [], methods: READ, access: "open", answer: page },
    {
      path: ["status"],
      methods: READ,
      access: "read",
      answer: async ({ url }) => {
        const since = url.searchParams.get("since") === null
          ? undefined
          : integerQuery(url, "since", 0, 0);
        // JSON-safe by construction: stringified as is, without json()'s replacer (several
        // times faster on a snapshot with ten minutes of history).
        return new Response(JSON.stringify(await feed.snapshot(since)), { headers: JSON_HEADERS });
      },
    },
    {
      // GET only: a HEAD would open a feed whose body nobody reads.
      path: ["status", "events"],
      methods: ["GET"],
      access: "read",
      answer: async () => {
        const response = await feed.events();
        if (response === undefined && feed.closed) {
          throw new HttpError(
            503,
            "ShuttingDown",
            "the status feed is closed: the server is stopping",
          );
        }
        if (response === undefined) {
          throw new HttpError(
            503,
            "TooManyClients",
            `${feed.clients()} status pages are connected (status.maxClients); close one, or poll GET /status`,
            { "retry-after": "10" },
          );
        }
        return response;
      },
    },
    {
      path: ["metrics"],
      methods: READ,
      access: "open",
      answer: async () =>
        new Response(await metrics.metrics(), {
          headers: { "content-type": metrics.contentType, "cache-control": "no-store" },
        }),
    },
    {
      path: ["health"],
      methods: READ,
      access: "open",
      answer: async () => {
        const report = await checkHealth(metrics.pipelines(), thresholds, metrics.queues());
        return json(report, report.status === "failing" ? 503 : 200);
      },
    },
    {
      path: ["pipelines"],
      methods: READ,
      access: "read",
      answer: async () =>
        json({
          pipelines: await Promise.all(metrics.pipelines().map((p) => describePipeline(p, false))),
        }),
    },
    {
      path: ["pipelines", ":group"],
      methods: READ,
      access: "read",
      answer: async ({ params }) => json(await describePipeline(pipelineOf(params.group), true)),
    },
    {
      path: ["pipelines", ":group", "checkpoints"],
      methods: READ,
      access: "read",
      answer: async ({ params: { group } }) => {
        const p = pipelineOf(group);
        return json({ group, source: p.source, checkpoints: await storedCheckpoints(p) });
      },
    },
    {
      path: ["pipelines", ":group", "checkpoints", ":tranche"],
      methods: ["PUT"],
      access: "change",
      answer: async ({ request, params: { group, tranche } }) => {
        const p = pipelineOf(group);
        return json(await resetCheckpoint(p, tranche, await readResetBody(request, p, tranche)));
      },
    },
    {
      path: ["pipelines", ":group", "parked"],
      methods: READ,
      access: "data",
      answer: async ({ url, params: { group } }) => {
        const p = pipelineOf(group);
        const resolved = booleanQuery(url, "resolved");
        const parked = [];
        // Every store of the pipeline, each entry naming its store, unless `store` picks one.
        for (const [store, at] of storesOf(p, url)) {
          const list = await parkCall(
            "listing parked streams",
            () => store.list(group, { resolved }),
          );
          parked.push(...list.map((e) => describeParked(e, at)));
        }
        return json({ group, stores: p.parkStores.length, parked });
      },
    },
    {
      path: ["pipelines", ":group", "parked", ":stream"],
      methods: READ,
      access: "data",
      answer: async ({ url, params: { group, stream } }) => {
        const p = pipelineOf(group);
        const from = integerQuery(url, "from", 0, 0);
        const limit = integerQuery(url, "limit", 100, 1, 1000);
        const found = await findParked(p, url, group, stream);
        if (found === undefined) {
          throw new HttpError(
            404,
            "StreamNotParked",
            `stream ${stream} has never been parked in group ${group}`,
          );
        }
        const [entry, store, at] = found;
        const events = entry.state !== "parked" ? [] : await parkCall(
          "reading parked events",
          () => store.events(group, stream, entry.episode, from, limit),
        );
        return json({
          ...describeParked(entry, at),
          eventsShown: events.map((e) => JSON.parse(encodeParkedEvent(e))),
        });
      },
    },
    ...(["release", "skip"] as const).map((action): Route => ({
      path: ["pipelines", ":group", "parked", ":stream", action],
      methods: ["POST"],
      access: "change",
      answer: async ({ request, url, params: { group, stream } }) => {
        const p = pipelineOf(group);
        const body = await readParkBody(request, action);
        // The store where the stream is parked now (or the one named), else where it last was,
        // so that asking again for what was done answers it (idempotent).
        const found = await findParked(p, url, group, stream);
        const [store, at] = found === undefined ? storesOf(p, url)[0] : [found[1], found[2]];
        const standing = found?.[0].state === "parked" ? found[0].request : undefined;
        if (standing?.action === action) {
          // Asked already: the same request again changes nothing; a different one is refused
          // rather than dropped silently (the first stands until applied).
          if (!sameParkRequest(standing, { action, ...body })) {
            throw new HttpError(
              409,
              "ParkRequestDiffers",
              `a ${action} of ${stream} asked by ${standing.by}${
                standing.reason === undefined ? "" : ` (${JSON.stringify(standing.reason)})`
              }${
                standing.upTo === undefined ? "" : ` below index ${standing.upTo}`
              } stands; it is applied as asked (ask again once it is done)`,
            );
          }
          return json({ ...describeParked(found![0], at), alreadyRequested: true }, 200);
        }
        const entry = await parkCall(
          `recording the ${action}`,
          () => store.request(group, stream, { action, ...body }),
        );
        log.warn("{action} of {group}/{stream} asked over HTTP by {by}{reason}", {
          action,
          group,
          stream,
          by: body.by,
          reason: body.reason === undefined ? "" : `: ${body.reason}`,
        });
        // Accepted: the running sink applies it within its poll interval. 200 only when it was
        // applied already (the same request again).
        return json(describeParked(entry, at), entry.state === "parked" ? 202 : 200);
      },
    })),
    {
      path: ["pipelines", ":group", "checkpoints", ":tranche"],
      methods: ["DELETE"],
      access: "change",
      answer: async ({ url, params: { group, tranche } }) =>
        json(
          await resetCheckpoint(pipelineOf(group), tranche, {
            position: undefined,
            force: url.searchParams.get("force") === "true",
          }),
        ),
    },
  ];

  async function route(request: Request): Promise<Response> {
    const url = new URL(request.url);
    if (url.pathname !== basePath && !url.pathname.startsWith(basePath + "/")) {
      throw notFound(url.pathname);
    }
    const raw = url.pathname.slice(basePath.length).split("/").slice(1);
    let parts: string[];
    try {
      parts = raw.map(decodeURIComponent);
    } catch {
      throw new HttpError(400, "InvalidPath", "the path has a malformed %-escape");
    }
    if (parts.length > 1 && parts[parts.length - 1] === "") parts = parts.slice(0, -1);
    const matching = routes.flatMap((r) => {
      const params = match(r.path, parts);
      return params ? [{ route: r, params }] : [];
    });
    if (matching.length === 0) throw notFound(url.pathname);
    const found = matching.find((m) => m.route.methods.includes(request.method));
    if (!found) {
      const methods = [...new Set(matching.flatMap((m) => m.route.methods))];
      throw new HttpError(405, "MethodNotAllowed", `use ${methods.join(" or ")}`, {
        allow: methods.join(", "),
      });
    }
    const { route, params } = found;
    if (route.access !== "open" && (route.access !== "read" || protectReads)) {
      await authorize(request);
    }
    for (const [name, value] of Object.entries(params)) {
      if (value === "") {
        throw new HttpError(400, "InvalidPath", `the ${PARAMS[name] ?? name} must not be empty`);
      }
    }
    return await route.answer({ request, url, params });
  }

  return async (request: Request): Promise<Response> => {
    try {
      const response = await route(request);
      return request.method === "HEAD"
        ? new Response(null, { status: response.status, headers: response.headers })
        : response;
    } catch (error) {
      if (error instanceof HttpError) {
        return json(
          { error: { code: error.code, message: error.message } },
          error.status,
          error.headers,
        );
      }
      log.error("request {method} {url} failed: {error}", {
        method: request.method,
        url: request.url,
        error: errorText(error),
      });
      return json({ error: { code: "InternalError", message: errorText(error) } }, 500);
    }
  };
}

function notFound(path: string) {
  return new HttpError(404, "NotFound", `no route for ${path}`);
}

/**
 * What a route needs: nothing, the token if `protectReads`, always the token (`data`: reads of
 * parked streams, which answer event data), or always the token (`change`).
 */
type Access = "open" | "read" | "data" | "change";

interface Route {
  /** Path segments under the base path; `:name` captures one segment (URL-decoded). */
  readonly path: readonly string[];
  /** The methods it answers. */
  readonly methods: readonly string[];
  readonly access: Access;
  readonly answer: (call: {
    readonly request: Request;
    readonly url: URL;
    readonly params: Readonly<Record<string, string>>;
  }) => Promise<Response>;
}

/** Names of path parameters in error messages. */
const PARAMS: Readonly<Record<string, string>> = {
  group: "pipeline group",
  tranche: "tranche",
  stream: "stream",
};

/** The parameters of `parts` if it has the shape of `path`. */
function match(path: readonly string[], parts: readonly string[]): Record<string, string> | null {
  if (path.length !== parts.length) return null;
  const params: Record<string, string> = {};
  for (let i = 0; i < path.length; i++) {
    if (path[i].startsWith(":")) params[path[i].slice(1)] = parts[i];
    else if (path[i] !== parts[i]) return null;
  }
  return params;
}

function json(body: unknown, status = 200, headers: Record<string, string> = {}): Response {
  const text = JSON.stringify(body, (_k, v) => (typeof v === "bigint" ? v.toString() : v));
  return new Response(text, { status, headers: { ...JSON_HEADERS, ...headers } });
}

const storeError = (what: string, error: unknown) =>
  error instanceof InvalidArgumentError ||
    (error instanceof ImpelError && error.code === "InvalidPosition")
    ? new HttpError(400, error.code, error.message)
    : new HttpError(502, "CheckpointStoreFailed", `${what} failed: ${errorText(error)}`);

async function storedCheckpoints(p: MeteredPipeline) {
  if (!p.checkpoints) return null;
  try {
    const list = await p.checkpoints.list(p.source, p.group);
    return list.map((c) => ({ tranche: c.tranche, position: c.position }));
  } catch (error) {
    throw storeError("listing checkpoints", error);
  }
}

async function describePipeline(p: MeteredPipeline, detailed: boolean) {
  const stats = p.stats();
  const tranches = (await describeTranches(p, stats)).map(({ trouble: _, ...t }) => t);
  const summary = {
    group: p.group,
    source: p.source,
    state: p.state,
    ...(p.state === "faulted" ? { fault: errorText(p.fault) } : {}),
    tranches,
    checkpoints: await storedCheckpoints(p),
  };
  if (!detailed) return summary;
  return {
    ...summary,
    scheduler: {
      streams: stats.streams,
      bufferedEvents: stats.bufferedEvents,
      uncompletedBatches: stats.uncompletedBatches,
      maxReadAhead: stats.maxReadAhead,
      counters: stats.counters,
      active: streamRows(stats.busy),
      failing: streamRows(stats.failing),
      stuck: streamRows(stats.stuck),
      ...(stats.parked === undefined ? {} : { parked: stats.parked }),
    },
  };
}

/**
 * The park stores a request addresses, with their numbers: the one `?store=N` names, else every
 * one of the pipeline (a `byStream` policy may use several).
 */
function storesOf(p: MeteredPipeline, url: URL): Array<[ParkStore, number]> {
  const stores = p.parkStores.length > 0 ? p.parkStores : p.parked ? [p.parked] : [];
  if (stores.length === 0) {
    throw new HttpError(
      409,
      "NoParkStore",
      `pipeline ${p.group} has no park store: its failure policy does not park, and none was registered`,
    );
  }
  if (url.searchParams.get("store") === null) return stores.map((s, i) => [s, i]);
  const at = integerQuery(url, "store", 0, 0);
  if (at >= stores.length) {
    throw new HttpError(
      404,
      "UnknownParkStore",
      `pipeline ${p.group} has ${stores.length} park store(s), numbered from 0; got store=${at}`,
    );
  }
  return [[stores[at], at]];
}

/**
 * The stream's entry and its store: the store where it is parked now, else the one with its
 * latest episode. Two stores with it parked at once (a policy changed while it was parked) need
 * `?store=N`.
 */
async function findParked(
  p: MeteredPipeline,
  url: URL,
  group: string,
  stream: string,
): Promise<[ParkedStream, ParkStore, number] | undefined> {
  const found: Array<[ParkedStream, ParkStore, number]> = [];
  for (const [store, at] of storesOf(p, url)) {
    const entry = await parkCall("reading the parked stream", () => store.get(group, stream));
    if (entry !== undefined) found.push([entry, store, at]);
  }
  const active = found.filter(([e]) => e.state === "parked");
  if (active.length > 1) {
    throw new HttpError(
      409,
      "AmbiguousParkStore",
      `stream ${stream} of group ${group} is parked in stores ${
        active.map(([, , at]) => at).join(" and ")
      }: name one with ?store=N`,
    );
  }
  return active[0] ?? latestOf(found);
}

function latestOf(
  found: Array<[ParkedStream, ParkStore, number]>,
): [ParkedStream, ParkStore, number] | undefined {
  let latest = found[0];
  for (const f of found) {
    const at = f[0].resolution?.at ?? f[0].parkedAt;
    if (at > (latest[0].resolution?.at ?? latest[0].parkedAt)) latest = f;
  }
  return latest;
}

/** Runs a park store call, mapping its typed errors to statuses. */
async function parkCall<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (error) {
    if (error instanceof StreamNotParkedError) {
      throw new HttpError(404, error.code, error.message);
    }
    if (error instanceof ParkRequestConflictError) {
      throw new HttpError(409, error.code, error.message);
    }
    if (error instanceof InvalidArgumentError) {
      throw new HttpError(400, error.code, error.message);
    }
    throw new HttpError(502, "ParkStoreFailed", `${what} failed: ${errorText(error)}`);
  }
}

function describeParked(e: ParkedStream, store: number) {
  return { ...e, store, ageMs: Math.max(0, Date.now() - e.parkedAt) };
}

function booleanQuery(url: URL, name: string): boolean {
  const v = url.searchParams.get(name);
  if (v === null || v === "false") return false;
  if (v === "true") return true;
  throw new HttpError(400, "InvalidQuery", `${name} must be true or false, got ${describe(v)}`);
}

function integerQuery(url: URL, name: string, fallback: number, min: number, max = 2 ** 53) {
  const v = url.searchParams.get(name);
  if (v === null) return fallback;
  const n = Number(v);
  if (!/^\d{1,16}$/.test(v) || n < min || n > max) {
    throw new HttpError(
      400,
      "InvalidQuery",
      `${name} must be an integer in [${min}, ${max}], got ${describe(v)}`,
    );
  }
  return n;
}

/** A JSON object body with only `allowed` fields; `shape` shows the expected form in errors. */
async function readJsonObject(
  request: Request,
  allowed: readonly string[],
  shape: string,
  optional = false,
): Promise<Record<string, unknown>> {
  const type = request.headers.get("content-type");
  // An optional body may be left out altogether.
  const empty = optional && type === null && (await readBody(request)).trim() === "";
  if (empty) return {};
  if (!/^application\/json\s*(;|$)/i.test(type ?? "")) {
    throw new HttpError(
      415,
      "UnsupportedMediaType",
      "the body must be JSON (Content-Type: application/json)",
    );
  }
  const text = await readBody(request);
  if (optional && text.trim() === "") return {};
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch (error) {
    throw new HttpError(
      400,
      "InvalidJson",
      `the body is not valid JSON: ${(error as Error).message}`,
    );
  }
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    throw new HttpError(400, "InvalidBody", `the body must be an object like ${shape}`);
  }
  for (const k of Object.keys(body)) {
    if (!allowed.includes(k)) {
      throw new HttpError(
        400,
        "InvalidBody",
        `unknown field ${JSON.stringify(k)}; expected ${allowed.join(" and ")}`,
      );
    }
  }
  return body as Record<string, unknown>;
}

async function readParkBody(
  request: Request,
  action: "release" | "skip",
): Promise<{ by: string; reason?: string; upTo?: number }> {
  const fields = action === "skip"
    ? await readJsonObject(
      request,
      ["reason", "by", "upTo"],
      '{ "reason": "...", "by"?: "...", "upTo"?: integer }',
    )
    : await readJsonObject(request, ["by", "reason"], '{ "by"?: "...", "reason"?: "..." }', true);
  const by = fields.by ?? "http";
  if (typeof by !== "string" || by.trim() === "" || by.length > 200) {
    throw new HttpError(
      400,
      "InvalidBody",
      `by must be a non-empty string of at most 200 characters, got ${describe(by)}`,
    );
  }
  const reason = fields.reason;
  if (action === "skip" && (typeof reason !== "string" || reason.trim() === "")) {
    throw new HttpError(
      400,
      "InvalidBody",
      `a skip needs a reason (a non-empty string), got ${describe(reason)}`,
    );
  }
  if (reason !== undefined && typeof reason !== "string") {
    throw new HttpError(400, "InvalidBody", `reason must be a string, got ${describe(reason)}`);
  }
  const upTo = fields.upTo;
  if (upTo !== undefined && (!Number.isSafeInteger(upTo) || (upTo as number) < 0)) {
    throw new HttpError(
      400,
      "InvalidBody",
      `upTo must be an integer >= 0 (drop the events below it), got ${describe(upTo)}`,
    );
  }
  return {
    by,
    ...(reason === undefined ? {} : { reason: reason as string }),
    ...(upTo === undefined ? {} : { upTo: upTo as number }),
  };
}

interface ResetRequest {
  readonly position: Position | undefined;
  readonly force: boolean;
}

function readBody(request: Request): Promise<string> {
  return readBodyText(request, MAX_BODY, (status, code, message) => {
    throw new HttpError(status, code, message);
  }, { tooLarge: "BodyTooLarge", notText: "InvalidBody" });
}

const MAX_POSITION = (1n << 63n) - 1n;

async function readResetBody(
  request: Request,
  p: MeteredPipeline,
  tranche: string,
): Promise<ResetRequest> {
  const fields = await readJsonObject(
    request,
    ["position", "force"],
    '{ "position": "start" | "tail" | "<integer>" }',
  );
  const force = fields.force ?? false;
  if (typeof force !== "boolean") {
    throw new HttpError(400, "InvalidBody", `force must be a boolean, got ${describe(force)}`);
  }
  const given = fields.position;
  let position: Position;
  if (given === "start") {
    position = p.positions?.start
      ? await backend(() => p.positions!.start!(tranche), "the start position")
      : 0n;
  } else if (given === "tail") {
    if (!p.positions?.head) {
      throw new HttpError(
        422,
        "TailUnknown",
        `the tail of ${p.source} is not known: register the pipeline with positions.head`,
      );
    }
    const head = await backend(() => p.positions!.head!(tranche), "the tail position");
    if (head === undefined) {
      throw new HttpError(
        422,
        "TailUnknown",
        `${p.source} does not know the tail of tranche ${tranche}`,
      );
    }
    position = head;
  } else if (typeof given === "string" && /^\d{1,19}$/.test(given)) {
    position = BigInt(given);
  } else if (typeof given === "number" && Number.isSafeInteger(given) && given >= 0) {
    position = BigInt(given);
  } else {
    throw new HttpError(
      400,
      "InvalidPosition",
      `position must be "start", "tail", a decimal string or a non-negative integer, got ${
        describe(given)
      }`,
    );
  }
  if (position > MAX_POSITION) {
    throw new HttpError(400, "InvalidPosition", `position must be at most ${MAX_POSITION}`);
  }
  return { position, force };
}

async function backend<T>(fn: () => Promise<T>, what: string): Promise<T> {
  try {
    return await fn();
  } catch (error) {
    throw new HttpError(
      502,
      "SourceFailed",
      `asking the source for ${what} failed: ${errorText(error)}`,
    );
  }
}

async function resetCheckpoint(p: MeteredPipeline, tranche: string, reset: ResetRequest) {
  const store = p.checkpoints;
  if (!store) {
    throw new HttpError(
      409,
      "NoCheckpointStore",
      `pipeline ${p.group} was registered without a checkpoint store`,
    );
  }
  if (p.state === "running" && !reset.force) {
    throw new HttpError(
      409,
      "PipelineRunning",
      `pipeline ${p.group} is running and its own commits would override the change; stop it first, or pass force`,
    );
  }
  const key: CheckpointKey = { source: p.source, tranche, group: p.group };
  let known: boolean;
  let previous: Position | undefined;
  try {
    previous = await store.load(key);
    known = previous !== undefined || p.stats().tranches.some((t) => t.tranche === tranche) ||
      p.reads().some((r) => r.tranche === tranche);
  } catch (error) {
    throw storeError("loading the checkpoint", error);
  }
  if (!known) {
    throw new HttpError(
      404,
      "UnknownTranche",
      `pipeline ${p.group} has neither read nor checkpointed tranche ${JSON.stringify(tranche)}`,
    );
  }
  try {
    await store.reset(key, reset.position);
  } catch (error) {
    throw storeError("resetting the checkpoint", error);
  }
  log.warn("checkpoint {source}/{group}/{tranche} reset from {previous} to {position} over HTTP", {
    source: p.source,
    tranche,
    group: p.group,
    previous: String(previous),
    position: String(reset.position),
  });
  return {
    group: p.group,
    source: p.source,
    tranche,
    previous: previous ?? null,
    position: reset.position ?? null,
    running: p.state === "running",
  };
}
