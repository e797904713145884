import assert from "node:assert/strict";
import { backoff } from "../../core/failure.ts";
import { retrying } from "../../core/reader.ts";

Deno.test("retrying: waits at least the retryAfterMs a failure carries, else the backoff", async () => {
  const waits: number[] = [];
  const failures = [Object.assign(new Error("busy"), { retryAfterMs: 300 }), new Error("reset")];
  let calls = 0;
  const started = performance.now();
  const value = await retrying(
    () => calls < failures.length ? Promise.reject(failures[calls++]) : Promise.resolve("ok"),
    {
      backoff: backoff({ initialDelayMs: 5, maxDelayMs: 5, jitter: 0 }),
      signal: new AbortController().signal,
      onFailure: (_e, _attempt, delayMs) => waits.push(delayMs),
    },
  );
  assert.equal(value, "ok");
  assert.deepEqual(waits, [300, 5]);
  assert.ok(performance.now() - started >= 290);
});

Deno.test("retrying: a retryAfterMs that is not a positive number is ignored", async () => {
  const waits: number[] = [];
  let calls = 0;
  await retrying(
    () =>
      calls++ < 3
        ? Promise.reject(
          Object.assign(new Error("x"), { retryAfterMs: [-1, NaN, "9000"][calls - 1] }),
        )
        : Promise.resolve(),
    {
      backoff: backoff({ initialDelayMs: 2, maxDelayMs: 2, jitter: 0 }),
      signal: new AbortController().signal,
      onFailure: (_e, _attempt, delayMs) => waits.push(delayMs),
    },
  );
  assert.deepEqual(waits, [2, 2, 2]);
});
