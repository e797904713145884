// The crash-loop analysis on hand-written logs: each check finds what it is meant to find, so
// that the fault suite's zeros are not zeros by construction.
import assert from "node:assert/strict";
import { analyse, type RunLog } from "./analyse.ts";

const run = (pid: number, lines: string[], before = 0n, after = 0n, head = 10n): RunLog => ({
  log: [`ready\t${pid}\t1000.5`, ...lines].join("\n") + "\n",
  pid,
  spawnedAt: 1000,
  livedMs: 1500,
  before,
  after,
  headAtStart: head,
});
const call = (pid: number, stream: string, from: number, next: number) => [
  `start\t${stream}\t${from}\t${next}\t${pid}\t1`,
  `end\t${stream}\t${from}\t${next}\t${pid}\t2`,
];

Deno.test("fault analysis: a clean crash loop", () => {
  const figures = analyse([
    run(1, [...call(1, "A-1", 0, 2), `start\tA-2\t0\t1\t1\t3`], 1n, 3n),
    run(2, [...call(2, "A-1", 0, 3), ...call(2, "A-2", 0, 1), `done\t2\t9`], 3n, 10n),
  ], new Map([["A-1", 3], ["A-2", 1]]));
  assert.deepEqual(
    {
      lost: figures.lost,
      handled: figures.handled,
      started: figures.started,
      interrupted: figures.interruptedCalls,
      advanced: figures.killedRunsAdvanced,
      final: figures.handledInFinalRun,
      bad: figures.reordered + figures.skippedInRun + figures.overlaps + figures.foreignLines +
        figures.unknown,
    },
    { lost: 0, handled: 6, started: 7, interrupted: 1, advanced: 1, final: 4, bad: 0 },
  );
  assert.equal(figures.handledPerEvent, 1.5);
  assert.equal(figures.committedByKilledRuns, 0, "the final run handled all 4 events");
  assert.equal(figures.medianReadyMs, 1);
});

Deno.test("fault analysis: lost, reordered, skipped, overlapping and foreign lines are counted", () => {
  const figures = analyse([
    run(1, [
      ...call(1, "A-1", 0, 2),
      ...call(1, "A-1", 1, 2), // below the previous end: reordered
      ...call(1, "A-1", 4, 5), // beyond it: skipped
      `start\tA-2\t0\t1\t1\t3`,
      `start\tA-2\t0\t1\t1\t4`, // A-2 still running: overlap
      `start\tA-3\t0\t1\t99\t5`, // another pid
      ...call(1, "B-1", 0, 1), // never written
    ]),
    run(2, []),
  ], new Map([["A-1", 4], ["A-2", 1]]));
  assert.equal(figures.reordered, 2, "A-1 #1, and A-2 started again at #0");
  assert.equal(figures.skippedInRun, 1);
  assert.equal(figures.overlaps, 1);
  assert.equal(figures.foreignLines, 1);
  assert.equal(figures.unknown, 2, "A-1 #4 and B-1 #0");
  assert.equal(figures.lost, 3, "A-1 #2 and #3 never covered, A-2 #0 never ended");
});
