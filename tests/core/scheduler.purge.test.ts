// Purged stream states are reused for new streams: a reused state must carry nothing of the
// stream it held before (events, write position, failures), and a stream that comes back after
// its purge starts afresh.
import assert from "node:assert/strict";
import fc from "fast-check";
import { type Batch, run, type StreamEvent, streamsSink } from "../../mod.ts";
import { test } from "../support/core.ts";

const RUNS = Number(Deno.env.get("RUNS") ?? 200);

const event = (stream: string, index: number): StreamEvent => ({
  index,
  type: "E",
  data: stream, // which stream the event was made for, checked by the handler
  meta: null,
  id: `${stream}@${index}`,
  time: new Date(0),
  size: 1,
});

test("property: a reused stream state starts clean, and every stream is handled in order", async () => {
  let purged = 0;
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 1, max: 60 }), // streams
      fc.integer({ min: 1, max: 6 }), // events per stream
      fc.integer({ min: 1, max: 50 }), // batch size
      fc.integer({ min: 0, max: 4 }), // maxIdleStreams
      fc.array(fc.nat(3), { minLength: 1, maxLength: 20 }), // handler behaviour by call
      async (streams, perStream, size, maxIdleStreams, behaviour) => {
        // Streams one after another, each whole, so most go idle and are purged before the
        // next one starts; then every stream again from index 0 (they come back after a purge).
        const items: Array<{ stream: string; event: StreamEvent }> = [];
        for (let round = 0; round < 2; round++) {
          for (let s = 0; s < streams; s++) {
            for (let i = 0; i < perStream; i++) {
              items.push({ stream: `S-${s}`, event: event(`S-${s}`, i) });
            }
          }
        }
        let from = 0;
        const source = new ReadableStream<Batch>({
          pull(c) {
            const to = Math.min(items.length, from + size);
            c.enqueue({
              tranche: "0",
              items: items.slice(from, to),
              position: BigInt(to),
              isTail: to === items.length,
            });
            from = to;
            if (to === items.length) c.close();
          },
        });
        const violations: string[] = [];
        const handled = new Map<string, number[]>();
        const running = new Set<string>();
        let calls = 0;
        const sink = streamsSink({
          handler: async (stream, events, { attempt }) => {
            const b = behaviour[calls++ % behaviour.length];
            if (running.has(stream)) violations.push(`${stream} called twice at once`);
            running.add(stream);
            try {
              for (const e of events) {
                if (e.data !== stream) violations.push(`${stream} was given ${e.id}`);
              }
              if (b === 1) await Promise.resolve();
              if (b === 2 && attempt === 1) throw new Error("failed once");
              const list = handled.get(stream) ?? [];
              handled.set(stream, list);
              for (const e of events) list.push(e.index);
            } finally {
              running.delete(stream);
            }
          },
          maxIdleStreams,
          maxConcurrentStreams: 3,
          retry: { initialDelayMs: 0, maxDelayMs: 0, jitter: 0 },
          statsIntervalMs: 0,
        });
        await run(source, sink);
        assert.deepEqual(violations, []);
        const all = Array.from({ length: perStream }, (_, i) => i);
        for (let s = 0; s < streams; s++) {
          // The first round whole and in order (a purge between its batches only happens when
          // all so far is handled, so the stream restarts at its next index); of the second
          // round, the events after the stream was last purged, in order, if it was.
          const list = handled.get(`S-${s}`) ?? [];
          assert.deepEqual(list.slice(0, perStream), all, `S-${s}: ${list}`);
          const again = list.slice(perStream);
          if (again.length > 0) assert.deepEqual(again, all.slice(perStream - again.length));
        }
        purged += sink.stats().counters.purgedStreams;
      },
    ),
    { numRuns: RUNS },
  );
  // The workloads did purge (and so reuse) states.
  assert.ok(purged > RUNS, `${purged} states purged over ${RUNS} runs`);
});
