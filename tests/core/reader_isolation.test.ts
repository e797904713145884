// The paged reader's tranche isolation: a failure a source calls its tranche's own
// (`isTrancheFailure`) stops only that tranche; any other failure that is not retried still
// fails the source.
import assert from "node:assert/strict";
import type { Batch } from "../../core/batch.ts";
import { pagedSource, type ReadPage } from "../../core/reader.ts";

class Damaged extends Error {}

// Tranche "bad" reads one page, then its data is damaged; "good" reads a page per call.
const readPage = (damage: () => Error): ReadPage => (tranche, position) => {
  const at = position ?? 0n;
  if (tranche === "bad" && at >= 1n) return Promise.reject(damage());
  return Promise.resolve({
    items: [{
      stream: `${tranche}-1`,
      event: {
        index: Number(at),
        type: "T",
        data: undefined,
        meta: undefined,
        id: `${tranche}${at}`,
        time: new Date(0),
        size: 0,
      },
    }],
    next: at + 1n,
    isTail: false,
  });
};

Deno.test("reader: a tranche failure stops that tranche only; the others carry on", async () => {
  const source = pagedSource({
    name: "isolated",
    tranches: ["bad", "good"],
    readPage: readPage(() => new Damaged("chunk 7 is corrupt")),
    isRetriable: (e) => !(e instanceof Damaged),
    isTrancheFailure: (e) => e instanceof Damaged,
    retry: { initialDelayMs: 1 },
  });
  const reader = source.getReader();
  const seen = new Map<string, number>();
  while ((seen.get("good") ?? 0) < 50) {
    const { value, done } = await reader.read();
    assert.equal(done, false, "the source goes on");
    const batch = value as Batch;
    seen.set(batch.tranche, (seen.get(batch.tranche) ?? 0) + batch.items.length);
  }
  assert.equal(seen.get("bad"), 1, "the damaged tranche handed on what it read before");
  const problems = source.problems!();
  assert.equal(problems.length, 1);
  assert.equal(problems[0].severity, "failing");
  assert.equal(problems[0].tranche, "bad");
  assert.match(problems[0].reason, /isolated\/bad stopped reading: .*chunk 7 is corrupt/);
  await reader.cancel();
});

Deno.test("reader: a failure not marked as the tranche's own still fails the source", async () => {
  const source = pagedSource({
    name: "whole",
    tranches: ["bad", "good"],
    readPage: readPage(() => new TypeError("a bug")),
    isRetriable: () => false,
    isTrancheFailure: (e) => e instanceof Damaged,
  });
  const reader = source.getReader();
  await assert.rejects(async () => {
    for (;;) await reader.read();
  }, (e: unknown) => e instanceof TypeError && e.message === "a bug");
});
