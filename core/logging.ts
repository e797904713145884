/**
 * Log output that reads the same on Deno and Bun. impel logs through LogTape; the application
 * configures it. LogTape's default console output renders each value with the runtime's
 * `inspect`, which on Deno quotes every string (`"billing"`, `[""]` for an empty list) and on
 * Bun does not; these render values plainly everywhere.
 *
 * @module
 */
import { getConsoleSink, getTextFormatter, type LogRecord } from "@logtape/logtape";
import { errorText } from "./failure.ts";
import { jsonSafe } from "./json.ts";

/**
 * What impel's formatter reads of a LogTape `LogRecord` (any LogTape record is one).
 *
 * @example
 * ```ts
 * import type { LogRecordFields } from "@impel/impel";
 * const where = (r: LogRecordFields) => r.category.join(".");
 * ```
 *
 * @category Logging
 */
export interface LogRecordFields {
  /** The logger's category, e.g. `["impel", "sink"]`. */
  readonly category: readonly string[];
  /** The level name. */
  readonly level: string;
  /** The message: text parts at even indexes, values at odd ones. */
  readonly message: readonly unknown[];
  /** The template as written. */
  readonly rawMessage: unknown;
  /** When it was logged, ms since the epoch. */
  readonly timestamp: number;
  /** The structured values. */
  readonly properties: Record<string, unknown>;
}

/**
 * Renders a LogTape record as one line (it fits where LogTape takes a `TextFormatter`).
 *
 * @example
 * ```ts
 * import { type LogFormatter, logFormatter } from "@impel/impel";
 * const format: LogFormatter = logFormatter();
 * ```
 *
 * @category Logging
 */
export type LogFormatter = (record: LogRecordFields) => string;

/**
 * Receives LogTape records (it fits where LogTape takes a `Sink`).
 *
 * @example
 * ```ts
 * import { consoleLogSink, type LogSink } from "@impel/impel";
 * const sink: LogSink = consoleLogSink();
 * ```
 *
 * @category Logging
 */
export type LogSink = (record: LogRecordFields) => void;

// Control characters (a newline in a stream name) would forge lines of their own.
// deno-lint-ignore no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/g;
const escape = (text: string) =>
  text.replace(
    CONTROL,
    (c) =>
      c === "\n"
        ? "\\n"
        : c === "\t"
        ? "\\t"
        : `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );

function render(value: unknown, inspect: (value: unknown) => string): string {
  if (typeof value === "string") return escape(value);
  if (typeof value === "bigint") return value.toString();
  if (value instanceof Error) {
    const cause = value.cause === undefined ? "" : ` (cause: ${render(value.cause, inspect)})`;
    return escape(errorText(value)) + cause;
  }
  if (Array.isArray(value)) return value.map((v) => render(v, inspect)).join(", ");
  if (value !== null && typeof value === "object") {
    // JSON reads the same on every runtime; the runtimes' inspect does not.
    return escape(JSON.stringify(jsonSafe(value)));
  }
  return inspect(value);
}

/**
 * A LogTape text formatter that renders strings bare (control characters escaped, so a value
 * cannot forge a line), bigints as digits, errors as `Name: message (cause: ...)`, lists as
 * comma-separated items and other objects as JSON, the same on every runtime.
 *
 * @example
 * ```ts
 * import { configure, getStreamSink } from "@logtape/logtape";
 * import { logFormatter } from "@impel/impel";
 *
 * await configure({
 *   reset: true,
 *   sinks: { stderr: getStreamSink(new WritableStream(), { formatter: logFormatter() }) },
 *   loggers: [{ category: ["impel"], lowestLevel: "info", sinks: ["stderr"] }],
 * });
 * ```
 *
 * @category Logging
 */
export function logFormatter(): LogFormatter {
  const format = getTextFormatter({ value: render });
  return (record) => format(record as LogRecord);
}

/**
 * A LogTape console sink with {@linkcode logFormatter}: one plain line per record. Handler
 * failures log their message at warning; their stack follows at debug.
 *
 * @example
 * ```ts
 * import { configure } from "@logtape/logtape";
 * import { consoleLogSink } from "@impel/impel";
 *
 * await configure({
 *   reset: true,
 *   sinks: { console: consoleLogSink() },
 *   loggers: [{ category: ["impel"], lowestLevel: "info", sinks: ["console"] }],
 * });
 * ```
 *
 * @category Logging
 */
export function consoleLogSink(): LogSink {
  const sink = getConsoleSink({ formatter: logFormatter() });
  return (record) => sink(record as LogRecord);
}
