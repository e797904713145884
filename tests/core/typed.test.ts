// A sink with a codec: its handler sees typed events, an unreadable one fails only its stream.
import assert from "node:assert/strict";
import {
  createCodec,
  decodingHandler,
  EventDecodeError,
  InvalidArgumentError,
  run,
  type StreamFailure,
  streamsSink,
  type Upcaster,
} from "../../mod.ts";
import { createMemoryStore, memorySource } from "../../sources/memory.ts";
import { test } from "../support/core.ts";

type Event =
  | { type: "Charged"; data: { amount: number; currency: string } }
  | { type: "Refunded"; data: { amount: number } };

const addCurrency: Upcaster = (data) => ({ ...(data as object), currency: "EUR" });

test("streamsSink({ codec }): the handler gets decoded, upcast events; a bad one fails its stream", async () => {
  const store = createMemoryStore();
  await store.append("Account-1", [{ type: "Charged", data: { amount: 5 } }], 0); // version 1
  await store.append("Account-1", [{ type: "Refunded", data: { amount: 2 } }], 1);
  await store.append("Account-2", [{ type: "Closed", data: {} }], 0); // not in the codec
  await store.append("Account-3", [{ type: "Refunded", data: { amount: 1 } }], 0);
  const codec = createCodec<Event>({
    Charged: { version: 2, upcast: { 1: addCurrency } },
    Refunded: {},
  });
  const seen: string[] = [];
  const dead: StreamFailure[] = [];
  const sink = streamsSink({
    codec,
    statsIntervalMs: 0,
    failure: { kind: "deadLetter", maxAttempts: 1, deadLetter: (f) => void dead.push(f) },
    handler: (stream, events) => {
      for (const e of events) {
        // `type` narrows `data`: no casts.
        const what = e.type === "Charged"
          ? `${e.data.amount} ${e.data.currency}`
          : `-${e.data.amount}`;
        seen.push(`${stream}@${e.index} ${what}`);
      }
    },
  });
  const ac = new AbortController();
  const running = run(memorySource({ store }), sink, { signal: ac.signal });
  await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 5000 });
  ac.abort();
  await running;
  assert.deepEqual(seen.sort(), ["Account-1@0 5 EUR", "Account-1@1 -2", "Account-3@0 -1"]);
  assert.equal(dead.length, 1);
  assert.equal(dead[0].stream, "Account-2");
  assert.ok(dead[0].error instanceof EventDecodeError, String(dead[0].error));
  assert.equal((dead[0].error as EventDecodeError).code, "UnknownEventType");
});

test("decodingHandler: events the codec skips are left out; a span of only those is handled", async () => {
  const codec = createCodec<Event>({ Refunded: {} } as never, { onUnknown: "skip" });
  const calls: number[][] = [];
  const handler = decodingHandler(
    codec,
    (_s, events) => void calls.push(events.map((e) => e.index)),
  );
  const ev = (index: number, type: string) => ({
    index,
    type,
    data: { amount: 1 },
    meta: null,
    id: `e${index}`,
    time: new Date(0),
    size: 1,
  });
  const ctx = { signal: new AbortController().signal, attempt: 1 };
  assert.equal(await handler("A-1", [ev(0, "Charged"), ev(1, "Refunded")], ctx), undefined);
  assert.equal(await handler("A-1", [ev(2, "Charged")], ctx), undefined);
  assert.deepEqual(calls, [[1]], "the handler saw the readable event only, and no empty call");
  assert.equal(codec.skipped.unknown, 2);
  // A throwing parse of the user's own is that event's decode failure, not a crash.
  const strict = createCodec<Event>({
    Charged: {},
    Refunded: {
      parse: () => {
        throw new RangeError("amount must be positive");
      },
    },
  });
  const h2 = decodingHandler(strict, () => {});
  await assert.rejects(async () => await h2("A-1", [ev(0, "Refunded")], ctx), EventDecodeError);
  assert.throws(() => decodingHandler({} as never, () => {}), InvalidArgumentError);
  assert.throws(
    () => streamsSink({ codec: null as never, handler: "x" as never }),
    InvalidArgumentError,
  );
});
