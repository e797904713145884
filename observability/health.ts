/**
 * Health, metrics and a small management API as one web-standard `Request → Response` handler,
 * mountable by `Deno.serve`, `Bun.serve` or any framework that hands out `Request`s.
 *
 * Routes (under `basePath`):
 *
 * | route | auth | answer |
 * | --- | --- | --- |
 * | `GET /metrics` | none | the Prometheus exposition of the metrics registry |
 * | `GET /health` | none | `{ status: "ok" \| "degraded" \| "failing", reasons, pipelines }`; 503 when failing |
 * | `GET /pipelines` | token if `protectReads` | every pipeline: group, source, state, tranches, checkpoints |
 * | `GET /pipelines/{group}` | token if `protectReads` | one pipeline, with its busy, failing and stuck streams |
 * | `GET /pipelines/{group}/checkpoints` | token if `protectReads` | the stored checkpoints of the pipeline's source and group |
 * | `PUT /pipelines/{group}/checkpoints/{tranche}` | token | body `{ "position": "start" \| "tail" \| "<integer>", "force"?: true }` |
 * | `DELETE /pipelines/{group}/checkpoints/{tranche}` | token (+ `?force=true` while running) | forgets the checkpoint |
 *
 * Changing a checkpoint always needs `Authorization: Bearer <token>`; a handler created without
 * a token refuses every change (403). A reset takes effect when the pipeline next starts, so it
 * is refused (409) while the pipeline runs unless `force` is set: the running pipeline's own
 * commits would otherwise silently undo a reset backwards. Tranche names are URL path segments:
 * encode them (`GuestStay%3A0%2F2` for `GuestStay:0/2`). Errors are JSON
 * `{ "error": { "code", "message" } }` with a 4xx status naming what was wrong. Positions are
 * JSON strings (they are 64-bit).
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { Position } from "../core/batch.ts";
import type { CheckpointKey } from "../core/checkpoints.ts";
import { checkNumber, describe, ImpelError, InvalidArgumentError } from "../core/errors.ts";
import { errorText } from "../core/failure.ts";
import type { StreamStatus } from "../core/scheduler.ts";
import type { SinkStats } from "../core/stats.ts";
import type { ImpelMetrics, MeteredPipeline } from "./metrics.ts";

const log = getLogger(["impel", "http"]);

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
  readonly kind: "lag" | "lagUnknown" | "stuck" | "failing" | "faulted" | "stopped";
  /** A sentence for people. */
  readonly message: string;
  /** The tranche concerned, for lag. */
  readonly tranche?: string;
  /** The oldest stream concerned, for stuck and failing streams. */
  readonly stream?: string;
  /** The measured value: lag in position units, or an age in ms. */
  readonly value?: number;
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

/** Checks health thresholds and applies the defaults. */
function resolveThresholds(t: HealthThresholds = {}): Required<HealthThresholds> {
  return {
    lag: checkThresholds("health.lag", t.lag, {}),
    stuckMs: checkThresholds("health.stuckMs", t.stuckMs, { degraded: 0, failing: 300_000 }),
    failingMs: checkThresholds("health.failingMs", t.failingMs, {
      degraded: 60_000,
      failing: 300_000,
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

/**
 * Assesses the health of `pipelines`: faulted or stopped pipelines are failing; stuck and
 * failing streams and lag count against `thresholds`.
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
): Promise<HealthReport> {
  const t = resolveThresholds(thresholds);
  const results = await Promise.all(pipelines.map((p) => pipelineHealth(p, t)));
  const reasons = results.flatMap((r) => r.reasons).sort((a, b) => RANK[b.status] - RANK[a.status]);
  return {
    status: results.reduce<HealthStatus>((s, r) => worst(s, r.status), "ok"),
    checkedAt: new Date().toISOString(),
    reasons,
    pipelines: results,
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
      message: `pipeline faulted: ${errorText(p.fault)}`,
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
  if (stats) {
    const stuck = streamReason(group, "stuck", stats.stuck, t.stuckMs);
    if (stuck) reasons.push(stuck);
    const failing = streamReason(group, "failing", stats.failing, t.failingMs);
    if (failing) reasons.push(failing);
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
  return {
    group,
    source: p.source,
    status: reasons.reduce<HealthStatus>((s, r) => worst(s, r.status), "ok"),
    reasons,
  };
}

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
   * The bearer token that checkpoint changes need (at least 16 characters). Without one, the
   * management API is read-only.
   */
  readonly token?: string;
  /** Also require the token for the management API's reads (default false). */
  readonly protectReads?: boolean;
  /** What makes `/health` degraded or failing. */
  readonly health?: HealthThresholds;
  /** A path prefix the routes live under, e.g. `/impel` (default: none). */
  readonly basePath?: string;
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
  resolveThresholds(thresholds); // fail at construction, not on the first request
  const protectReads = options.protectReads ?? false;

  async function authorize(request: Request) {
    if (token === undefined) {
      throw new HttpError(
        403,
        "ManagementDisabled",
        "checkpoint changes are disabled: the handler was created without a token",
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
    if (parts.length > 0 && parts[parts.length - 1] === "" && parts.length > 1) {
      parts = parts.slice(0, -1);
    }
    const method = request.method;
    const [head, group, sub, tranche, ...rest] = parts;
    const reads = async () => {
      allow(method, ["GET", "HEAD"]);
      if (protectReads) await authorize(request);
    };
    if (head === "metrics" && parts.length === 1) {
      allow(method, ["GET", "HEAD"]);
      return new Response(await metrics.metrics(), {
        headers: { "content-type": metrics.contentType, "cache-control": "no-store" },
      });
    }
    if (head === "health" && parts.length === 1) {
      allow(method, ["GET", "HEAD"]);
      const report = await checkHealth(metrics.pipelines(), thresholds);
      return json(report, report.status === "failing" ? 503 : 200);
    }
    if (head === "pipelines") {
      if (group === undefined) {
        await reads();
        return json({
          pipelines: await Promise.all(metrics.pipelines().map((p) => describePipeline(p, false))),
        });
      }
      if (group === "") {
        throw new HttpError(400, "InvalidPath", "the pipeline group must not be empty");
      }
      if (sub === undefined) {
        await reads();
        return json(await describePipeline(pipelineOf(group), true));
      }
      if (sub === "checkpoints" && tranche === undefined) {
        await reads();
        const p = pipelineOf(group);
        return json({ group, source: p.source, checkpoints: await storedCheckpoints(p) });
      }
      if (sub === "checkpoints" && rest.length === 0) {
        allow(method, ["PUT", "DELETE"]);
        await authorize(request);
        const p = pipelineOf(group);
        if (tranche === "") {
          throw new HttpError(400, "InvalidPath", "the tranche must not be empty");
        }
        if (method === "DELETE") {
          return json(
            await resetCheckpoint(p, tranche, {
              position: undefined,
              force: url.searchParams.get("force") === "true",
            }),
          );
        }
        return json(await resetCheckpoint(p, tranche, await readResetBody(request, p, tranche)));
      }
    }
    throw notFound(url.pathname);
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

function allow(method: string, methods: string[]) {
  if (!methods.includes(method)) {
    throw new HttpError(405, "MethodNotAllowed", `use ${methods.join(" or ")}`, {
      allow: methods.join(", "),
    });
  }
}

function json(body: unknown, status = 200, headers: Record<string, string> = {}): Response {
  const text = JSON.stringify(body, (_k, v) => (typeof v === "bigint" ? v.toString() : v));
  return new Response(text, { status, headers: { ...JSON_HEADERS, ...headers } });
}

/** Compares a presented secret with the expected one without leaking where they differ. */
async function sameSecret(presented: string, expected: string): Promise<boolean> {
  const enc = new TextEncoder();
  const [a, b] = await Promise.all([
    crypto.subtle.digest("SHA-256", enc.encode(presented)),
    crypto.subtle.digest("SHA-256", enc.encode(expected)),
  ]);
  const x = new Uint8Array(a), y = new Uint8Array(b);
  let diff = 0;
  for (let i = 0; i < x.length; i++) diff |= x[i] ^ y[i];
  return diff === 0;
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

const ages = (list: readonly StreamStatus[]) =>
  list.slice(0, 20).map((s) => ({
    stream: s.stream,
    ageMs: Math.round(s.ageMs),
    attempts: s.attempts,
    ...(s.error === undefined ? {} : { error: errorText(s.error) }),
  }));

async function describePipeline(p: MeteredPipeline, detailed: boolean) {
  const stats = p.stats();
  const reads = new Map(p.reads().map((r) => [r.tranche, r]));
  const names = p.tranches(stats);
  const lags = await p.lags(stats);
  const tranches = names.map((tranche) => {
    const t = stats.tranches.find((x) => x.tranche === tranche);
    const r = reads.get(tranche);
    const lag = lags.tranches.get(tranche);
    return {
      tranche,
      readPosition: r?.position ?? null,
      isTail: t?.isTail ?? r?.isTail ?? false,
      completed: t?.completed ?? null,
      committed: t?.committed ?? null,
      readAhead: t?.readAhead ?? 0,
      head: lag?.head ?? null,
      lag: lag?.lag ?? null,
    };
  });
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
      active: ages(stats.busy),
      failing: ages(stats.failing),
      stuck: ages(stats.stuck),
    },
  };
}

interface ResetRequest {
  readonly position: Position | undefined;
  readonly force: boolean;
}

async function readBody(request: Request): Promise<string> {
  const declared = request.headers.get("content-length");
  if (declared !== null && Number(declared) > MAX_BODY) {
    throw new HttpError(413, "BodyTooLarge", `the body must be at most ${MAX_BODY} bytes`);
  }
  if (!request.body) return "";
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.length;
    if (size > MAX_BODY) {
      await reader.cancel();
      throw new HttpError(413, "BodyTooLarge", `the body must be at most ${MAX_BODY} bytes`);
    }
    chunks.push(value);
  }
  const all = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    all.set(c, at);
    at += c.length;
  }
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(all);
  } catch {
    throw new HttpError(400, "InvalidBody", "the body is not valid UTF-8");
  }
}

const MAX_POSITION = (1n << 63n) - 1n;

async function readResetBody(
  request: Request,
  p: MeteredPipeline,
  tranche: string,
): Promise<ResetRequest> {
  const type = request.headers.get("content-type") ?? "";
  if (!/^application\/json\s*(;|$)/i.test(type)) {
    throw new HttpError(
      415,
      "UnsupportedMediaType",
      "the body must be JSON (Content-Type: application/json)",
    );
  }
  const text = await readBody(request);
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
    throw new HttpError(
      400,
      "InvalidBody",
      'the body must be an object like { "position": "start" | "tail" | "<integer>" }',
    );
  }
  const fields = body as Record<string, unknown>;
  for (const k of Object.keys(fields)) {
    if (k !== "position" && k !== "force") {
      throw new HttpError(
        400,
        "InvalidBody",
        `unknown field ${JSON.stringify(k)}; expected position and force`,
      );
    }
  }
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
  log.warn("checkpoint {source}/{tranche}/{group} reset from {previous} to {position} over HTTP", {
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
