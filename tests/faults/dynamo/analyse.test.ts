// The DynamoDB fault analysis on hand-written logs and batches: each check finds what it is meant
// to find, so that the fault suite's zeros are not zeros by construction.
import assert from "node:assert/strict";
import type { Batch } from "../../../core/batch.ts";
import { indexChecker, indexerFigures } from "./analyse.ts";

const ingest = (events: number, redone: number, gaps = 0, parked = 0, closed = 0) =>
  `ingest\tshard-1\t${events}\t${redone}\t${gaps}\t${parked}\t0\t${events}\t${closed}\t${events}\t1.5`;

Deno.test("fault analysis: indexer runs that resume, start over and redo", () => {
  const figures = indexerFigures([
    // Killed before it indexed anything: a fresh start is fine while nothing was saved.
    "resume\tshard-1\t-\nready\t1\t1.0\n",
    ["resume\tshard-1\t-", "ready\t2\t1.0", ingest(10, 3, 0, 0, 1), ingest(5, 0)].join("\n"),
    ["resume\tshard-1\t0042", "ready\t3\t1.0", ingest(4, 7)].join("\n"),
    // Progress was saved by run 2: starting over now redoes everything.
    ["resume\tshard-1\t-", "ready\t4\t1.0", ingest(1, 19, 1, 2), "X\t2.0\tBoom\tit broke"].join(
      "\n",
    ),
    "nonsense line\n",
  ]);
  assert.deepEqual(
    {
      runs: figures.runs,
      resumed: figures.resumed,
      startedOver: figures.startedOver,
      startedOverAfterProgress: figures.startedOverAfterProgress,
      progressed: figures.progressed,
      ingests: figures.ingests,
      events: figures.events,
      redone: figures.redone,
      maxRedoneInRun: figures.maxRedoneInRun,
      gaps: figures.gaps,
      parked: figures.parked,
      epochsClosed: figures.epochsClosed,
      rejections: figures.rejections,
      badLines: figures.badLines,
      medianIngestGapMs: figures.medianIngestGapMs,
      maxIngestGapMs: figures.maxIngestGapMs,
    },
    {
      runs: 5,
      resumed: 1,
      startedOver: 4,
      startedOverAfterProgress: 2, // run 4, and the unparseable run 5 (no resume line)
      progressed: 3,
      ingests: 4,
      events: 20,
      redone: 29,
      maxRedoneInRun: 19,
      gaps: 1,
      parked: 2,
      epochsClosed: 1,
      rejections: ["Boom it broke"],
      badLines: 1,
      medianIngestGapMs: 5, // of 1, 4, 5 and 10
      maxIngestGapMs: 10,
    },
  );
});

const batch = (items: [string, number, string?][]): Batch => ({
  tranche: "0",
  position: 0n,
  isTail: false,
  items: items.map(([stream, index, type]) => ({
    stream,
    event: {
      index,
      type: type ?? `T${index}`,
      data: undefined,
      meta: undefined,
      id: `${stream}@${index}`,
      time: new Date(0),
      size: 2,
    },
  })),
});

Deno.test("fault analysis: the index read back, clean", () => {
  const check = indexChecker(new Map([["A-1", 3], ["B-1", 1]]), (i) => `T${i}`);
  check.add(batch([["A-1", 0], ["B-1", 0]]));
  assert.equal(check.complete(), false);
  check.add(batch([["A-1", 1], ["A-1", 2]]));
  assert.equal(check.complete(), true);
  assert.deepEqual(check.figures(), {
    read: 4,
    distinct: 4,
    missing: 0,
    duplicates: 0,
    reordered: 0,
    wrongType: 0,
    unknown: 0,
  });
});

Deno.test("fault analysis: missing, duplicate, reordered, mistyped and unknown events", () => {
  const check = indexChecker(new Map([["A-1", 4], ["B-1", 2]]), (i) => `T${i}`);
  check.add(batch([
    ["A-1", 0],
    ["A-1", 0], // again
    ["A-1", 2], // before #1
    ["A-1", 1, "X"], // late, and of another type
    ["B-1", 2], // past B-1's end
    ["C-1", 0], // never written
  ]));
  assert.equal(check.complete(), false);
  assert.deepEqual(check.figures(), {
    read: 6,
    distinct: 3,
    missing: 3, // A-1 #3, B-1 #0 and #1
    duplicates: 1,
    reordered: 2, // #2 read when #1 was due, then #1 when #3 was
    wrongType: 1,
    unknown: 2,
  });
});
