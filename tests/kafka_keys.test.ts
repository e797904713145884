// The Kafka record reader's key table: distinct keys never share an entry, whatever their length,
// bytes or hashes, and it keeps every key across its growth. Pure: no broker.
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import fc from "fast-check";
import { addKey, createKeyTable, findKey, type KeyTable } from "../sources/kafka_keys.ts";

/** Finds `key`, adding it with `value` when missing; returns what the table held before. */
const intern = <T>(table: KeyTable<T>, key: Uint8Array, value: T): T | undefined => {
  const found = findKey(table, key);
  if (found === undefined) addKey(table, key, value);
  return found;
};
const hex = (key: Uint8Array) => Buffer.from(key).toString("hex");

Deno.test("key table: agrees with a Map of the keys' bytes, for short, long and binary keys", () => {
  const key = fc.oneof(
    fc.uint8Array({ minLength: 1, maxLength: 14 }),
    fc.uint8Array({ minLength: 11, maxLength: 40 }),
    // Keys that differ only in their last byte, or only in length by a trailing zero byte.
    fc.tuple(fc.uint8Array({ minLength: 0, maxLength: 13 }), fc.integer({ min: 0, max: 2 }))
      .map(([head, tail]) => new Uint8Array([...head, ...(tail === 2 ? [0, 0] : [tail])])),
  );
  fc.assert(
    fc.property(fc.array(key, { maxLength: 3000 }), (keys) => {
      const table = createKeyTable<string>();
      const model = new Map<string, string>();
      for (const k of keys) {
        const id = hex(k);
        assert.equal(intern(table, k, id), model.get(id), `key ${id}`);
        if (!model.has(id)) model.set(id, id);
      }
      assert.equal(table.values.length, model.size);
      // Every key is still found after the growths, each under its own value.
      for (const [id] of model) assert.equal(findKey(table, Buffer.from(id, "hex")), id);
    }),
    { numRuns: 60 },
  );
});

Deno.test("key table: a key is found from any view of the same bytes, and is kept as a copy", () => {
  const table = createKeyTable<number>();
  const response = Buffer.from("..Order-1..A-key-longer-than-twelve-bytes..");
  const short = response.subarray(2, 9);
  const long = response.subarray(11, 41);
  assert.equal(intern(table, short, 1), undefined);
  assert.equal(intern(table, long, 2), undefined);
  // The fetch response is reused by the next fetch: the table must not hold a view of it.
  response.fill(0);
  assert.equal(findKey(table, new TextEncoder().encode("Order-1")), 1);
  assert.equal(findKey(table, new TextEncoder().encode("A-key-longer-than-twelve-bytes")), 2);
  assert.equal(findKey(table, short), undefined);
});

Deno.test("key table: 100 000 keys of one length, many sharing most bytes, stay apart", () => {
  const table = createKeyTable<number>();
  const key = (i: number) => new TextEncoder().encode(`Item-${String(i).padStart(6, "0")}`);
  for (let i = 0; i < 100_000; i++) assert.equal(intern(table, key(i), i), undefined);
  for (let i = 0; i < 100_000; i++) assert.equal(findKey(table, key(i)), i);
  assert.equal(table.values.length, 100_000);
});
