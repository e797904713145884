/**
 * Stream names: `{category}-{id}`, split on the first `-`. The category is non-empty and has no
 * `-`; the id is non-empty. Ids made of several parts join them with `_`.
 *
 * @module
 */
import { ImpelError } from "./errors.ts";

/**
 * A validated stream name such as `GroupCheckout-9f3a`.
 *
 * @example
 * ```ts
 * import { type StreamName, streamName } from "@impel/impel";
 * import { createMemoryStore } from "@impel/impel/sources/memory";
 * const seat: StreamName = streamName("Seat", "flight1", "12A"); // "Seat-flight1_12A"
 * await createMemoryStore().append(seat, [{ type: "Reserved", data: {} }], 0);
 * ```
 *
 * @category Events
 */
export type StreamName = string;

/**
 * A stream name, category or id did not follow the `{category}-{id}` rules.
 *
 * @example
 * ```ts
 * import { InvalidStreamNameError, parseStreamName } from "@impel/impel";
 * try {
 *   parseStreamName("-abc");
 * } catch (e) {
 *   console.log(e instanceof InvalidStreamNameError); // true
 * }
 * ```
 *
 * @category Events
 */
export class InvalidStreamNameError extends ImpelError {
  /** The rejected input. */
  readonly input: string;
  /** Creates the error for `input`, with `reason` saying which rule it broke. */
  constructor(input: string, reason: string) {
    super("InvalidStreamName", `invalid stream name ${JSON.stringify(input)}: ${reason}`);
    this.input = input;
  }
}

/**
 * The two parts of a stream name.
 *
 * @example
 * ```ts
 * import { type ParsedStreamName, parseStreamName } from "@impel/impel";
 * const { category, id }: ParsedStreamName = parseStreamName("GuestStay-42");
 * console.log(category, id); // "GuestStay" "42"
 * ```
 *
 * @category Events
 */
export interface ParsedStreamName {
  /** The part before the first `-`, e.g. `GroupCheckout`. */
  readonly category: string;
  /** The part after the first `-`, e.g. `9f3a`. */
  readonly id: string;
}

/**
 * Splits a stream name on its first `-`.
 *
 * @example
 * ```ts
 * import { parseStreamName } from "@impel/impel";
 * parseStreamName("GuestStay-a-b"); // { category: "GuestStay", id: "a-b" }
 * ```
 *
 * @category Events
 */
export function parseStreamName(name: string): ParsedStreamName {
  if (typeof name !== "string") throw new InvalidStreamNameError(String(name), "not a string");
  // A store keeps names as UTF-8 or text: PostgreSQL turns a lone surrogate into U+FFFD (another
  // stream's name) and refuses U+0000, so neither is a name.
  if (!name.isWellFormed()) throw new InvalidStreamNameError(name, "contains a lone surrogate");
  if (name.includes("\u0000")) throw new InvalidStreamNameError(name, "contains U+0000");
  const i = name.indexOf("-");
  if (i < 0) throw new InvalidStreamNameError(name, "missing '-' between category and id");
  if (i === 0) throw new InvalidStreamNameError(name, "empty category");
  if (i === name.length - 1) throw new InvalidStreamNameError(name, "empty id");
  return { category: name.slice(0, i), id: name.slice(i + 1) };
}

/**
 * Returns `name` unchanged if it is a valid stream name, or throws {@linkcode InvalidStreamNameError}.
 *
 * @example
 * ```ts
 * import { checkStreamName } from "@impel/impel";
 * const name = checkStreamName("Order-1"); // "Order-1"
 * ```
 *
 * @category Events
 */
export function checkStreamName(name: string): StreamName {
  parseStreamName(name);
  return name;
}

/**
 * Composes a stream name from a category and one or more id parts (joined with `_`).
 *
 * @example
 * ```ts
 * import { streamName } from "@impel/impel";
 * streamName("Seat", "flight1", "12A"); // "Seat-flight1_12A"
 * ```
 *
 * @category Events
 */
export function streamName(category: string, ...idParts: string[]): StreamName {
  checkCategory(category);
  if (idParts.length === 0) throw new InvalidStreamNameError(category, "no id parts given");
  for (const part of idParts) {
    if (typeof part !== "string" || part.length === 0) {
      throw new InvalidStreamNameError(`${category}-${idParts.join("_")}`, "empty id part");
    }
    if (part.includes("_")) {
      throw new InvalidStreamNameError(
        `${category}-${idParts.join("_")}`,
        `id part ${JSON.stringify(part)} contains '_'`,
      );
    }
  }
  return `${category}-${idParts.join("_")}`;
}

/**
 * Returns `category` if it is a valid category (non-empty, no `-`), else throws.
 *
 * @example
 * ```ts
 * import { checkCategory } from "@impel/impel";
 * checkCategory("GuestStay"); // "GuestStay"
 * ```
 *
 * @category Events
 */
export function checkCategory(category: string): string {
  if (typeof category !== "string" || category.length === 0) {
    throw new InvalidStreamNameError(String(category), "empty category");
  }
  if (category.includes("-")) throw new InvalidStreamNameError(category, "category contains '-'");
  if (!category.isWellFormed()) {
    throw new InvalidStreamNameError(category, "contains a lone surrogate");
  }
  if (category.includes("\u0000")) throw new InvalidStreamNameError(category, "contains U+0000");
  return category;
}

/**
 * The category of a stream name.
 *
 * @example
 * ```ts
 * import { categoryOf } from "@impel/impel";
 * categoryOf("GuestStay-42"); // "GuestStay"
 * ```
 *
 * @category Events
 */
export function categoryOf(name: StreamName): string {
  return parseStreamName(name).category;
}

/**
 * The id of a stream name (everything after the first `-`).
 *
 * @example
 * ```ts
 * import { idOf } from "@impel/impel";
 * idOf("GuestStay-42"); // "42"
 * ```
 *
 * @category Events
 */
export function idOf(name: StreamName): string {
  return parseStreamName(name).id;
}

/**
 * The `_`-separated parts of a stream name's id.
 *
 * @example
 * ```ts
 * import { idParts } from "@impel/impel";
 * idParts("Seat-flight1_12A"); // ["flight1", "12A"]
 * ```
 *
 * @category Events
 */
export function idParts(name: StreamName): string[] {
  return idOf(name).split("_");
}
