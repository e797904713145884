import assert from "node:assert/strict";
import fc from "fast-check";
import {
  estimateSize,
  insertEvent,
  mergeSpans,
  type Span,
  spanNext,
  type StreamEvent,
  utf8Length,
} from "../../core/event.ts";
import { ev as plainEv, test } from "../support/core.ts";

// Tagged events, so that which copy of a duplicate was kept shows in data and id.
const ev = (index: number, tag = ""): StreamEvent => ({
  ...plainEv(index),
  data: tag,
  id: `${index}${tag}`,
});
const indexes = (events: readonly { index: number }[]) => events.map((e) => e.index);

test("spanNext is the index after the last event", () => {
  assert.equal(spanNext({ stream: "A-1", index: 3, events: [] }), 3);
  assert.equal(spanNext({ stream: "A-1", index: 3, events: [ev(3), ev(4)] }), 5);
});

test("estimateSize counts strings, bytes and JSON, and survives what JSON cannot render", () => {
  assert.equal(estimateSize(undefined), 0);
  assert.equal(estimateSize(null), 0);
  assert.equal(estimateSize("abc"), 3);
  assert.equal(estimateSize(new Uint8Array(17)), 17);
  assert.equal(estimateSize({ a: 1 }), '{"a":1}'.length);
  const circular: Record<string, unknown> = {};
  circular.self = circular;
  assert.equal(estimateSize(circular), 0);
  assert.equal(estimateSize(() => 1), 0);
  assert.equal(estimateSize(10n), 0); // JSON.stringify throws on bigint
});

test("insertEvent", async (t) => {
  await t.step("appends the next index", () => {
    const buf = [ev(0)];
    assert.equal(insertEvent(buf, ev(1), 0), true);
    assert.deepEqual(indexes(buf), [0, 1]);
  });
  await t.step("inserts an out-of-order arrival in place", () => {
    const buf = [ev(1), ev(4), ev(7)];
    assert.equal(insertEvent(buf, ev(5), 0), true);
    assert.equal(insertEvent(buf, ev(0), 0), true);
    assert.deepEqual(indexes(buf), [0, 1, 4, 5, 7]);
  });
  await t.step("keeps the first copy of a duplicate", () => {
    const buf = [ev(1, "first"), ev(2, "first")];
    assert.equal(insertEvent(buf, ev(1, "second"), 0), false);
    assert.equal(insertEvent(buf, ev(2, "second"), 0), false);
    assert.deepEqual(buf.map((e) => e.data), ["first", "first"]);
  });
  await t.step("ignores events below the write position", () => {
    const buf: StreamEvent[] = [];
    assert.equal(insertEvent(buf, ev(2), 3), false);
    assert.equal(insertEvent(buf, ev(3), 3), true);
    assert.deepEqual(indexes(buf), [3]);
  });
  await t.step("an unknown write position (-1) accepts everything", () => {
    const buf: StreamEvent[] = [];
    assert.equal(insertEvent(buf, ev(0), -1), true);
    assert.deepEqual(indexes(buf), [0]);
  });
  await t.step("matches a sorted, deduplicated model (property)", () => {
    fc.assert(
      fc.property(
        fc.array(fc.nat(30), { maxLength: 40 }),
        fc.integer({ min: -1, max: 10 }),
        (arrivals, writePos) => {
          const buf: StreamEvent[] = [];
          const model = new Set<number>();
          for (const i of arrivals) {
            const added = insertEvent(buf, ev(i), writePos);
            const expected = i >= writePos && !model.has(i);
            assert.equal(added, expected, `insert ${i} at writePos ${writePos}`);
            if (expected) model.add(i);
          }
          assert.deepEqual(indexes(buf), [...model].sort((a, b) => a - b));
        },
      ),
      { numRuns: 1000 },
    );
  });
});

test("mergeSpans", async (t) => {
  const span = (index: number, n: number, tag = ""): Span => ({
    stream: "A-1",
    index,
    events: Array.from({ length: n }, (_, k) => ev(index + k, tag)),
  });
  await t.step("of nothing is nothing", () => {
    assert.deepEqual(mergeSpans([]), []);
  });
  await t.step("merges overlapping, repeated and out-of-order spans", () => {
    const merged = mergeSpans([span(2, 2), span(0, 3), span(2, 2), span(4, 1)]);
    assert.equal(merged.length, 1);
    assert.equal(merged[0].stream, "A-1");
    assert.equal(merged[0].index, 0);
    assert.deepEqual(indexes(merged[0].events), [0, 1, 2, 3, 4]);
  });
  await t.step("keeps the first copy of an event seen twice", () => {
    const merged = mergeSpans([span(0, 2, "a"), span(1, 2, "b")]);
    assert.deepEqual(merged[0].events.map((e) => e.data), ["a", "a", "b"]);
  });
  await t.step("a gap starts a new span", () => {
    const merged = mergeSpans([span(5, 2), span(0, 2)]);
    assert.deepEqual(merged.map((s) => [s.index, indexes(s.events)]), [[0, [0, 1]], [5, [5, 6]]]);
  });
  await t.step("drops events below the write position", () => {
    const merged = mergeSpans([span(0, 3), span(5, 1)], 2);
    assert.deepEqual(merged.map((s) => [s.index, indexes(s.events)]), [[2, [2]], [5, [5]]]);
    assert.deepEqual(mergeSpans([span(0, 3)], 3), []);
  });
  await t.step(
    "produces sorted, contiguous, deduplicated spans covering exactly the input (property)",
    () => {
      const spans = fc.array(fc.tuple(fc.nat(20), fc.nat(5)), { maxLength: 8 });
      fc.assert(
        fc.property(spans, fc.nat(12), (raw, writePos) => {
          const input = raw.map(([index, n]) => span(index, n));
          const merged = mergeSpans(input, writePos);
          const expected = new Set<number>();
          for (const [index, n] of raw) {
            for (let k = 0; k < n; k++) if (index + k >= writePos) expected.add(index + k);
          }
          const got: number[] = [];
          let previousNext = -Infinity;
          for (const s of merged) {
            assert.ok(s.events.length > 0, "no empty spans");
            assert.ok(s.index > previousNext, "spans are sorted and separated by gaps");
            s.events.forEach((e, k) => assert.equal(e.index, s.index + k, "span is contiguous"));
            previousNext = spanNext(s);
            got.push(...indexes(s.events));
          }
          assert.deepEqual(got, [...expected].sort((a, b) => a - b));
        }),
        { numRuns: 1000 },
      );
    },
  );
});

Deno.test("utf8Length counts UTF-8 bytes, as limits are bytes", () => {
  const text = "a€😀é\uD800x"; // ASCII, 3-byte, surrogate pair, 2-byte, lone surrogate, ASCII
  assert.equal(utf8Length(text), new TextEncoder().encode(text).length);
  assert.equal(estimateSize("€€€"), 9);
  assert.equal(
    estimateSize({ s: "€" }),
    new TextEncoder().encode(JSON.stringify({ s: "€" })).length,
  );
});
