/**
 * A JSON-safe copy of plain data (what stats, snapshots and management answers hold), and the
 * JSON text of what a store keeps.
 *
 * @module
 */
import { InvalidArgumentError } from "./errors.ts";

/** A value `JSON.stringify` renders without throwing or losing what it says. */
export type JsonSafe =
  | null
  | boolean
  | number
  | string
  | readonly JsonSafe[]
  | { readonly [key: string]: JsonSafe };

/**
 * Copies `value` into what JSON can carry: a bigint becomes its decimal string (positions are
 * bigints and may pass 2^53), an `Error` becomes `{ name, message }` (JSON renders one as `{}`),
 * a `Date` its ISO text, NaN and infinities `null` (as in JSON), an object with `toJSON` what
 * that returns, a `Map` with string keys an object; `undefined` members are left out, and a
 * cycle becomes `"[cycle]"` rather than a throw.
 *
 * @example
 * ```ts
 * import { jsonSafe } from "@impel/impel";
 *
 * const text = JSON.stringify(jsonSafe({ position: 12n, error: new RangeError("no") }));
 * console.log(text); // {"position":"12","error":{"name":"RangeError","message":"no"}}
 * ```
 *
 * @category Stats
 */
export function jsonSafe(value: unknown): JsonSafe {
  return copy(value, new Set());
}

function copy(value: unknown, seen: Set<object>): JsonSafe {
  switch (typeof value) {
    case "bigint":
      return value.toString();
    case "number":
      return Number.isFinite(value) ? value : null; // as JSON.stringify has it
    case "string":
    case "boolean":
      return value;
    case "undefined":
    case "function":
    case "symbol":
      return null;
  }
  if (value === null) return null;
  const o = value as object;
  if (seen.has(o)) return "[cycle]";
  if (o instanceof Date) return Number.isNaN(o.getTime()) ? null : o.toISOString();
  if (o instanceof Error) return { name: o.name, message: o.message };
  const toJSON = (o as { toJSON?: unknown }).toJSON;
  if (typeof toJSON === "function") {
    // What the object says it is in JSON (a URL's text, stats' own view), made safe in turn.
    seen.add(o);
    try {
      return copy(toJSON.call(o), seen);
    } finally {
      seen.delete(o);
    }
  }
  seen.add(o);
  try {
    if (Array.isArray(o)) return o.map((v) => copy(v, seen));
    if (o instanceof Map) {
      const entries = [...o];
      // String keys read best as an object (tranche -> position); others as pairs.
      if (entries.every(([k]) => typeof k === "string")) {
        return Object.fromEntries(entries.map(([k, v]) => [k, copy(v, seen)]));
      }
      return entries.map(([k, v]) => [copy(k, seen), copy(v, seen)]);
    }
    if (o instanceof Set) return [...o].map((v) => copy(v, seen));
    const out: Record<string, JsonSafe> = {};
    for (const [k, v] of Object.entries(o)) {
      if (v !== undefined && typeof v !== "function") out[k] = copy(v, seen);
    }
    return out;
  } finally {
    seen.delete(o);
  }
}

/**
 * `JSON.stringify(value)` for what a store keeps, with what it cannot take (a bigint, a cycle)
 * refused as an {@linkcode InvalidArgumentError} naming `field` rather than a raw `TypeError`.
 * `undefined` stays `undefined`.
 *
 * @example
 * ```ts
 * import { storedJson } from "./json.ts";
 * console.log(storedJson("events[0].data", { n: 1 })); // {"n":1}
 * ```
 */
export function storedJson(field: string, value: unknown): string | undefined {
  try {
    return JSON.stringify(value);
  } catch (error) {
    throw new InvalidArgumentError(
      field,
      `must be JSON-serialisable: ${error instanceof Error ? error.message : String(error)}`,
    );
  }
}
