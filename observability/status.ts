/**
 * The live status of every pipeline of a metrics registry, as the status page shows it: one
 * snapshot (`GET /status` of the HTTP handler) and a Server-Sent Events feed of them
 * (`GET /status/events`) that every connected page shares.
 *
 * The feed builds one snapshot per interval whatever the number of pages, serialises it once,
 * and offers the same bytes to each page. A page that does not keep up is skipped (its stream
 * holds at most one queued snapshot) and dropped after `dropAfterMs` of skips, so a slow or
 * stalled client costs a bounded amount of memory. Its timer runs only while a page is
 * connected.
 *
 * @module
 */
import { checkInteger, checkNumber, describe, InvalidArgumentError } from "../core/errors.ts";
import { errorText } from "../core/failure.ts";
import type { ParkedStatus, StreamStatus } from "../core/scheduler.ts";
import type { SinkStats } from "../core/stats.ts";
import { sleep } from "../core/tranches.ts";
import {
  checkHealth,
  type HealthReason,
  type HealthStatus,
  type HealthThresholds,
} from "./health.ts";
import type { ThroughputSample } from "./history.ts";
import type { ImpelMetrics, MeteredPipeline } from "./metrics.ts";

/**
 * Options of the status page and its feed (`HttpHandlerOptions.status`).
 *
 * @example
 * ```ts
 * import { createMetrics } from "@impel/impel/metrics";
 * import { createHttpHandler, type StatusOptions } from "@impel/impel/http";
 * // A snapshot every 2 s to at most 10 pages at once.
 * const status: StatusOptions = { intervalMs: 2_000, maxClients: 10 };
 * const handler = createHttpHandler({ metrics: createMetrics({ defaultMetrics: false }), status });
 * ```
 *
 * @category HTTP
 */
export interface StatusOptions {
  /** One snapshot per this many ms to every connected page (default 1 000, at least 100). */
  readonly intervalMs?: number;
  /** Pages connected to the feed at once; more are refused with 503 (default 50). */
  readonly maxClients?: number;
  /** A page whose snapshots have been skipped for this long is disconnected (default 30 000). */
  readonly dropAfterMs?: number;
}

/**
 * One stream in a busy, failing or stuck list of a {@linkcode PipelineStatus}.
 *
 * @example
 * ```ts
 * import type { StreamRow } from "@impel/impel/http";
 * const line = (r: StreamRow) => `${r.stream} ${r.ageMs} ms ×${r.attempts} ${r.error ?? ""}`;
 * ```
 *
 * @category HTTP
 */
export interface StreamRow {
  /** The stream. */
  readonly stream: string;
  /** How long it has been in this state, ms. */
  readonly ageMs: number;
  /** Attempts at its current events. */
  readonly attempts: number;
  /** Its last error, for failing streams. */
  readonly error?: string;
}

/**
 * One tranche of a {@linkcode PipelineStatus}. Positions are decimal strings (they are 64-bit).
 *
 * @example
 * ```ts
 * import type { TrancheRow } from "@impel/impel/http";
 * const behind = (t: TrancheRow) => t.lag === null ? "unknown" : `${t.lag} behind ${t.head}`;
 * ```
 *
 * @category HTTP
 */
export interface TrancheRow {
  /** The tranche. */
  readonly tranche: string;
  /** Position of the latest batch read (null before the first, or when the source is not observed). */
  readonly readPosition: string | null;
  /** Whether its latest batch reached the tail. */
  readonly isTail: boolean;
  /** Position up to which every batch is complete. */
  readonly completed: string | null;
  /** Position last committed to the checkpoint store. */
  readonly committed: string | null;
  /** Batches read and not yet passed by `completed`. */
  readonly readAhead: number;
  /** The backend's head (null without `positions.head` or `heads`). */
  readonly head: string | null;
  /** Head minus completed, in the source's position units. */
  readonly lag: number | null;
  /** Checkpoint commits failed in a row. */
  readonly commitFailures: number;
  /** The last commit error, while commits fail. */
  readonly commitError?: string;
}

/**
 * One pipeline in a {@linkcode StatusSnapshot}.
 *
 * @example
 * ```ts
 * import type { PipelineStatus } from "@impel/impel/http";
 * const handledPerSecond = (p: PipelineStatus) => {
 *   const last = p.history.at(-1);
 *   return last === undefined ? 0 : last.handled / (last.ms / 1000);
 * };
 * ```
 *
 * @category HTTP
 */
export interface PipelineStatus {
  /** The consumer group. */
  readonly group: string;
  /** The source's name in checkpoint keys. */
  readonly source: string;
  /** `running`, `stopped` or `faulted`. */
  readonly state: MeteredPipeline["state"];
  /** The fault, as text, once faulted. */
  readonly fault?: string;
  /** Set when the sink's stats could not be read (the rest is then empty). */
  readonly error?: string;
  /** Its health and the reasons. */
  readonly health: { readonly status: HealthStatus; readonly reasons: readonly HealthReason[] };
  /** Running totals since start. */
  readonly counters: Readonly<Record<string, number>>;
  /** Streams with state. */
  readonly streams: number;
  /** Streams with work, by state (stuck, failing, active, ready, buffered). */
  readonly states: Readonly<Record<string, number>>;
  /** Events buffered and not yet handled. */
  readonly bufferedEvents: number;
  /** Batches read and not yet complete. */
  readonly uncompletedBatches: number;
  /** The read-ahead limit. */
  readonly maxReadAhead: number;
  /** Per tranche. */
  readonly tranches: readonly TrancheRow[];
  /** Handler calls in flight (the oldest 20). */
  readonly busy: readonly StreamRow[];
  /** Streams whose last attempt threw (the oldest 20). */
  readonly failing: readonly StreamRow[];
  /** Streams with no progress for `stuckAfterMs` (the oldest 20). */
  readonly stuck: readonly StreamRow[];
  /** Parked streams as the sink knows them (the oldest 20 listed). */
  readonly parked: {
    readonly streams: number;
    readonly events: number;
    readonly oldestMs: number;
    readonly oldest: readonly ParkedStatus[];
    readonly storeFailing?: { readonly since: number; readonly error: string };
  };
  /** Park stores the management API can release from. */
  readonly parkStores: number;
  /** Whether a checkpoint store is registered (checkpoints can be reset). */
  readonly checkpoints: boolean;
  /** Throughput and latency per interval, oldest first. */
  readonly history: readonly ThroughputSample[];
}

/**
 * What `GET /status` answers and each `snapshot` event of `GET /status/events` carries.
 *
 * @example
 * ```ts
 * import { createMetrics } from "@impel/impel/metrics";
 * import { createHttpHandler, type StatusSnapshot } from "@impel/impel/http";
 * const handler = createHttpHandler({ metrics: createMetrics({ defaultMetrics: false }) });
 * const snapshot: StatusSnapshot = await (await handler(new Request("http://localhost/status")))
 *   .json();
 * console.log(snapshot.health, snapshot.pipelines.length); // "ok" 0
 * ```
 *
 * @category HTTP
 */
export interface StatusSnapshot {
  /** When it was made, ms since the epoch. */
  readonly at: number;
  /** The feed's interval, ms. */
  readonly intervalMs: number;
  /** Whether the handler has a token (actions possible with it). */
  readonly actions: boolean;
  /** Whether reads need the token too (`protectReads`). */
  readonly protectReads: boolean;
  /** The worst status of any pipeline. */
  readonly health: HealthStatus;
  /** Every pipeline. */
  readonly pipelines: readonly PipelineStatus[];
  /** Pages connected to the feed, snapshots skipped for slow pages, and pages dropped. */
  readonly feed: { readonly clients: number; readonly skipped: number; readonly dropped: number };
}

/** The resolved options of the status feed. */
export interface ResolvedStatusOptions {
  readonly intervalMs: number;
  readonly maxClients: number;
  readonly dropAfterMs: number;
}

/** Checks {@linkcode StatusOptions} and applies the defaults. */
export function resolveStatusOptions(options: StatusOptions | undefined): ResolvedStatusOptions {
  if (options !== undefined && (options === null || typeof options !== "object")) {
    throw new InvalidArgumentError("status", `must be an object, got ${describe(options)}`);
  }
  const intervalMs = checkNumber("status.intervalMs", options?.intervalMs ?? 1000, 100);
  return {
    intervalMs,
    maxClients: checkInteger("status.maxClients", options?.maxClients ?? 50, 1, 10_000),
    dropAfterMs: checkNumber("status.dropAfterMs", options?.dropAfterMs ?? 30_000, intervalMs),
  };
}

/** The oldest 20 of a busy, failing or stuck list, with errors as text. */
export const streamRows = (list: readonly StreamStatus[]): StreamRow[] =>
  list.slice(0, 20).map((s) => ({
    stream: s.stream,
    ageMs: Math.round(s.ageMs),
    attempts: s.attempts,
    ...(s.error === undefined ? {} : { error: errorText(s.error) }),
  }));

/**
 * Read position, completed and committed positions, read-ahead, head and lag of every tranche
 * the pipeline's sink or source knows (what `GET /pipelines` answers per tranche).
 */
export async function describeTranches(p: MeteredPipeline, stats: SinkStats) {
  const reads = new Map(p.reads().map((r) => [r.tranche, r]));
  const lags = await p.lags(stats);
  return p.tranches(stats).map((tranche) => {
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
      trouble: t,
    };
  });
}

const str = (p: bigint | null) => (p === null ? null : p.toString());

async function pipelineStatus(
  p: MeteredPipeline,
  health: PipelineStatus["health"],
  since: number | undefined,
): Promise<PipelineStatus> {
  const base = {
    group: p.group,
    source: p.source,
    state: p.state,
    ...(p.state === "faulted" ? { fault: errorText(p.fault) } : {}),
    health,
    parkStores: p.parkStores.length,
    checkpoints: p.checkpoints !== undefined,
    history: p.history(since),
  };
  let stats: SinkStats;
  try {
    stats = p.stats();
  } catch (error) {
    return {
      ...base,
      error: `its stats failed: ${errorText(error)}`,
      counters: {},
      streams: 0,
      states: {},
      bufferedEvents: 0,
      uncompletedBatches: 0,
      maxReadAhead: 0,
      tranches: [],
      busy: [],
      failing: [],
      stuck: [],
      parked: { streams: 0, events: 0, oldestMs: 0, oldest: [] },
    };
  }
  const tranches = (await describeTranches(p, stats)).map(({ trouble, ...t }): TrancheRow => ({
    ...t,
    readPosition: str(t.readPosition),
    completed: str(t.completed),
    committed: str(t.committed),
    head: str(t.head),
    commitFailures: trouble?.commitFailures ?? 0,
    ...(trouble?.commitError === undefined ? {} : { commitError: errorText(trouble.commitError) }),
  }));
  const parked = stats.parked;
  return {
    ...base,
    counters: { ...stats.counters } as Record<string, number>,
    streams: stats.streams,
    states: Object.fromEntries(Object.entries(stats.states).map(([k, v]) => [k, v.streams])),
    bufferedEvents: stats.bufferedEvents,
    uncompletedBatches: stats.uncompletedBatches,
    maxReadAhead: stats.maxReadAhead,
    tranches,
    busy: streamRows(stats.busy),
    failing: streamRows(stats.failing),
    stuck: streamRows(stats.stuck),
    parked: {
      streams: parked.streams,
      events: parked.events,
      oldestMs: Math.round(parked.oldestMs),
      oldest: parked.oldest.slice(0, 20).map((x) => ({ ...x, ageMs: Math.round(x.ageMs) })),
      ...(parked.storeFailing === undefined ? {} : {
        storeFailing: {
          since: parked.storeFailing.since,
          error: errorText(parked.storeFailing.error),
        },
      }),
    },
  };
}

/** What the handler's status routes need. */
export interface StatusFeed {
  /** The snapshot; with `since`, the history only after it. */
  snapshot(since?: number): Promise<StatusSnapshot>;
  /**
   * A `text/event-stream` response: a full snapshot now, then one per interval; undefined when
   * `maxClients` pages are connected already, or once closed.
   */
  events(): Promise<Response | undefined>;
  /** Pages connected now. */
  clients(): number;
  /** Whether {@linkcode StatusFeed.close} was called. */
  readonly closed: boolean;
  /** Ends every page's stream and refuses new ones (a server's graceful shutdown waits for them). */
  close(): void;
}

interface Client {
  readonly controller: ReadableStreamDefaultController<Uint8Array>;
  /** When its snapshots started being skipped (0 while it keeps up). */
  behindSince: number;
}

/**
 * How many seconds of history each feed snapshot repeats, so that a page that missed a few
 * snapshots (skipped while slow, a reconnect) fills its chart without asking again.
 */
const REPEAT_MS = 10_000;

/** The status snapshot and its shared Server-Sent Events feed. */
export function createStatusFeed(
  metrics: ImpelMetrics,
  thresholds: HealthThresholds,
  options: ResolvedStatusOptions & { readonly actions: boolean; readonly protectReads: boolean },
): StatusFeed {
  const { intervalMs, maxClients, dropAfterMs } = options;
  const clients = new Set<Client>();
  const counts = { skipped: 0, dropped: 0 };
  const encoder = new TextEncoder();
  let loop: AbortController | undefined;
  let seq = 0;
  let connecting = 0;
  let closed = false;

  async function snapshot(since?: number): Promise<StatusSnapshot> {
    const pipelines = metrics.pipelines();
    const report = await checkHealth(pipelines, thresholds);
    const byGroup = new Map(report.pipelines.map((h) => [h.group, h]));
    return {
      at: Date.now(),
      intervalMs,
      actions: options.actions,
      protectReads: options.protectReads,
      health: report.status,
      pipelines: await Promise.all(pipelines.map((p) => {
        const h = byGroup.get(p.group);
        return pipelineStatus(p, { status: h?.status ?? "ok", reasons: h?.reasons ?? [] }, since);
      })),
      feed: { clients: clients.size, ...counts },
    };
  }

  function frame(body: unknown): Uint8Array {
    seq++;
    // JSON-safe by construction (positions are strings already): no copy before stringifying.
    return encoder.encode(`id: ${seq}\nevent: snapshot\ndata: ${JSON.stringify(body)}\n\n`);
  }

  function failureFrame(error: unknown): Uint8Array {
    return encoder.encode(
      `event: failure\ndata: ${JSON.stringify({ error: errorText(error) })}\n\n`,
    );
  }

  function drop(client: Client) {
    if (!clients.delete(client)) return;
    if (clients.size === 0) {
      loop?.abort();
      loop = undefined;
    }
  }

  /** Offers a frame: queued if the page keeps up, else skipped; dropped once too far behind. */
  function offer(client: Client, chunk: Uint8Array, now: number) {
    if ((client.controller.desiredSize ?? 0) > 0) {
      client.behindSince = 0;
      client.controller.enqueue(chunk);
      return;
    }
    counts.skipped++;
    if (client.behindSince === 0) client.behindSince = now;
    else if (now - client.behindSince >= dropAfterMs) {
      counts.dropped++;
      drop(client);
      // Errors the stream, which frees what it still queues, and closes the connection.
      client.controller.error(
        new Error(`status page too slow: no snapshot read for ${dropAfterMs} ms`),
      );
    }
  }

  async function run(signal: AbortSignal) {
    while (await sleep(intervalMs, signal)) {
      let chunk: Uint8Array;
      try {
        chunk = frame(await snapshot(Date.now() - REPEAT_MS));
      } catch (error) {
        chunk = failureFrame(error);
      }
      const now = Date.now();
      for (const client of [...clients]) offer(client, chunk, now);
    }
  }

  return {
    snapshot,
    clients: () => clients.size,
    get closed() {
      return closed;
    },
    close() {
      closed = true;
      for (const client of [...clients]) {
        drop(client);
        try {
          client.controller.close();
        } catch {
          // already errored
        }
      }
    },
    async events() {
      if (closed) return undefined;
      // A slot is taken before the first snapshot is built, so pages connecting at once cannot
      // pass the limit together.
      if (clients.size + connecting >= maxClients) return undefined;
      connecting++;
      let first: Uint8Array;
      try {
        first = frame(await snapshot());
      } catch (error) {
        first = failureFrame(error);
      } finally {
        connecting--;
      }
      let client: Client | undefined;
      const body = new ReadableStream<Uint8Array>({
        start(controller) {
          client = { controller, behindSince: 0 };
          if (closed) return controller.close();
          // Reconnect after 2 s if the connection drops; then the full snapshot.
          controller.enqueue(encoder.encode("retry: 2000\n\n"));
          controller.enqueue(first);
          clients.add(client);
          if (loop === undefined) {
            loop = new AbortController();
            run(loop.signal).catch(() => {});
          }
        },
        cancel() {
          if (client) drop(client);
        },
      }, new CountQueuingStrategy({ highWaterMark: 1 }));
      // A page that goes away cancels the body (Deno.serve and Bun.serve both do); the
      // request's signal is not used, as Deno.serve also aborts it once a response completes.
      return new Response(body, {
        headers: {
          "content-type": "text/event-stream; charset=utf-8",
          "cache-control": "no-store",
          // Proxies that buffer responses (nginx) would hold the events back.
          "x-accel-buffering": "no",
        },
      });
    },
  };
}
