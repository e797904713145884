/**
 * Interns Kafka record keys by their bytes, for the record reader: a key is looked up once per
 * record, so this lookup is on the source's hot path.
 *
 * An open-addressing table in typed arrays: a key of up to 12 bytes is held as its length and
 * four 24-bit words (always small integers to V8) next to its hash, so that a lookup compares
 * numbers in one contiguous array rather than walking to a copy of the key's bytes; a longer key
 * keeps a copy of its bytes, compared byte by byte. Keys are compared in full, never by hash
 * alone, so distinct keys never share an entry. The functions are module-level (not closures of
 * each table) so that the reader's call sites see one target whatever the table.
 *
 * @module
 */

/**
 * A table from key bytes to values, made by {@linkcode createKeyTable} and used through
 * {@linkcode findKey} and {@linkcode addKey}.
 *
 * @example
 * ```ts
 * import { createKeyTable, type KeyTable } from "./kafka_keys.ts";
 * const table: KeyTable<string> = createKeyTable();
 * console.log(table.values.length); // 0
 * ```
 */
export interface KeyTable<T> {
  /** The values, by entry; its length is the number of keys held. */
  readonly values: T[];
  /** Slot count − 1 (a power of two − 1). */
  mask: number;
  /** Entry number + 1 per slot; 0 is an empty slot. */
  slots: Int32Array;
  /** Per entry: hash, length and four words. */
  meta: Int32Array;
  /** Per entry: a copy of a key longer than 12 bytes. */
  readonly long: Array<Uint8Array | undefined>;
  /** The hash the last {@linkcode findKey} computed, for the {@linkcode addKey} after a miss. */
  hash: number;
  /** The length of the key the last find looked for. */
  length: number;
  /** Its first word (bytes 0–2). */
  w0: number;
  /** Its second word (bytes 3–5). */
  w1: number;
  /** Its third word (bytes 6–8). */
  w2: number;
  /** Its fourth word (bytes 9–11). */
  w3: number;
  /** The empty slot where the last find stopped. */
  slot: number;
}

/** Keys up to this length are held as words; longer ones as a copy of their bytes. */
const SHORT = 12;
const FIELDS = 6;

/**
 * Creates an empty key table.
 *
 * @example
 * ```ts
 * import { addKey, createKeyTable, findKey } from "./kafka_keys.ts";
 * const table = createKeyTable<string>();
 * const key = new TextEncoder().encode("Order-1");
 * if (findKey(table, key) === undefined) addKey(table, key, "Order-1");
 * console.log(findKey(table, key), table.values.length); // Order-1 1
 * ```
 */
export function createKeyTable<T>(): KeyTable<T> {
  const mask = 1023;
  return {
    values: [],
    mask,
    slots: new Int32Array(mask + 1),
    meta: new Int32Array(((mask + 1) >> 1) * FIELDS),
    long: [],
    hash: 0,
    length: 0,
    w0: 0,
    w1: 0,
    w2: 0,
    w3: 0,
    slot: 0,
  };
}

/**
 * The value of the non-empty key `bytes`, or undefined. A miss leaves its slot ready for an
 * {@linkcode addKey} of the same bytes right after.
 *
 * @example
 * ```ts
 * import { createKeyTable, findKey } from "./kafka_keys.ts";
 * console.log(findKey(createKeyTable(), new Uint8Array([1]))); // undefined
 * ```
 */
export function findKey<T>(t: KeyTable<T>, bytes: Uint8Array): T | undefined {
  const n = bytes.length;
  let h: number, w0 = 0, w1 = 0, w2 = 0, w3 = 0;
  if (n <= SHORT) {
    let i = 0;
    for (; i < n && i < 3; i++) w0 = (w0 << 8) | bytes[i];
    for (; i < n && i < 6; i++) w1 = (w1 << 8) | bytes[i];
    for (; i < n && i < 9; i++) w2 = (w2 << 8) | bytes[i];
    for (; i < n; i++) w3 = (w3 << 8) | bytes[i];
    h = Math.imul(n ^ w0, 0xcc9e2d51);
    h = Math.imul(((h << 13) | (h >>> 19)) ^ w1, 0x1b873593);
    h = Math.imul(((h << 13) | (h >>> 19)) ^ w2, 0xcc9e2d51);
    h = Math.imul(((h << 13) | (h >>> 19)) ^ w3, 0x1b873593);
  } else {
    h = 0x811c9dc5 ^ n;
    for (let i = 0; i < n; i++) h = Math.imul(h ^ bytes[i], 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  // 30 bits: a small integer to V8 (pointer compression), where a wider one would be a heap
  // number, allocated for each lookup.
  h &= 0x3fffffff;
  const { slots, meta, mask } = t;
  let p = h & mask;
  for (let e = slots[p] - 1; e >= 0; p = (p + 1) & mask, e = slots[p] - 1) {
    const m = e * FIELDS;
    if (meta[m] !== h || meta[m + 1] !== n) continue;
    if (n <= SHORT) {
      if (meta[m + 2] === w0 && meta[m + 3] === w1 && meta[m + 4] === w2 && meta[m + 5] === w3) {
        return t.values[e];
      }
    } else if (sameBytes(t.long[e]!, bytes)) return t.values[e];
  }
  t.hash = h;
  t.length = n;
  t.w0 = w0;
  t.w1 = w1;
  t.w2 = w2;
  t.w3 = w3;
  t.slot = p;
  return undefined;
}

/**
 * Adds `value` under `bytes`, which the last {@linkcode findKey} on `t` did not find.
 *
 * @example
 * ```ts
 * import { addKey, createKeyTable, findKey } from "./kafka_keys.ts";
 * const table = createKeyTable<number>();
 * const key = new Uint8Array([0xff]);
 * if (findKey(table, key) === undefined) addKey(table, key, 1);
 * console.log(findKey(table, key)); // 1
 * ```
 */
export function addKey<T>(t: KeyTable<T>, bytes: Uint8Array, value: T): void {
  const e = t.values.length;
  const m = e * FIELDS;
  const meta = t.meta;
  meta[m] = t.hash;
  meta[m + 1] = t.length;
  meta[m + 2] = t.w0;
  meta[m + 3] = t.w1;
  meta[m + 4] = t.w2;
  meta[m + 5] = t.w3;
  // A copy: the key is a view of the whole fetch response. Not `bytes.slice()`: on a Buffer
  // (what kafkajs hands over) that is another view, which would keep the response.
  t.long.push(t.length > SHORT ? Uint8Array.prototype.slice.call(bytes) : undefined);
  t.values.push(value);
  t.slots[t.slot] = e + 1;
  // At most half full, so that probes stay short.
  if (t.values.length * 2 > t.mask) grow(t);
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  const n = a.length;
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i === n;
}

function grow<T>(t: KeyTable<T>): void {
  const mask = t.mask * 2 + 1;
  const slots = new Int32Array(mask + 1);
  const meta = new Int32Array(((mask + 1) >> 1) * FIELDS);
  meta.set(t.meta);
  for (let e = 0; e < t.values.length; e++) {
    let p = meta[e * FIELDS] & mask;
    while (slots[p] !== 0) p = (p + 1) & mask;
    slots[p] = e + 1;
  }
  t.mask = mask;
  t.slots = slots;
  t.meta = meta;
}
