import assert from "node:assert/strict";
import {
  createCodec,
  EventDecodeError,
  EventEncodeError,
  SCHEMA_VERSION_KEY,
} from "../../core/codec.ts";
import { InvalidArgumentError } from "../../core/errors.ts";
import type { StreamEvent } from "../../core/event.ts";
import { createMemoryStore } from "../../sources/memory.ts";

// Charged v1 stored `cents`; v2 renamed it to `amount`; v3 added `currency`.
type Event =
  | { type: "Charged"; data: { amount: number; currency: string } }
  | { type: "CheckedOut"; data: { at: string } };

const parseCharged = (d: unknown) => {
  const { amount, currency } = d as { amount?: unknown; currency?: unknown };
  if (typeof amount !== "number" || !Number.isInteger(amount)) {
    throw new Error("amount must be an integer");
  }
  if (typeof currency !== "string") throw new Error("currency must be a string");
  return { amount, currency };
};

const spec = {
  Charged: {
    version: 3,
    upcast: {
      1: (d: unknown) => ({ amount: (d as { cents: number }).cents }),
      2: (d: unknown) => ({ ...(d as object), currency: "EUR" }),
    },
    parse: parseCharged,
    aliases: ["ChargeAdded"],
  },
  CheckedOut: {},
};

const stored = (type: string, data: unknown, meta: unknown = null, index = 0): StreamEvent => ({
  index,
  type,
  data,
  meta,
  id: `id-${index}`,
  time: new Date(0),
  size: 0,
});

Deno.test("codec: encode records the schema version only above 1, with context", () => {
  const codec = createCodec<Event>(spec);
  const charged = codec.encode({ type: "Charged", data: { amount: 5, currency: "GBP" } }, {
    meta: { user: "clerk-1" },
    correlationId: "c1",
  });
  assert.deepEqual(charged, {
    type: "Charged",
    data: { amount: 5, currency: "GBP" },
    meta: { user: "clerk-1", [SCHEMA_VERSION_KEY]: 3 },
    correlationId: "c1",
  });
  const out = codec.encode({ type: "CheckedOut", data: { at: "t" } });
  assert.deepEqual(out, { type: "CheckedOut", data: { at: "t" } });
  assert.throws(
    () => codec.encode({ type: "Nope", data: {} } as unknown as Event),
    (e) => e instanceof EventEncodeError && e.type === "Nope" && /not a type/.test(e.message),
  );
});

Deno.test("codec: old shapes are upcast step by step, aliases decode as the new name", () => {
  const codec = createCodec<Event>(spec);
  assert.deepEqual(codec.decode(stored("Charged", { cents: 250 })), {
    type: "Charged",
    data: { amount: 250, currency: "EUR" },
  });
  assert.deepEqual(codec.decode(stored("Charged", { amount: 7 }, { [SCHEMA_VERSION_KEY]: 2 })), {
    type: "Charged",
    data: { amount: 7, currency: "EUR" },
  });
  assert.deepEqual(
    codec.decode(
      stored("ChargeAdded", { amount: 9, currency: "USD" }, { [SCHEMA_VERSION_KEY]: 3, u: 1 }),
    ),
    { type: "Charged", data: { amount: 9, currency: "USD" } },
  );
  // A round trip through encode gives back the event as it was.
  const encoded = codec.encode({ type: "Charged", data: { amount: 1, currency: "JPY" } });
  assert.deepEqual(codec.decode(stored(encoded.type, encoded.data, encoded.meta)), {
    type: "Charged",
    data: { amount: 1, currency: "JPY" },
  });
});

Deno.test("codec: unknown and malformed events fail with a clear error by default", () => {
  const codec = createCodec<Event>(spec);
  assert.throws(
    () => codec.decode(stored("Refunded", {}, null, 4)),
    (e) =>
      e instanceof EventDecodeError && e.code === "UnknownEventType" && e.index === 4 &&
      e.type === "Refunded" && /event 4 \(Refunded, id id-4\)/.test(e.message),
  );
  assert.throws(
    () => codec.decode(stored("Charged", { cents: "lots" }, null, 2)),
    (e) =>
      e instanceof EventDecodeError && e.code === "MalformedEvent" &&
      /schema version 1 rejected: amount must be an integer/.test(e.message) &&
      e.cause instanceof Error,
  );
  // Written by newer code than this codec knows.
  assert.throws(
    () =>
      codec.decode(stored("Charged", { amount: 1, currency: "EUR" }, { [SCHEMA_VERSION_KEY]: 4 })),
    (e) =>
      e instanceof EventDecodeError && e.code === "MalformedEvent" &&
      /schema version 4/.test(e.message),
  );
  assert.throws(
    () => codec.decode(stored("Charged", { amount: 1 }, { [SCHEMA_VERSION_KEY]: "2" })),
    (e) => e instanceof EventDecodeError && e.code === "MalformedEvent",
  );
  assert.deepEqual(codec.skipped, { unknown: 0, malformed: 0 });
});

Deno.test("codec: the skip policies drop and count, and report each skipped event", () => {
  const seen: string[] = [];
  const codec = createCodec<Event>(spec, {
    onUnknown: "skip",
    onMalformed: "skip",
    onSkip: (e) => seen.push(`${e.code}@${e.index}`),
  });
  assert.equal(codec.decode(stored("Refunded", {}, null, 1)), undefined);
  assert.equal(codec.decode(stored("Refunded", {}, null, 2)), undefined);
  assert.equal(codec.decode(stored("Charged", { cents: null }, null, 3)), undefined);
  assert.deepEqual(codec.decode(stored("CheckedOut", { at: "x" }, null, 4)), {
    type: "CheckedOut",
    data: { at: "x" },
  });
  assert.deepEqual(codec.skipped, { unknown: 2, malformed: 1 });
  assert.deepEqual(seen, ["UnknownEventType@1", "UnknownEventType@2", "MalformedEvent@3"]);

  // Policies are independent.
  const strictShapes = createCodec<Event>(spec, { onUnknown: "skip" });
  assert.equal(strictShapes.decode(stored("Refunded", {})), undefined);
  assert.throws(() => strictShapes.decode(stored("Charged", {})), EventDecodeError);
});

Deno.test("codec: specs are checked up front", () => {
  const bad = (s: unknown, field: string, options = {}) =>
    assert.throws(
      () => createCodec<Event>(s as never, options),
      (e) => e instanceof InvalidArgumentError && e.field === field,
    );
  bad({ Charged: { version: 3, upcast: { 1: (d: unknown) => d } } }, "spec.Charged.upcast");
  bad({ Charged: { version: 0 } }, "spec.Charged.version");
  bad({ Charged: { version: 1.5 } }, "spec.Charged.version");
  bad({ Charged: { parse: "no" } }, "spec.Charged.parse");
  bad({ Charged: {}, CheckedOut: { aliases: ["Charged"] } }, "spec.CheckedOut");
  bad({ Charged: null }, "spec.Charged");
  bad(null, "spec");
  bad({ Charged: {} }, "onUnknown", { onUnknown: "ignore" });
  bad({ Charged: {} }, "onMalformed", { onMalformed: true });
});

Deno.test("codec: what a store returns decodes back to the typed events", async () => {
  const store = createMemoryStore();
  const codec = createCodec<Event>(spec);
  const events: Event[] = [
    { type: "Charged", data: { amount: 3, currency: "EUR" } },
    { type: "CheckedOut", data: { at: "2026-01-02T10:00:00Z" } },
  ];
  await store.append(
    "GuestStay-1",
    events.map((e) => codec.encode(e, { causationId: "cmd-1" })),
    0,
  );
  const read = await store.readStream("GuestStay-1");
  assert.deepEqual(read.map((e) => codec.decode(e)), events);
  assert.deepEqual(read.map((e) => e.causationId), ["cmd-1", "cmd-1"]);
});

// Review of the write side (codec): what a store would keep differently, or refuse, is refused
// at encode with EventEncodeError naming the event.
type Note = { type: "Noted"; data: unknown };
const notes = createCodec<Note>({ Noted: {} });
const refusedAs = (pattern: RegExp) => (e: unknown) =>
  e instanceof EventEncodeError && e.type === "Noted" && pattern.test(e.message);

Deno.test("encode reads reserved metadata keys from the metadata's JSON (toJSON included)", () => {
  const meta = { toJSON: () => ({ schemaVersion: 2, user: "ann" }) };
  assert.throws(
    () => notes.encode({ type: "Noted", data: 1 }, { meta }),
    refusedAs(/context\.meta\.schemaVersion is reserved/),
  );
  assert.throws(
    () => notes.encode({ type: "Noted", data: 1 }, { meta: { toJSON: () => [1] } }),
    refusedAs(/must be stored as a JSON object/),
  );
  // What is stored is that JSON, not the caller's object.
  const plain = { toJSON: () => ({ user: "ann" }), secret: "dropped" };
  assert.deepEqual(notes.encode({ type: "Noted", data: 1 }, { meta: plain }).meta, {
    user: "ann",
  });
});

Deno.test("encode refuses strings a jsonb store rejects: NUL and lone surrogates", () => {
  for (
    const [data, pattern] of [
      [{ text: "a\u0000b" }, /NUL/],
      [{ text: "x\ud800y" }, /lone surrogate \(\\ud800\)/],
      [["\udc00"], /lone surrogate/],
      [{ ["k\u0000"]: 1 }, /a key holds a NUL/],
    ] as const
  ) {
    assert.throws(() => notes.encode({ type: "Noted", data }), refusedAs(pattern));
  }
  assert.throws(
    () => notes.encode({ type: "Noted", data: 1 }, { meta: { by: "\u0000" } }),
    refusedAs(/metadata cannot be stored/),
  );
  assert.throws(
    () => notes.encode({ type: "Noted", data: 1 }, { correlationId: "r\ud83d" }),
    refusedAs(/context\.correlationId cannot be stored/),
  );
  // A well-formed surrogate pair (an emoji) and an escaped backslash-u are fine.
  const ok = notes.roundTrip({ type: "Noted", data: { text: "\ud83d\ude00 \\u0000" } });
  assert.deepEqual(ok.decoded.data, { text: "\ud83d\ude00 \\u0000" });
});

Deno.test("encode refuses byte arrays: stores disagree on them (JSON object vs binary)", () => {
  assert.throws(
    () => notes.encode({ type: "Noted", data: new Uint8Array([1, 2]) }),
    refusedAs(/data is a byte array/),
  );
  assert.throws(
    () => notes.encode({ type: "Noted", data: new ArrayBuffer(2) }),
    refusedAs(/byte array/),
  );
  assert.throws(
    () => notes.encode({ type: "Noted", data: { blob: new Uint16Array(1) } }),
    refusedAs(/holds a byte array.*"blob"/),
  );
});
