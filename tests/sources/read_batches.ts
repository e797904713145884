// A fixture of the source tests (not a test file itself): read a source's stream directly.
import assert from "node:assert/strict";
import type { Batch } from "../../core/batch.ts";

/**
 * Reads batches until `done` says so, failing past `timeoutMs`, then cancels the stream; with
 * `commit`, commits each batch's position as it is read (what a sink does once it is handled).
 */
export async function readBatches(
  source: ReadableStream<Batch>,
  done: (batches: Batch[]) => boolean,
  options: { commit?: boolean; timeoutMs?: number } = {},
): Promise<Batch[]> {
  const batches: Batch[] = [];
  const reader = source.getReader();
  const deadline = Date.now() + (options.timeoutMs ?? 10_000);
  try {
    while (!done(batches)) {
      assert.ok(Date.now() < deadline, `condition met in time (${batches.length} batches)`);
      const r = await reader.read();
      if (r.done) break;
      batches.push(r.value);
      if (options.commit) await r.value.commit?.(r.value.position);
    }
  } finally {
    await reader.cancel();
  }
  return batches;
}

/** True once the last batch read says "at the tail". */
export const atTail = (batches: Batch[]): boolean => batches.at(-1)?.isTail === true;

/** Resolves once `ok()` holds, polling every 5 ms; fails past `timeoutMs`. */
export async function waitFor(what: string, ok: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ok()) {
    assert.ok(Date.now() < deadline, `${what} in time`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
