/**
 * Retention on PostgreSQL: a cleanup job that removes old events from MessageDB categories
 * (`message_store.messages`) and old dead letters from queues (`queues/postgres.ts`), by the
 * rules of `retention/policy.ts` or of a stream configuration (`core/streamconfig.ts`).
 *
 * - **Bounded batches.** Each statement scans at most `batchSize` rows of one category (by the
 *   category index, in global-position order) or one queue's dead letters, removes the expired
 *   ones and commits on its own; the job yields (`pauseMs`) between statements. No statement holds
 *   more than `batchSize` row locks, and writers (`write_message` only inserts) never wait on it.
 * - **A prefix, never a hole.** A category is cleaned from its oldest event forward and a pass
 *   stops at the first event that is not expired, so what is removed is always the oldest part
 *   of every stream: a stream never loses an event in the middle. The last `keepLast` (default 1)
 *   events of every stream are kept whatever their age: MessageDB numbers a stream's next event
 *   from its highest remaining position, so an emptied stream would restart at position 0.
 * - **The horizon.** Each statement that removes events raises the category's horizon in
 *   `<schema>.retention_horizons` (the highest global position removed + 1) in the same
 *   statement. The MessageDB source (`retention` option) reads it after each page: a reader whose
 *   position is below it may have missed removed events, and gets the outcome it asked for.
 * - **Archive.** A rule with `archive: true` copies what it removes into `<schema>.message_archive`
 *   or `<schema>.queue_dead_letter_archive`, in the same statement as the delete.
 * - **Queues.** Acked messages are deleted by `ack` itself, so a queue's retention is about its
 *   dead letters (by `dead_at`); messages not yet acked are never removed.
 * - **When.** `run()` makes a pass every `intervalMs`, or, with `windows`, only inside the daily
 *   windows (UTC), cutting a pass short when its window ends; `runOnce()` makes one pass now.
 * - **Metrics.** Given `metrics` (`createMetrics()` of `@impel/impel/metrics`), the job counts
 *   `impel_retention_removed_total{target,name,action}` (action `deleted` or `archived`),
 *   `impel_retention_passes_total{outcome}` (`completed`, `cut` by a window's end or a stop,
 *   `failed`) and sets `impel_retention_last_pass_seconds` (the last pass's duration).
 *
 * Tables are created by {@linkcode initPostgresRetention}, never implicitly.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { Counter, Gauge, type Registry } from "prom-client";
import { describe, ImpelError, InvalidArgumentError } from "../core/errors.ts";
import { errorText } from "../core/failure.ts";
import { sleep } from "../core/tranches.ts";
import { type SqlClient, sqlIdentifier, type SqlRow, sqlState, toBigInt } from "../stores/sql.ts";
import {
  checkRetentionRules,
  type RetentionPolicy,
  type RetentionRule,
  ruleFor,
} from "./policy.ts";

export type { RetentionPolicy, RetentionRule } from "./policy.ts";
export type { SqlClient, SqlRow } from "../stores/sql.ts";
export { ImpelError, InvalidArgumentError } from "../core/errors.ts";

const log = getLogger(["impel", "retention"]);

/**
 * The retention tables do not exist: run {@linkcode initPostgresRetention} first.
 *
 * @example
 * ```ts
 * import { RetentionTablesMissingError } from "@impel/impel/retention/postgres";
 * const e = new RetentionTablesMissingError('"impel"', new Error("relation does not exist"));
 * console.log(e.code); // "RetentionTablesMissing"
 * ```
 *
 * @category Retention
 */
export class RetentionTablesMissingError extends ImpelError {
  /**
   * Creates the error for the quoted `schema`; `cause` is the driver's error; `queues`: it is the
   * queue tables a queue rule reads that are missing (made by `initPostgresQueues`).
   */
  constructor(schema: string, cause: unknown, queues = false) {
    super(
      "RetentionTablesMissing",
      queues
        ? `the queue tables of schema ${schema} (queueSchema), which queue rules clean, do not ` +
          `exist: call initPostgresQueues(client, { schema }) first, or give no queue rules ` +
          `(${errorText(cause)})`
        : `the retention tables of schema ${schema} do not exist: call ` +
          `initPostgresRetention(client, { schema }) first (${errorText(cause)})`,
      { cause },
    );
  }
}

/**
 * Creates the schema, the horizon table and the two archive tables if they do not exist; safe on
 * every start and from several processes at once. The MessageDB schema must exist (the message
 * archive copies its table's columns).
 *
 * @example
 * ```ts
 * import pg from "pg";
 * import { initPostgresRetention } from "@impel/impel/retention/postgres";
 * const pool = new pg.Pool({ connectionString: "postgres://postgres@127.0.0.1/impel_test" });
 * await initPostgresRetention(pool, { schema: "impel" });
 * await pool.end();
 * ```
 *
 * @category Retention
 */
export async function initPostgresRetention(
  client: SqlClient,
  options: { readonly schema?: string } = {},
): Promise<void> {
  const s = sqlIdentifier("schema", options.schema ?? "impel");
  await client.query(`
    SELECT pg_advisory_xact_lock(hashtext('impel_retention_init'));
    CREATE SCHEMA IF NOT EXISTS ${s};
    CREATE TABLE IF NOT EXISTS ${s}.retention_horizons (
      target text NOT NULL,
      name text NOT NULL,
      horizon bigint NOT NULL,
      updated_at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (target, name)
    );
    CREATE TABLE IF NOT EXISTS ${s}.message_archive (
      LIKE message_store.messages,
      archived_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX IF NOT EXISTS message_archive_stream
      ON ${s}.message_archive (stream_name, position);
    CREATE TABLE IF NOT EXISTS ${s}.queue_dead_letter_archive (
      id bigint NOT NULL,
      queue text NOT NULL,
      body json NOT NULL,
      enqueued_at timestamptz NOT NULL,
      deliveries integer NOT NULL,
      last_error text NOT NULL,
      dead_at timestamptz NOT NULL,
      archived_at timestamptz NOT NULL DEFAULT now()
    );
  `);
}

/**
 * Reads a category's retention horizon: the highest global position retention removed from it
 * + 1 (`undefined` if it never removed any). A reader at a position below it may have missed
 * events.
 *
 * @example
 * ```ts
 * import pg from "pg";
 * import { initPostgresRetention, retentionHorizon } from "@impel/impel/retention/postgres";
 * const pool = new pg.Pool({ connectionString: "postgres://postgres@127.0.0.1/impel_test" });
 * await initPostgresRetention(pool);
 * console.log(await retentionHorizon(pool, "Order")); // undefined until a pass removes some
 * await pool.end();
 * ```
 *
 * @category Retention
 */
export async function retentionHorizon(
  client: SqlClient,
  category: string,
  options: { readonly schema?: string } = {},
): Promise<bigint | undefined> {
  const s = sqlIdentifier("schema", options.schema ?? "impel");
  try {
    const { rows } = await client.query(
      `SELECT horizon FROM ${s}.retention_horizons WHERE target = 'category' AND name = $1`,
      [category],
    );
    return rows.length === 0 ? undefined : toBigInt(rows[0].horizon);
  } catch (error) {
    if (sqlState(error) === "42P01" || sqlState(error) === "3F000") {
      throw new RetentionTablesMissingError(s, error);
    }
    throw error;
  }
}

/**
 * A daily window (UTC, `"HH:MM"`) in which passes run; `end` before `start` crosses midnight.
 *
 * @example
 * ```ts
 * import type { CleanupWindow } from "@impel/impel/retention/postgres";
 * const night: CleanupWindow = { start: "23:30", end: "04:00" };
 * ```
 *
 * @category Retention
 */
export interface CleanupWindow {
  /** Start, `"HH:MM"` UTC. */
  readonly start: string;
  /** End, `"HH:MM"` UTC (exclusive). */
  readonly end: string;
}

/**
 * Options of {@linkcode postgresRetention}: the rules (or a stream configuration holding them),
 * where the tables are, and how fast and when to remove.
 *
 * @example
 * ```ts
 * import type { PostgresRetentionOptions } from "@impel/impel/retention/postgres";
 * const options: PostgresRetentionOptions = {
 *   rules: [{ target: "category", match: "*", policy: { maxAgeMs: 7 * 86_400_000 } }],
 *   batchSize: 500,
 *   windows: [{ start: "02:00", end: "04:00" }],
 * };
 * ```
 *
 * @category Retention
 */
export interface PostgresRetentionOptions {
  /** The rules, first match wins (or `streams`). */
  readonly rules?: readonly RetentionRule[];
  /** A stream configuration whose entries give the rules (instead of `rules`). */
  readonly streams?: { retentionRules(): readonly RetentionRule[] };
  /** The schema of the horizon and archive tables (default `impel`). */
  readonly schema?: string;
  /** The schema of the queue tables (default `impel`); only read by queue rules. */
  readonly queueSchema?: string;
  /** Rows scanned per statement (default 1000, 1 to 100 000). */
  readonly batchSize?: number;
  /** Pause between statements, ms (default 10): room for other work on a busy database. */
  readonly pauseMs?: number;
  /** Time between passes of `run()`, ms (default 1 hour). */
  readonly intervalMs?: number;
  /** Daily windows (UTC) outside which `run()` removes nothing; default: always. */
  readonly windows?: readonly CleanupWindow[];
  /** Where the job's metrics go: `createMetrics()` (anything with a prom-client `registry`). */
  readonly metrics?: { readonly registry: unknown };
}

/**
 * What one pass removed, per category and queue (names with nothing removed are left out).
 *
 * @example
 * ```ts
 * import type { RetentionReport } from "@impel/impel/retention/postgres";
 * const report: RetentionReport = {
 *   categories: { Order: { removed: 120, archived: 0 } },
 *   queues: {},
 *   cut: false,
 *   durationMs: 35,
 * };
 * ```
 *
 * @category Retention
 */
export interface RetentionReport {
  /** Per category: rows removed (deleted or moved) and, of those, archived. */
  readonly categories: Readonly<Record<string, { removed: number; archived: number }>>;
  /** Per queue: dead letters removed and, of those, archived. */
  readonly queues: Readonly<Record<string, { removed: number; archived: number }>>;
  /** True when the pass stopped early (a window ended, or the signal stopped it). */
  readonly cut: boolean;
  /** How long the pass took. */
  readonly durationMs: number;
}

/**
 * The cleanup job of {@linkcode postgresRetention}.
 *
 * @example
 * ```ts
 * import pg from "pg";
 * import { initPostgresRetention, postgresRetention } from "@impel/impel/retention/postgres";
 * const pool = new pg.Pool({ connectionString: "postgres://postgres@127.0.0.1/impel_test" });
 * await initPostgresRetention(pool);
 * const job = postgresRetention(pool, {
 *   rules: [{ target: "category", match: "Metric*", policy: { maxCount: 10_000 } }],
 * });
 * const report = await job.runOnce();
 * console.log(report.cut); // false
 * await pool.end();
 * ```
 *
 * @category Retention
 */
export interface PostgresRetention {
  /** Makes one pass over every category and queue a rule covers; `signal` cuts it short. */
  runOnce(signal?: AbortSignal): Promise<RetentionReport>;
  /**
   * Makes passes every `intervalMs` (inside the windows, if any) until `signal` aborts; a pass
   * that fails is logged and counted, and the next one runs at its time.
   */
  run(signal: AbortSignal): Promise<void>;
}

/**
 * Creates the cleanup job. Rules are checked here (typed errors naming `rules[i]`).
 *
 * @example
 * ```ts
 * import pg from "pg";
 * import { initPostgresRetention, postgresRetention } from "@impel/impel/retention/postgres";
 * import { createMetrics } from "@impel/impel/metrics";
 * const pool = new pg.Pool({ connectionString: "postgres://postgres@127.0.0.1/impel_test" });
 * await initPostgresRetention(pool);
 * const metrics = createMetrics({ defaultMetrics: false });
 * const job = postgresRetention(pool, {
 *   rules: [
 *     { target: "category", match: "Audit", policy: {} }, // kept forever
 *     { target: "category", match: "*", policy: { maxAgeMs: 30 * 86_400_000 }, archive: true },
 *     { target: "queue", match: "*", policy: { maxAgeMs: 7 * 86_400_000 } },
 *   ],
 *   intervalMs: 15 * 60_000,
 *   metrics,
 * });
 * const ac = new AbortController();
 * const running = job.run(ac.signal);
 * ac.abort();
 * await running;
 * await pool.end();
 * ```
 *
 * @category Retention
 */
export function postgresRetention(
  client: SqlClient,
  options: PostgresRetentionOptions,
): PostgresRetention {
  if (options === null || typeof options !== "object") {
    throw new InvalidArgumentError("options", `must be an object, got ${describe(options)}`);
  }
  if (options.rules !== undefined && options.streams !== undefined) {
    throw new InvalidArgumentError("streams", "cannot be given with rules: pick one");
  }
  if (options.streams !== undefined && typeof options.streams?.retentionRules !== "function") {
    throw new InvalidArgumentError("streams", "must be a stream configuration (streamConfig())");
  }
  const rules = options.streams !== undefined
    ? checkRetentionRules(options.streams.retentionRules(), "streams.retentionRules()")
    : checkRetentionRules(options.rules ?? [], "rules");
  const schema = sqlIdentifier("schema", options.schema ?? "impel");
  const queueSchema = sqlIdentifier("queueSchema", options.queueSchema ?? "impel");
  const batchSize = whole("batchSize", options.batchSize ?? 1000, 1, 100_000);
  const pauseMs = whole("pauseMs", options.pauseMs ?? 10, 0, 3_600_000);
  const intervalMs = whole("intervalMs", options.intervalMs ?? 3_600_000, 1, 2 ** 31 - 1);
  if (!Array.isArray(options.windows ?? [])) {
    throw new InvalidArgumentError("windows", `must be an array, got ${describe(options.windows)}`);
  }
  const windows = (options.windows ?? []).map((w, i) => checkWindow(`windows[${i}]`, w));
  const meters = options.metrics === undefined ? undefined : retentionMetrics(options.metrics);

  const run = async (text: string, params: unknown[]): Promise<SqlRow[]> => {
    try {
      return (await client.query(text, params)).rows;
    } catch (error) {
      const state = sqlState(error);
      if (state === "42P01" || state === "3F000") {
        const qs = /queue_dead_letters/.test(String((error as Error)?.message));
        if (qs) throw new RetentionTablesMissingError(queueSchema, error, true);
        throw new RetentionTablesMissingError(schema, error);
      }
      throw error;
    }
  };

  // The distinct names of an index's leading column, one index probe each (a loose scan): a pass
  // over a wildcard rule costs one probe per category, not a scan of the table.
  const categoriesSql = `
    WITH RECURSIVE c AS (
      (SELECT message_store.category(stream_name) AS name FROM message_store.messages
        ORDER BY 1 LIMIT 1)
      UNION ALL
      SELECT (SELECT message_store.category(stream_name) FROM message_store.messages
               WHERE message_store.category(stream_name) > c.name ORDER BY 1 LIMIT 1)
        FROM c WHERE c.name IS NOT NULL
    ) SELECT name FROM c WHERE name IS NOT NULL`;
  const queuesSql = `
    WITH RECURSIVE q AS (
      (SELECT queue AS name FROM ${queueSchema}.queue_dead_letters ORDER BY 1 LIMIT 1)
      UNION ALL
      SELECT (SELECT queue FROM ${queueSchema}.queue_dead_letters WHERE queue > q.name
               ORDER BY 1 LIMIT 1)
        FROM q WHERE q.name IS NOT NULL
    ) SELECT name FROM q WHERE name IS NOT NULL`;

  const names = async (target: "category" | "queue"): Promise<string[]> => {
    const own = rules.filter((r) => r.target === target);
    if (own.length === 0) return [];
    if (own.every((r) => !r.match.endsWith("*"))) return [...new Set(own.map((r) => r.match))];
    return (await run(target === "category" ? categoriesSql : queuesSql, [])).map((r) =>
      String(r.name)
    );
  };

  // One batch of a category: scan `batchSize` rows after `after`, remove the expired prefix
  // (each stream's last keepLast excepted), raise the horizon, all in one statement.
  const categorySql = (archive: boolean) => `
    WITH scan AS (
      SELECT global_position, stream_name, position, time FROM message_store.messages
       WHERE message_store.category(stream_name) = $1 AND global_position > $2::bigint
       ORDER BY global_position LIMIT $3
    ), aged AS (
      SELECT s.*, (($4::bigint IS NOT NULL AND
                    s.time < (now() AT TIME ZONE 'utc') - $4::bigint * interval '1 millisecond')
                OR ($5::bigint IS NOT NULL AND s.global_position < $5::bigint)) AS expired
        FROM scan s
    ), bound AS (
      SELECT min(global_position) AS stop FROM aged WHERE NOT expired
    ), doomed AS (
      SELECT a.global_position FROM aged a, bound
       WHERE a.expired AND (bound.stop IS NULL OR a.global_position < bound.stop)
         AND EXISTS (SELECT 1 FROM message_store.messages n
                      WHERE n.stream_name = a.stream_name AND n.position >= a.position + $6)
    ), gone AS (
      DELETE FROM message_store.messages m USING doomed d
       WHERE m.global_position = d.global_position
      RETURNING m.*
    ), archived AS (
      ${
    archive
      ? `INSERT INTO ${schema}.message_archive
           (global_position, position, time, stream_name, type, data, metadata, id)
         SELECT global_position, position, time, stream_name, type, data, metadata, id FROM gone
         RETURNING 1`
      : "SELECT 1 WHERE false"
  }
    ), raised AS (
      INSERT INTO ${schema}.retention_horizons AS h (target, name, horizon)
      SELECT 'category', $1, max(global_position) + 1 FROM gone HAVING count(*) > 0
      ON CONFLICT (target, name) DO UPDATE
        SET horizon = GREATEST(h.horizon, EXCLUDED.horizon), updated_at = now()
      RETURNING horizon
    )
    SELECT (SELECT count(*) FROM gone)::integer AS removed,
           (SELECT count(*) FROM archived)::integer AS archived,
           (SELECT count(*) FROM scan)::integer AS scanned,
           (SELECT max(global_position) FROM scan)::text AS last,
           (SELECT stop FROM bound)::text AS stop,
           (SELECT count(*) FROM raised)::integer AS raised`;

  // The global position below which a category holds more than maxCount events.
  const countCutSql = `
    SELECT global_position::text AS p FROM message_store.messages
     WHERE message_store.category(stream_name) = $1
     ORDER BY global_position DESC OFFSET $2 LIMIT 1`;

  const cleanCategory = async (
    name: string,
    rule: RetentionRule,
    stop: () => boolean,
  ): Promise<{ removed: number; archived: number; cut: boolean }> => {
    const p = rule.policy;
    let countCut: string | null = null;
    if (p.maxCount !== undefined) {
      const rows = await run(countCutSql, [name, p.maxCount - 1]);
      if (rows.length === 0 && p.maxAgeMs === undefined) {
        return { removed: 0, archived: 0, cut: false };
      }
      // Rows at or below the maxCount-th newest's predecessor go: cut = that row's position.
      countCut = rows.length === 0 ? null : String(rows[0].p);
    }
    const text = categorySql(rule.archive === true);
    let after = "0", removed = 0, archived = 0;
    for (;;) {
      if (stop()) return { removed, archived, cut: true };
      const [r] = await run(text, [
        name,
        after,
        batchSize,
        p.maxAgeMs ?? null,
        countCut,
        p.keepLast ?? 1,
      ]);
      removed += Number(r.removed);
      archived += Number(r.archived);
      if (Number(r.removed) > 0) meters?.removed("category", name, r, rule.archive === true);
      if (r.stop !== null || Number(r.scanned) < batchSize) {
        return { removed, archived, cut: false };
      }
      after = String(r.last);
      if (pauseMs > 0) await sleep(pauseMs);
    }
  };

  const queueSql = (archive: boolean) => `
    WITH doomed AS (
      SELECT id FROM ${queueSchema}.queue_dead_letters
       WHERE queue = $1
         AND (($2::bigint IS NOT NULL AND dead_at < now() - $2::bigint * interval '1 millisecond')
           OR ($3::timestamptz IS NOT NULL AND (dead_at, id) < ($3::timestamptz, $4::bigint)))
       ORDER BY dead_at, id LIMIT $5 FOR UPDATE SKIP LOCKED
    ), gone AS (
      DELETE FROM ${queueSchema}.queue_dead_letters d USING doomed WHERE d.id = doomed.id
      RETURNING d.*
    ), archived AS (
      ${
    archive
      ? `INSERT INTO ${schema}.queue_dead_letter_archive
           (id, queue, body, enqueued_at, deliveries, last_error, dead_at)
         SELECT id, queue, body, enqueued_at, deliveries, last_error, dead_at FROM gone
         RETURNING 1`
      : "SELECT 1 WHERE false"
  }
    )
    SELECT (SELECT count(*) FROM gone)::integer AS removed,
           (SELECT count(*) FROM archived)::integer AS archived`;
  const queueCutSql = `
    SELECT dead_at::text AS cut_at, id::text AS cut_id FROM ${queueSchema}.queue_dead_letters WHERE queue = $1
     ORDER BY dead_at DESC, id DESC OFFSET $2 LIMIT 1`;

  const cleanQueue = async (
    name: string,
    rule: RetentionRule,
    stop: () => boolean,
  ): Promise<{ removed: number; archived: number; cut: boolean }> => {
    const p = rule.policy;
    let cutAt: unknown = null, cutId: string | null = null;
    if (p.maxCount !== undefined) {
      const rows = await run(queueCutSql, [name, p.maxCount]);
      if (rows.length > 0) {
        // The newest dead letter beyond maxCount: it and everything older go.
        cutAt = rows[0].cut_at;
        cutId = (BigInt(String(rows[0].cut_id)) + 1n).toString();
      }
    }
    if (p.maxAgeMs === undefined && cutId === null) return { removed: 0, archived: 0, cut: false };
    const text = queueSql(rule.archive === true);
    let removed = 0, archived = 0;
    for (;;) {
      if (stop()) return { removed, archived, cut: true };
      const [r] = await run(text, [name, p.maxAgeMs ?? null, cutAt, cutId, batchSize]);
      removed += Number(r.removed);
      archived += Number(r.archived);
      if (Number(r.removed) > 0) meters?.removed("queue", name, r, rule.archive === true);
      if (Number(r.removed) < batchSize) return { removed, archived, cut: false };
      if (pauseMs > 0) await sleep(pauseMs);
    }
  };

  const pass = async (signal?: AbortSignal, until?: number): Promise<RetentionReport> => {
    const started = performance.now();
    const stop = () => signal?.aborted === true || (until !== undefined && Date.now() >= until);
    const categories: Record<string, { removed: number; archived: number }> = {};
    const queues: Record<string, { removed: number; archived: number }> = {};
    let cut = false;
    try {
      for (const [target, out] of [["category", categories], ["queue", queues]] as const) {
        for (const name of await names(target)) {
          const rule = ruleFor(rules, target, name);
          if (rule === undefined || !hasLimit(rule.policy)) continue;
          const clean = target === "category" ? cleanCategory : cleanQueue;
          const r = await clean(name, rule, stop);
          if (r.removed > 0) out[name] = { removed: r.removed, archived: r.archived };
          if (r.cut) {
            cut = true;
            break;
          }
        }
        if (cut) break;
      }
    } catch (error) {
      meters?.pass("failed", performance.now() - started);
      throw error;
    }
    const durationMs = performance.now() - started;
    meters?.pass(cut ? "cut" : "completed", durationMs);
    const total = [...Object.values(categories), ...Object.values(queues)].reduce(
      (n, c) => n + c.removed,
      0,
    );
    if (total > 0) {
      log.info("retention removed {total} rows in {ms} ms{cut}", {
        total,
        ms: Math.round(durationMs),
        cut: cut ? " (cut short)" : "",
      });
    }
    return { categories, queues, cut, durationMs };
  };

  return {
    runOnce: (signal) => pass(signal),
    async run(signal) {
      if (!(signal instanceof AbortSignal)) {
        throw new InvalidArgumentError("signal", "must be an AbortSignal");
      }
      while (!signal.aborted) {
        let until: number | undefined;
        if (windows.length > 0) {
          const now = Date.now();
          const open = windows.map((w) => windowAt(w, now));
          const inside = open.find((o) => o.start <= now && now < o.end);
          if (inside === undefined) {
            const next = Math.min(...open.map((o) => (o.start > now ? o.start : o.start + DAY)));
            await sleep(Math.min(next - now, 2 ** 31 - 1), signal);
            continue;
          }
          until = inside.end;
        }
        try {
          await pass(signal, until);
        } catch (error) {
          log.warn("retention pass failed; the next runs in {ms} ms: {error}", {
            ms: intervalMs,
            error: errorText(error),
          });
        }
        await sleep(intervalMs, signal);
      }
    },
  };
}

const DAY = 86_400_000;

function hasLimit(p: RetentionPolicy): boolean {
  return p.maxAgeMs !== undefined || p.maxCount !== undefined;
}

function whole(field: string, value: unknown, min: number, max: number): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    throw new InvalidArgumentError(
      field,
      `must be an integer from ${min} to ${max}, got ${describe(value)}`,
    );
  }
  return value;
}

const HHMM = /^([01][0-9]|2[0-3]):([0-5][0-9])$/;

function checkWindow(field: string, w: unknown): { start: number; end: number } {
  const o = w as CleanupWindow;
  if (o === null || typeof o !== "object") {
    throw new InvalidArgumentError(
      field,
      `must be { start: "HH:MM", end: "HH:MM" }, got ${describe(w)}`,
    );
  }
  const minutes = (key: "start" | "end") => {
    const m = typeof o[key] === "string" ? HHMM.exec(o[key]) : null;
    if (m === null) {
      throw new InvalidArgumentError(
        `${field}.${key}`,
        `must be "HH:MM" (UTC), got ${describe(o[key])}`,
      );
    }
    return (Number(m[1]) * 60 + Number(m[2])) * 60_000;
  };
  const start = minutes("start"), end = minutes("end");
  if (start === end) {
    throw new InvalidArgumentError(`${field}.end`, `must differ from start (${o.start})`);
  }
  return { start, end };
}

/** The occurrence of a daily window that contains `now` or starts today (ms since the epoch). */
function windowAt(w: { start: number; end: number }, now: number): { start: number; end: number } {
  const day = now - (now % DAY);
  if (w.start < w.end) return { start: day + w.start, end: day + w.end };
  // Crossing midnight: the occurrence that began yesterday, if still open, else today's.
  const yesterday = { start: day - DAY + w.start, end: day + w.end };
  return now < yesterday.end ? yesterday : { start: day + w.start, end: day + DAY + w.end };
}

/** The job's series on a prom-client registry (shared by every job on that registry). */
function retentionMetrics(metrics: { readonly registry: unknown }) {
  const registry = metrics?.registry as Registry | undefined;
  if (typeof registry?.registerMetric !== "function") {
    throw new InvalidArgumentError(
      "metrics",
      "must be createMetrics() (with a prom-client registry)",
    );
  }
  const existing = <T>(name: string) => registry.getSingleMetric(name) as T | undefined;
  const removed = existing<Counter>("impel_retention_removed_total") ??
    new Counter({
      name: "impel_retention_removed_total",
      help:
        "Rows retention removed, by target (category, queue), name and action (deleted, archived)",
      labelNames: ["target", "name", "action"],
      registers: [registry],
    });
  const passes = existing<Counter>("impel_retention_passes_total") ??
    new Counter({
      name: "impel_retention_passes_total",
      help: "Retention passes by outcome (completed, cut, failed)",
      labelNames: ["outcome"],
      registers: [registry],
    });
  const last = existing<Gauge>("impel_retention_last_pass_seconds") ??
    new Gauge({
      name: "impel_retention_last_pass_seconds",
      help: "Duration of the last retention pass",
      registers: [registry],
    });
  return {
    removed(target: string, name: string, row: SqlRow, archive: boolean) {
      const n = Number(row.removed), a = Number(row.archived);
      if (archive) removed.inc({ target, name, action: "archived" }, a);
      if (n - (archive ? a : 0) > 0) {
        removed.inc({ target, name, action: "deleted" }, n - (archive ? a : 0));
      }
    },
    pass(outcome: string, ms: number) {
      passes.inc({ outcome });
      last.set(ms / 1000);
    },
  };
}
