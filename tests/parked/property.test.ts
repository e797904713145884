// Property tests of parking in the scheduler, over generated workloads: streams with poison
// events at random places, batches cut at random, random limits and attempts. While the handler
// fails on poison events, each stream is handled exactly up to its first poison event and the
// rest of it is parked, in order, and every batch completes (the checkpoint passes the parked
// events). Once the handler is fixed and every parked stream released, every event has been
// handled exactly once, in index order, never two calls at once for a stream.
import assert from "node:assert/strict";
import fc from "fast-check";
import { type Batch, type StreamEvent, streamsSink } from "../../mod.ts";
import { memoryParkStore } from "../../parked/memory.ts";
import { test } from "../support/core.ts";

const RUNS = Number(Deno.env.get("RUNS") ?? 100);

const workload = fc.record({
  lengths: fc.array(fc.integer({ min: 1, max: 8 }), { minLength: 1, maxLength: 5 }),
  poison: fc.array(fc.tuple(fc.nat(), fc.nat()), { maxLength: 6 }),
  cuts: fc.array(fc.boolean(), { minLength: 40, maxLength: 40 }),
  order: fc.array(fc.nat(), { minLength: 40, maxLength: 40 }),
  maxAttempts: fc.integer({ min: 1, max: 3 }),
  maxConcurrentStreams: fc.integer({ min: 1, max: 3 }),
  maxEventsPerCall: fc.integer({ min: 1, max: 4 }),
  yields: fc.boolean(),
});

const event = (index: number): StreamEvent => ({
  index,
  type: "E",
  data: null,
  meta: null,
  id: `${index}`,
  time: new Date(0),
  size: 1,
});

async function until(cond: () => boolean, what: string) {
  const deadline = Date.now() + 5_000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

test("property: poison streams park whole and in order; released, every event is handled once, in order", async () => {
  await fc.assert(
    fc.asyncProperty(workload, async (w) => {
      const names = w.lengths.map((_, s) => `S-${s}`);
      const poison = new Set(w.poison.map(([s, i]) => {
        const stream = s % names.length;
        return `${names[stream]}@${i % w.lengths[stream]}`;
      }));
      // Every stream's events in order, interleaved by the generated order, cut into batches.
      const cursor = w.lengths.map(() => 0);
      const items: Array<{ stream: string; event: StreamEvent }> = [];
      for (let k = 0; items.length < w.lengths.reduce((a, b) => a + b, 0); k++) {
        const s = w.order[k % 40] % names.length;
        const t = cursor[s] < w.lengths[s] ? s : cursor.findIndex((c, i) => c < w.lengths[i]);
        items.push({ stream: names[t], event: event(cursor[t]++) });
      }
      const batches: Batch[] = [];
      let current: typeof items = [];
      items.forEach((item, j) => {
        current.push(item);
        if (w.cuts[j % 40] || j === items.length - 1) {
          batches.push({ tranche: "0", items: current, position: BigInt(j + 1), isTail: true });
          current = [];
        }
      });

      let fixed = false;
      const handled = new Map<string, number[]>();
      const running = new Set<string>();
      const violations: string[] = [];
      const store = memoryParkStore();
      const sink = streamsSink({
        group: "g",
        statsIntervalMs: 0,
        commitIntervalMs: 1,
        maxReadAhead: batches.length,
        maxConcurrentStreams: w.maxConcurrentStreams,
        maxEventsPerCall: w.maxEventsPerCall,
        retry: { initialDelayMs: 0, maxDelayMs: 0 },
        failure: { kind: "park", maxAttempts: w.maxAttempts, store, pollMs: 1 },
        handler: async (stream, events) => {
          if (running.has(stream)) violations.push(`${stream}: overlapping calls`);
          running.add(stream);
          if (w.yields) await new Promise((r) => setTimeout(r, 0));
          running.delete(stream);
          const bad = fixed ? -1 : events.findIndex((e) => poison.has(`${stream}@${e.index}`));
          if (bad === 0) throw new Error("poison");
          const done = bad < 0 ? events : events.slice(0, bad);
          const list = handled.get(stream) ?? [];
          for (const e of done) {
            const expected = list.length === 0 ? 0 : list[list.length - 1] + 1;
            if (e.index !== expected) {
              violations.push(`${stream}: ${e.index} after ${expected - 1}`);
            }
            list.push(e.index);
          }
          handled.set(stream, list);
          return bad < 0 ? undefined : events[bad].index;
        },
      });
      const writer = sink.writable.getWriter();
      try {
        for (const b of batches) await writer.write(b);
        await sink.monitor.awaitCompletion({ timeoutMs: 5_000 });
        const parkedNow = await store.list("g");
        for (let s = 0; s < names.length; s++) {
          const firstPoison = Array.from({ length: w.lengths[s] }, (_, i) => i)
            .find((i) => poison.has(`${names[s]}@${i}`));
          const upTo = firstPoison ?? w.lengths[s];
          assert.deepEqual(
            handled.get(names[s]) ?? [],
            Array.from({ length: upTo }, (_, i) => i),
            `${names[s]} handled up to its first poison event`,
          );
          const entry = parkedNow.find((e) => e.stream === names[s]);
          if (firstPoison === undefined) assert.equal(entry, undefined, `${names[s]} not parked`);
          else {
            const stored = await store.events("g", names[s], entry!.episode, 0, 100);
            assert.deepEqual(
              stored.map((e) => e.index),
              Array.from({ length: w.lengths[s] - upTo }, (_, i) => upTo + i),
              `${names[s]} parked from its poison event on, in order`,
            );
          }
        }
        assert.equal(sink.stats().uncompletedBatches, 0, "every batch complete");

        fixed = true;
        for (const e of parkedNow) {
          await store.request("g", e.stream, { action: "release", by: "property" });
        }
        await until(() => sink.stats().parked.streams === 0, "every release");
        for (let s = 0; s < names.length; s++) {
          assert.deepEqual(
            handled.get(names[s]),
            Array.from({ length: w.lengths[s] }, (_, i) => i),
            `${names[s]} handled once each, in order, after the release`,
          );
        }
        assert.deepEqual(violations, []);
      } finally {
        writer.releaseLock();
        await sink.stop();
      }
    }),
    { numRuns: RUNS },
  );
});
