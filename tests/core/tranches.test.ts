// trancheStream: several readers feeding one ReadableStream of batches, with backpressure,
// failure, cancel and the caller's signal.
import assert from "node:assert/strict";
import type { Batch } from "../../core/batch.ts";
import { trancheStream } from "../../core/tranches.ts";
import { sleep, test as sanitizedTest } from "../support/core.ts";

const b = (tranche: string, position: bigint): Batch => ({
  tranche,
  items: [],
  position,
  isTail: false,
});
const tick = (ms = 5) => sleep(ms);
const test = (name: string, fn: () => Promise<void>) => sanitizedTest(`trancheStream: ${name}`, fn);

test("readers take turns and run at most one batch ahead of the consumer", async () => {
  let enqueued = 0, read = 0, maxAhead = 0;
  const s = trancheStream(({ signal, enqueue, spawn }) => {
    for (const t of ["a", "b", "c"]) {
      spawn(async () => {
        for (let i = 0n; i < 20n && !signal.aborted; i++) {
          await enqueue(b(t, i));
          enqueued++;
          maxAhead = Math.max(maxAhead, enqueued - read);
        }
      });
    }
  });
  const seen: string[] = [];
  for await (const x of s) {
    read++;
    seen.push(x.tranche);
    await tick(1);
  }
  assert.equal(read, 60);
  assert.ok(maxAhead <= 2, `ran ${maxAhead} batches ahead`);
  assert.equal(new Set(seen.slice(0, 6)).size, 3, `tranches interleave: ${seen.slice(0, 6)}`);
});

test("a failing reader errors the stream, stops the others and releases their waits", async () => {
  let otherSignal!: AbortSignal;
  let otherReleased = false;
  const boom = new Error("boom");
  const s = trancheStream(({ signal, enqueue, spawn }) => {
    otherSignal = signal;
    spawn(async () => {
      for (let i = 0n; !signal.aborted; i++) await enqueue(b("ok", i));
      otherReleased = true;
    });
    spawn(async () => {
      await tick(20);
      throw boom;
    });
  });
  const r = s.getReader();
  await r.read();
  await tick(40);
  await assert.rejects(r.read(), (e) => e === boom);
  assert.equal(otherSignal.aborted, true);
  assert.equal(otherReleased, true);
});

test("cancel stops and releases every reader; a reader failing afterwards does no harm", async () => {
  let sig!: AbortSignal;
  let ended = 0;
  const s = trancheStream(({ signal, enqueue, spawn }) => {
    sig = signal;
    for (const t of ["a", "b"]) {
      spawn(async () => {
        for (let i = 0n; !signal.aborted; i++) await enqueue(b(t, i));
        ended++;
        throw new Error("late");
      });
    }
  });
  await tick(10);
  await s.cancel();
  await tick(10);
  assert.equal(sig.aborted, true);
  assert.equal(ended, 2);
});

test("the caller's signal stops the readers; the stream closes once they have ended", async () => {
  const ac = new AbortController();
  let readerDone = false;
  const s = trancheStream(({ signal, enqueue, spawn }) => {
    spawn(async () => {
      for (let i = 0n; !signal.aborted; i++) {
        await enqueue(b("a", i));
        await tick(1);
      }
      await tick(20);
      readerDone = true;
    });
  }, { signal: ac.signal });
  let n = 0;
  for await (const _ of s) if (++n === 3) ac.abort();
  assert.equal(readerDone, true, "closed only after the reader ended");
});

test("an already aborted signal: the stream closes empty", async () => {
  let called = false;
  const s = trancheStream(async ({ signal, enqueue }) => {
    called = true;
    await enqueue(b("a", 0n));
    assert.equal(signal.aborted, true);
  }, { signal: AbortSignal.abort() });
  assert.deepEqual(await Array.fromAsync(s), []);
  assert.equal(called, true);
});

test("readers spawned later are read; a driver that throws errors the stream", async () => {
  const s = trancheStream(async ({ signal, enqueue, spawn }) => {
    for (const t of ["a", "b"]) {
      spawn(async () => {
        for (let i = 0n; i < 2n && !signal.aborted; i++) await enqueue(b(t, i));
      });
      await tick(10);
    }
  });
  assert.deepEqual((await Array.fromAsync(s)).map((x) => x.tranche + x.position), [
    "a0",
    "a1",
    "b0",
    "b1",
  ]);
  const e = new Error("driver");
  await assert.rejects(
    Array.fromAsync(trancheStream(() => {
      throw e;
    })),
    (x) => x === e,
  );
  let stopped = false;
  const s2 = trancheStream(async ({ signal, spawn }) => {
    spawn(async () => {
      while (!signal.aborted) await tick(2);
      stopped = true;
    });
    await tick(10);
    throw e;
  });
  await assert.rejects(Array.fromAsync(s2), (x) => x === e);
  await tick(10);
  assert.equal(stopped, true);
});
