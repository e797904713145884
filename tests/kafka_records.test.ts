// How the Kafka source reads records: keys to streams, indexes, invalid records. Pure: no broker.
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import fc from "fast-check";
import { renderSpanMessages, SPAN_HEADER } from "../sinks/kafka_span.ts";
import {
  createRecordReader,
  type KafkaIncomingMessage,
  KafkaInvalidRecordError,
  keyStream,
} from "../sources/kafka_records.ts";
import type { StreamEvent } from "../core/event.ts";

const bytes = (s: string) => new TextEncoder().encode(s);
let offset = 0;
const plain = (key: string | Uint8Array | null, value = "v"): KafkaIncomingMessage => ({
  key: typeof key === "string" ? bytes(key) : key,
  value: bytes(value),
  timestamp: "1700000000000",
  offset: String(offset++),
});
const event = (index: number): StreamEvent => ({
  index,
  type: "Happened",
  data: { n: index },
  meta: null,
  id: `e${index}`,
  time: new Date(0),
  size: 8,
});
/** A span message as the ordered sink renders it, for events `from` .. `to - 1`. */
const span = (stream: string, from: number, to: number): KafkaIncomingMessage => {
  const events = Array.from({ length: to - from }, (_, i) => event(from + i));
  const [m] = renderSpanMessages(stream, events, 1000, 1_000_000);
  return {
    key: bytes(stream),
    value: bytes(m.value as string),
    timestamp: "0",
    offset: String(offset++),
    headers: { [SPAN_HEADER]: bytes("1") },
  };
};
const corrupt = (stream: string, value: string): KafkaIncomingMessage => ({
  ...span(stream, 0, 1),
  value: bytes(value),
});

Deno.test("kafka keys: stream-name keys stay, others get the default category, none merge", () => {
  assert.equal(keyStream(bytes("Order-1"), "Kafka"), "Order-1");
  assert.equal(keyStream(bytes("x"), "Kafka"), "Kafka-x");
  assert.equal(keyStream(bytes("Kafka-x"), "Kafka"), "Kafka-Kafka-x", "x and Kafka-x stay apart");
  assert.equal(keyStream(bytes("a%b"), "Kafka"), "Kafka-a%25b");
  assert.equal(keyStream(bytes("-x"), "Kafka"), "Kafka--x");
  // Two keys that a lossy decoder would both turn into "\uFFFD".
  const a = keyStream(new Uint8Array([0xff]), "Kafka");
  const b = keyStream(new Uint8Array([0xfe]), "Kafka");
  assert.notEqual(a, b);
  assert.match(a, /^Kafka-%~/);
});

Deno.test("kafka keys: distinct keys never share a stream (property)", () => {
  const key = fc.oneof(
    fc.uint8Array({ maxLength: 6 }).filter((k) => k.length > 0),
    fc.string({ maxLength: 6 }).filter((s) => s.length > 0).map(bytes),
    fc.constantFrom("x", "Kafka-x", "%", "%25", "%~AA", "Order-1").map(bytes),
  );
  fc.assert(
    fc.property(key, key, (k1, k2) => {
      const same = k1.length === k2.length && k1.every((v, i) => v === k2[i]);
      assert.equal(keyStream(k1, "Kafka") === keyStream(k2, "Kafka"), same);
    }),
    { numRuns: 2000 },
  );
});

Deno.test("kafka records: plain messages count per stream; null and empty keys share a per-partition stream", () => {
  const reader = createRecordReader({ defaultCategory: "Kafka" });
  const items = reader.items("t", 3, 1, [
    plain("Order-1"),
    plain("Order-2"),
    plain("Order-1"),
    plain(null),
    plain(new Uint8Array(0)),
  ]);
  assert.deepEqual(
    items.map((i) => [i.stream, i.event.index]),
    [["Order-1", 0], ["Order-2", 0], ["Order-1", 1], ["Kafka-%none_t_3", 0], [
      "Kafka-%none_t_3",
      1,
    ]],
  );
  assert.ok(items.every((i) => i.invalid === undefined));
  // Within an assignment the count goes on, on any partition of it.
  assert.equal(reader.items("t", 4, 1, [plain("Order-1")])[0].event.index, 2);
  // A new assignment starts every count afresh: the sink forgot the revoked streams.
  assert.equal(reader.items("t", 3, 2, [plain("Order-1")])[0].event.index, 0);
});

Deno.test("kafka records: keys are forgotten at each new assignment, so memory follows one assignment's keys", () => {
  const reader = createRecordReader({ defaultCategory: "Kafka" });
  const batchOf = (assignment: number, from: number, n: number) =>
    Array.from({ length: n }, (_, i) => plain(`customer-${assignment}_${from + i}`));
  // The heap is measured only when a collection can be forced (`--v8-flags=--expose-gc`);
  // otherwise garbage of the batches would swamp it, and the key count alone is checked.
  const gc = (globalThis as { gc?: () => void }).gc;
  const heapAfterGc = () => {
    gc?.();
    return Deno.memoryUsage().heapUsed;
  };
  const perAssignment = 50_000;
  let peak = 0;
  let baseline = 0;
  for (let assignment = 1; assignment <= 8; assignment++) {
    for (let from = 0; from < perAssignment; from += 1000) {
      reader.items("t", 0, assignment, batchOf(assignment, from, 1000));
    }
    assert.equal(reader.keys, perAssignment, "exactly this assignment's keys are kept");
    const heap = heapAfterGc();
    if (assignment === 2) baseline = heap;
    if (assignment > 2) peak = Math.max(peak, heap);
  }
  // 8 × 50 000 keys kept for good would add about 150 MB over the baseline (≈ 400 B a key);
  // forgetting per assignment keeps the heap at one assignment's worth.
  assert.ok(
    gc === undefined || peak - baseline < 30_000_000,
    `heap grew by ${Math.round((peak - baseline) / 1e6)} MB over 6 assignments`,
  );
  // A key of an old assignment is a new key, plain count from 0.
  const [again] = reader.items("t", 0, 9, [plain("customer-1_0")]);
  assert.equal(again.event.index, 0);
  assert.equal(reader.keys, 1);
});

Deno.test("kafka records: a span stream's next index starts afresh per assignment, so a later gap is still seen", () => {
  const reader = createRecordReader({ defaultCategory: "Kafka" });
  reader.items("t", 0, 1, [span("Order-1", 0, 20)]);
  // Reassigned and re-read from an earlier committed offset: the span at 5 repeats events.
  const reread = reader.items("t", 0, 2, [span("Order-1", 5, 8)]);
  assert.ok(reread.every((i) => i.invalid === undefined));
  // 8..14 never came: before, the next index of the old assignment (20) let this through.
  const [gap] = reader.items("t", 0, 2, [span("Order-1", 15, 16)]);
  assert.equal((gap.invalid as KafkaInvalidRecordError).reason, "spanGap");
  assert.equal(gap.event.index, 8);
});

Deno.test("kafka records: spans keep their indexes; repeats pass for dedup; a gap is invalid and so is what follows", () => {
  const reader = createRecordReader({ defaultCategory: "Kafka" });
  const ok = reader.items("t", 0, 1, [span("Order-1", 5, 8), span("Order-1", 8, 10)]);
  assert.deepEqual(
    ok.map((i) => i.event.index),
    [5, 6, 7, 8, 9],
    "a first span may start anywhere",
  );
  const repeat = reader.items("t", 0, 1, [span("Order-1", 7, 11)]);
  assert.deepEqual(repeat.map((i) => i.event.index), [7, 8, 9, 10]);
  assert.ok(repeat.every((i) => i.invalid === undefined));

  const gapped = span("Order-1", 13, 14);
  const after = span("Order-1", 14, 15);
  const [gap, next] = reader.items("t", 0, 1, [gapped, after]);
  assert.ok(gap.invalid instanceof KafkaInvalidRecordError);
  assert.equal((gap.invalid as KafkaInvalidRecordError).reason, "spanGap");
  assert.equal(gap.event.index, 11, "the invalid item takes the missing index");
  assert.deepEqual(gap.event.data, gapped.value, "with the raw value");
  assert.match(gap.invalid.message, /t\/0@\d+ of Order-1 starts at index 13, expected 11/);
  assert.equal((next.invalid as KafkaInvalidRecordError).reason, "afterInvalid");
  assert.equal(next.event.index, 12);
  assert.equal(reader.invalid, 2);

  // A new period (the partition assigned again) starts afresh.
  const fresh = reader.items("t", 0, 2, [span("Order-1", 20, 21)]);
  assert.equal(fresh[0].invalid, undefined);
  assert.equal(fresh[0].event.index, 20);
});

Deno.test("kafka records: corrupt spans and mixed streams are invalid items, other streams carry on", () => {
  const reader = createRecordReader({ defaultCategory: "Kafka" });
  const items = reader.items("t", 0, 1, [
    corrupt("Bad-1", "not json"),
    span("Good-1", 0, 2),
    plain("Good-1"),
    plain("Plain-1"),
    span("Plain-1", 0, 1),
    corrupt("Bad-2", `{"i":0,"e":[{"t":"x"}]}`),
    plain("Other-1"),
  ]);
  const byStream = (s: string) => items.filter((i) => i.stream === s);
  const reason = (s: string) =>
    byStream(s).map((i) => (i.invalid as KafkaInvalidRecordError | undefined)?.reason);
  assert.deepEqual(reason("Bad-1"), ["corruptSpan"]);
  assert.deepEqual(reason("Good-1"), [undefined, undefined, "plainOnSpanStream"]);
  assert.equal(byStream("Good-1")[2].event.index, 2);
  assert.deepEqual(reason("Plain-1"), [undefined, "spanOnPlainStream"]);
  assert.deepEqual(byStream("Plain-1").map((i) => i.event.index), [0, 1]);
  assert.deepEqual(reason("Bad-2"), ["corruptSpan"]);
  assert.match(byStream("Bad-2")[0].invalid!.message, /malformed event at position 0/);
  assert.deepEqual(reason("Other-1"), [undefined]);
});

Deno.test("kafka records: a user mapping of keys is used once per key", () => {
  let calls = 0;
  const reader = createRecordReader({
    defaultCategory: "Kafka",
    keyToStream: (key) => {
      calls++;
      return `Mapped-${key.length}`;
    },
  });
  const items = reader.items("t", 0, 1, [plain("abc"), plain("abc"), plain("de")]);
  assert.deepEqual(items.map((i) => i.stream), ["Mapped-3", "Mapped-3", "Mapped-2"]);
  assert.equal(calls, 2);
});

Deno.test("kafka records: a key is kept as a copy, not as a view of the fetch response", () => {
  // kafkajs hands keys over as Buffer views of the whole response, and a Buffer's slice() is
  // another view: a key kept that way would keep the response and change when it is reused.
  const response = Buffer.from("....Order-1....");
  const key = response.subarray(4, 11);
  let kept: Uint8Array | undefined;
  const reader = createRecordReader({
    defaultCategory: "Kafka",
    keyToStream: (k) => {
      kept = k;
      return new TextDecoder().decode(k);
    },
  });
  const first = reader.items("t", 0, 1, [plain(key)]);
  response.fill(0); // the response buffer reused for the next fetch
  const second = reader.items("t", 0, 1, [plain(bytes("Order-1"))]);
  assert.equal(kept!.buffer.byteLength, 7, "the key kept owns its own 7 bytes");
  assert.ok(Buffer.isBuffer(kept), "a Buffer key stays a Buffer for keyToStream");
  assert.deepEqual(
    [...first, ...second].map((i) => `${i.stream}@${i.event.index}`),
    ["Order-1@0", "Order-1@1"],
    "the same key bytes find the same stream after the response changed",
  );
});
