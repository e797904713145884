/**
 * What DynamoDB counts against its size limits, in bytes: attribute values, items and the
 * actions of a transaction. Internal to the DynamoDB modules.
 *
 * The rules were measured against DynamoDB Local 3.3.1, whose refusal of an oversized
 * transaction reports the payload it counted: a string is its UTF-8 bytes, a binary its bytes,
 * a number 1 byte plus 1 per significant pair of decimal digits (plus 1 if negative), a list or
 * map 3 bytes plus 1 per element (a map element also its name), a boolean or null 1 byte. A
 * `Put` costs its item and its condition's text; an `Update` its key, its expressions' text, the
 * attribute names and the values it uses (DynamoDB Local counts a value once per reference). The
 * attributes an update leaves alone are not counted. Real DynamoDB charges what a statement
 * writes, which this never undercounts.
 *
 * @module
 */
import type { AttributeValue, TransactWriteItem } from "@aws-sdk/client-dynamodb";

/**
 * The most a `TransactWriteItems` call may carry: 4 MiB, as DynamoDB counts it
 * ({@linkcode actionBytes}).
 *
 * @example
 * ```ts
 * import { MAX_TRANSACTION_BYTES } from "./dynamo-size.ts";
 * console.log(MAX_TRANSACTION_BYTES); // 4194304
 * ```
 */
export const MAX_TRANSACTION_BYTES = 4 * 1024 * 1024;

/**
 * The UTF-8 byte length of `s`, without allocating.
 *
 * @example
 * ```ts
 * import { utf8Length } from "./dynamo-size.ts";
 * console.log(utf8Length("€1")); // 4
 * ```
 */
export function utf8Length(s: string): number {
  let bytes = 0;
  for (let k = 0; k < s.length; k++) {
    const c = s.charCodeAt(k);
    if (c < 0x80) bytes += 1;
    else if (c < 0x800) bytes += 2;
    else if (c >= 0xd800 && c <= 0xdbff) {
      bytes += 4;
      k++;
    } else bytes += 3;
  }
  return bytes;
}

/**
 * The bytes of a number attribute: 1, plus 1 per significant pair of decimal digits (pairs
 * counted from the decimal point, zero pairs at either end not significant), plus 1 if negative.
 *
 * @example
 * ```ts
 * import { numberBytes } from "./dynamo-size.ts";
 * console.log(numberBytes("0"), numberBytes("100"), numberBytes("1764662400123")); // 1 2 8
 * ```
 */
export function numberBytes(n: string): number {
  const negative = n.startsWith("-");
  let [int = "", frac = ""] = (negative ? n.slice(1) : n).split(".");
  int = int.replace(/^0+/, "");
  frac = frac.replace(/0+$/, "");
  if (int.length % 2 === 1) int = `0${int}`;
  if (frac.length % 2 === 1) frac = `${frac}0`;
  const digits = int + frac;
  let from = 0, to = digits.length;
  while (from < to && digits.slice(from, from + 2) === "00") from += 2;
  while (to > from && digits.slice(to - 2, to) === "00") to -= 2;
  return 1 + (to - from) / 2 + (negative ? 1 : 0);
}

/**
 * The bytes DynamoDB counts for one attribute value.
 *
 * @example
 * ```ts
 * import { attributeBytes } from "./dynamo-size.ts";
 * console.log(attributeBytes({ L: [{ M: { t: { S: "a" } } }] })); // 10
 * ```
 */
export function attributeBytes(value: AttributeValue): number {
  if (value.S !== undefined) return utf8Length(value.S);
  if (value.N !== undefined) return numberBytes(value.N);
  if (value.B !== undefined) return binaryBytes(value.B);
  if (value.BOOL !== undefined || value.NULL !== undefined) return 1;
  if (value.L !== undefined) {
    let bytes = 3;
    for (const v of value.L) bytes += 1 + attributeBytes(v);
    return bytes;
  }
  if (value.M !== undefined) {
    let bytes = 3;
    for (const name in value.M) bytes += 1 + utf8Length(name) + attributeBytes(value.M[name]);
    return bytes;
  }
  const set = value.SS ?? value.NS ?? value.BS;
  if (set !== undefined) {
    let bytes = 0;
    for (const v of set as (string | Uint8Array)[]) {
      bytes += typeof v !== "string"
        ? binaryBytes(v)
        : value.NS !== undefined
        ? numberBytes(v)
        : utf8Length(v);
    }
    return bytes;
  }
  return 0;
}

/**
 * The bytes DynamoDB counts for an item: each attribute's name and value.
 *
 * @example
 * ```ts
 * import { itemBytes } from "./dynamo-size.ts";
 * console.log(itemBytes({ p: { S: "K" }, i: { N: "100" } })); // 5
 * ```
 */
export function itemBytes(item: Record<string, AttributeValue>): number {
  let bytes = 0;
  for (const name in item) bytes += utf8Length(name) + attributeBytes(item[name]);
  return bytes;
}

/**
 * The bytes one action of a transaction counts towards {@linkcode MAX_TRANSACTION_BYTES}.
 *
 * @example
 * ```ts
 * import { actionBytes } from "./dynamo-size.ts";
 * const put = {
 *   Put: {
 *     TableName: "events",
 *     Item: { p: { S: "K" }, i: { N: "100" } },
 *     ConditionExpression: "attribute_not_exists(p)",
 *   },
 * };
 * console.log(actionBytes(put)); // 28
 * ```
 */
export function actionBytes(action: TransactWriteItem): number {
  const op = action.Put ?? action.Update ?? action.Delete ?? action.ConditionCheck;
  if (op === undefined) return 0;
  const body = action.Put !== undefined ? itemBytes(action.Put.Item ?? {}) : itemBytes(
    (op as { Key?: Record<string, AttributeValue> }).Key ?? {},
  );
  const texts = [
    op.ConditionExpression,
    (op as { UpdateExpression?: string }).UpdateExpression,
  ];
  let bytes = body;
  for (const text of texts) if (text !== undefined) bytes += utf8Length(text);
  for (const name of Object.values(op.ExpressionAttributeNames ?? {})) bytes += utf8Length(name);
  const values = op.ExpressionAttributeValues ?? {};
  if (Object.keys(values).length > 0) {
    const text = texts.filter((t) => t !== undefined).join(" ");
    for (const [ref, value] of Object.entries(values)) {
      const uses = text.match(new RegExp(`${escape(ref)}(?![A-Za-z0-9_])`, "g"))?.length ?? 0;
      bytes += Math.max(1, uses) * attributeBytes(value);
    }
  }
  return bytes;
}

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

function binaryBytes(b: Uint8Array | string): number {
  // Lambda's JSON records carry binary values as base64 text.
  return typeof b === "string" ? Math.floor((b.length * 3) / 4) : b.byteLength;
}
