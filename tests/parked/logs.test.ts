// The kill tests' log analysis on hand-written logs: each check finds what it is meant to find,
// so that the suites' zeros are not zeros by construction.
import assert from "node:assert/strict";
import { callsOf, missing, outOfOrder, overlapsOf, reorderedOf } from "./support/logs.ts";

const log = (lines: string[]) => lines.join("\n") + "\n";
const call = (stream: string, from: number, next: number, pid: number, at: number) => [
  `start\t${stream}\t${from}\t${next}\t${pid}\t${at - 1}`,
  `end\t${stream}\t${from}\t${next}\t${pid}\t${at}`,
];

Deno.test("park logs: a clean run has nothing to report", () => {
  const text = log([...call("A-1", 0, 2, 1, 10), `start\tA-1\t2\t3\t1\t11`, `fail\tA-1\t2\t1\t12`]);
  const calls = callsOf(text);
  assert.deepEqual(calls.map((c) => [c.from, c.next, c.failed]), [[0, 2, false], [
    2,
    undefined,
    true,
  ]]);
  assert.equal(overlapsOf(text), 0);
  assert.equal(reorderedOf(calls), 0);
  assert.equal(outOfOrder(calls), 0);
  assert.equal(missing(calls, new Map([["A-1", 2]])), 0);
  assert.equal(missing(calls, new Map([["A-1", 3]])), 1, "the failed event is not handled");
});

Deno.test("park logs: overlaps, backwards calls, out-of-order first handling and gaps are counted", () => {
  const first = log([
    ...call("A-1", 0, 2, 1, 10),
    ...call("A-1", 1, 3, 1, 11), // backwards within the run
    `start\tB-1\t0\t1\t1\t12`,
    `start\tB-1\t0\t1\t1\t13`, // B-1 still running: overlap
  ]);
  const second = log([...call("C-1", 3, 4, 2, 5), ...call("C-1", 0, 3, 2, 20)]);
  const calls = [...callsOf(first), ...callsOf(second)];
  assert.equal(overlapsOf(first), 1);
  assert.equal(reorderedOf(calls), 2, "A-1 #1 in run 1, C-1 #0 in run 2");
  assert.equal(outOfOrder(calls), 1, "C-1 #3 handled before #2");
  assert.equal(missing(calls, new Map([["A-1", 4], ["B-1", 1]])), 2, "A-1 #3 and B-1 #0");
});
