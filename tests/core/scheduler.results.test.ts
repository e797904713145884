// What a handler may return: nothing, an index, a native promise (also of a subclass), or any
// thenable. The scheduler reuses its per-call state between calls, so a thenable that calls back
// twice, or calls both callbacks, must finish its call once and never finish another call.
import assert from "node:assert/strict";
import { type Batch, type Handler, run, type StreamEvent, streamsSink } from "../../mod.ts";
import { ev, test as sanitizedTest } from "../support/core.ts";

const test = (name: string, fn: () => Promise<void>) =>
  sanitizedTest(`scheduler results: ${name}`, fn);

/** Streams S-0..S-(streams-1), `perStream` events each, in `batches` batches of one tranche. */
function source(streams: number, perStream: number, batches: number): ReadableStream<Batch> {
  const items: Array<{ stream: string; event: StreamEvent }> = [];
  for (let i = 0; i < perStream; i++) {
    for (let s = 0; s < streams; s++) items.push({ stream: `S-${s}`, event: ev(i) });
  }
  const size = Math.ceil(items.length / batches);
  let from = 0;
  return new ReadableStream<Batch>({
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
}

/**
 * Runs the handler over the workload; returns the calls made (with each call's indexes, per
 * stream, in call order) and the sink's counters.
 */
async function drive(handler: Handler, streams = 20, perStream = 30, batches = 10) {
  const spans = new Map<string, number[][]>();
  let calls = 0;
  const sink = streamsSink({
    handler: (stream, events, ctx) => {
      calls++;
      const list = spans.get(stream) ?? [];
      spans.set(stream, list);
      list.push(events.map((e) => e.index));
      return handler(stream, events, ctx);
    },
    maxConcurrentStreams: 4,
    maxEventsPerCall: 3,
    retry: { initialDelayMs: 1, maxDelayMs: 1 },
    statsIntervalMs: 0,
  });
  await run(source(streams, perStream, batches), sink);
  return { spans, calls, counters: sink.stats().counters };
}

/**
 * Every stream was offered its events contiguously, never behind what an earlier call started
 * at, up to its last event; and every call was counted once, as returned or as thrown.
 */
function assertOrdered(
  { spans, calls, counters }: Awaited<ReturnType<typeof drive>>,
  streams = 20,
  perStream = 30,
) {
  assert.equal(spans.size, streams);
  for (const [stream, list] of spans) {
    let first = 0;
    for (const span of list) {
      assert.ok(span[0] >= first, `${stream}: ${span} after a call from ${first}`);
      span.forEach((index, i) => assert.equal(index, span[0] + i, `${stream}: ${span}`));
      first = span[0];
    }
    assert.equal(list.at(-1)!.at(-1), perStream - 1, stream);
  }
  assert.equal(counters.handled, streams * perStream);
  assert.equal(counters.calls + counters.failures, calls);
}

test("a synchronous return, an index or nothing, is the call's result", async () => {
  // Stop short on even calls: the rest stays queued and comes in the next call.
  let n = 0;
  const handler: Handler = (_s, events: readonly StreamEvent[]) =>
    n++ % 2 === 0 && events.length > 1 ? events[0].index + 1 : undefined;
  const result = await drive(handler);
  assertOrdered(result);
  assert.equal(result.counters.failures, 0);
});

test("a non-native thenable is awaited, resolving or rejecting", async () => {
  let n = 0;
  const handler: Handler = () => {
    const fail = n++ % 5 === 4;
    const thenable = {
      then(ok: (v: undefined) => void, ko: (e: unknown) => void) {
        setTimeout(() => fail ? ko(new Error("thenable rejected")) : ok(undefined), 0);
      },
    };
    return thenable as unknown as Promise<void>;
  };
  const result = await drive(handler);
  assertOrdered(result);
  assert.ok(result.counters.failures > 0, "some thenables rejected");
});

test("a thenable that calls back twice, or both ways, finishes its call once", async () => {
  let n = 0;
  // The second callbacks that come a macrotask later, by when the call's slot is reused.
  const late: Promise<void>[] = [];
  const handler: Handler = () => {
    const k = n++ % 3;
    const thenable = {
      then(ok: (v: undefined) => void, ko: (e: unknown) => void) {
        // Synchronously and again later: the second callback must be ignored.
        if (k === 0) {
          ok(undefined);
          late.push(new Promise((r) => setTimeout(() => r(ok(undefined)), 0)));
        } else if (k === 1) {
          ok(undefined);
          ko(new Error("late rejection, ignored"));
        } else {
          queueMicrotask(() => ok(undefined));
          queueMicrotask(() => ok(undefined));
        }
      },
    };
    return thenable as unknown as Promise<void>;
  };
  const result = await drive(handler);
  await Promise.all(late);
  assertOrdered(result);
  assert.equal(result.counters.failures, 0);
  assert.equal(result.counters.calls, n);
});

test("a Promise subclass with its own then is awaited through that then", async () => {
  let thens = 0;
  class Tracked<T> extends Promise<T> {
    // deno-lint-ignore no-explicit-any
    override then<A = T, B = never>(ok?: any, ko?: any): Promise<A | B> {
      thens++;
      return super.then(ok, ko);
    }
  }
  let n = 0;
  const handler: Handler = (_s, events) => {
    const k = n++;
    return new Tracked<number | void>((resolve, reject) =>
      k % 7 === 6 ? reject(new Error("subclass rejected")) : resolve(events[0].index + 1)
    );
  };
  const result = await drive(handler);
  assertOrdered(result);
  assert.equal(thens, n, "its own then ran once per call");
  assert.ok(result.counters.failures > 0);
});
