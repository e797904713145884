// The latency histogram: interval percentiles for stats lines, totals since start for metrics.
import assert from "node:assert/strict";
import { createHistogram } from "../../core/histogram.ts";
import { test } from "../support/core.ts";

test("histogram: totals count every sample in its bucket (a bound is inclusive) and outlive reset", () => {
  const h = createHistogram();
  for (const ms of [0.1, 0.5, 0.6, 10, 10.01, 99_999]) h.record(ms);
  const t = h.totals();
  const at = (boundMs: number) => t.counts[t.boundsMs.indexOf(boundMs)];
  assert.equal(t.count, 6);
  assert.equal(
    Math.round(t.sumMs * 100),
    Math.round((0.1 + 0.5 + 0.6 + 10 + 10.01 + 99_999) * 100),
  );
  assert.equal(at(0.5), 2, "0.1 and 0.5 ms");
  assert.equal(at(1), 1, "0.6 ms");
  assert.equal(at(10), 1, "10 ms exactly");
  assert.equal(at(25), 1, "10.01 ms");
  assert.equal(t.counts[t.boundsMs.length], 1, "above the last bound");
  assert.equal(t.counts.reduce((a, b) => a + b, 0), t.count);
  h.reset();
  assert.equal(h.percentiles().count, 0, "the interval restarts");
  assert.deepEqual(h.totals(), t, "the totals do not");
  h.record(1);
  assert.equal(h.totals().count, 7);
  assert.equal(t.count, 6, "a totals answer is a copy");
});
