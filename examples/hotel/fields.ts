/**
 * Small checks used by the hotel codecs' `parse` functions: stored data is untrusted input, so
 * each event's shape is verified once when it is decoded and the domain code can rely on it.
 *
 * @module
 */

/**
 * The stored data as an object of fields, or a throw naming what it was instead.
 *
 * @example
 * ```ts
 * import { fieldsOf, integer, listOf, text, textItem } from "./fields.ts";
 * const f = fieldsOf({ stayId: "s1", amount: 5, ids: ["a"] });
 * [text(f, "stayId"), integer(f, "amount"), listOf(f, "ids", textItem)]; // ["s1", 5, ["a"]]
 * ```
 */
export function fieldsOf(data: unknown): Readonly<Record<string, unknown>> {
  if (data === null || typeof data !== "object" || Array.isArray(data)) {
    throw new TypeError(`expected an object, got ${data === null ? "null" : typeof data}`);
  }
  return data as Record<string, unknown>;
}

/**
 * A non-empty string field.
 *
 * @example
 * ```ts
 * import { fieldsOf, integer, listOf, text, textItem } from "./fields.ts";
 * const f = fieldsOf({ id: "s1", amount: 5, ids: ["a"] });
 * [text(f, "id"), integer(f, "amount"), listOf(f, "ids", textItem)]; // ["s1", 5, ["a"]]
 * ```
 */
export function text(fields: Readonly<Record<string, unknown>>, key: string): string {
  const value = fields[key];
  if (typeof value !== "string" || value.length === 0) {
    throw new TypeError(`${key} must be a non-empty string`);
  }
  return value;
}

/**
 * An integer field (amounts are integer minor units, e.g. cents).
 *
 * @example
 * ```ts
 * import { fieldsOf, integer, listOf, text, textItem } from "./fields.ts";
 * const f = fieldsOf({ id: "s1", amount: 5, ids: ["a"] });
 * [text(f, "id"), integer(f, "amount"), listOf(f, "ids", textItem)]; // ["s1", 5, ["a"]]
 * ```
 */
export function integer(fields: Readonly<Record<string, unknown>>, key: string): number {
  const value = fields[key];
  if (typeof value !== "number" || !Number.isSafeInteger(value)) {
    throw new TypeError(`${key} must be an integer`);
  }
  return value;
}

/**
 * An array field whose items are checked by `item`.
 *
 * @example
 * ```ts
 * import { fieldsOf, integer, listOf, text, textItem } from "./fields.ts";
 * const f = fieldsOf({ id: "s1", amount: 5, ids: ["a"] });
 * [text(f, "id"), integer(f, "amount"), listOf(f, "ids", textItem)]; // ["s1", 5, ["a"]]
 * ```
 */
export function listOf<T>(
  fields: Readonly<Record<string, unknown>>,
  key: string,
  item: (value: unknown) => T,
): T[] {
  const value = fields[key];
  if (!Array.isArray(value)) throw new TypeError(`${key} must be an array`);
  return value.map(item);
}

/**
 * Checks a string item of a list.
 *
 * @example
 * ```ts
 * import { fieldsOf, integer, listOf, text, textItem } from "./fields.ts";
 * const f = fieldsOf({ id: "s1", amount: 5, ids: ["a"] });
 * [text(f, "id"), integer(f, "amount"), listOf(f, "ids", textItem)]; // ["s1", 5, ["a"]]
 * ```
 */
export function textItem(value: unknown): string {
  if (typeof value !== "string" || value.length === 0) {
    throw new TypeError("list items must be non-empty strings");
  }
  return value;
}
