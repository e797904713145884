// Stream configuration: resolution (first match wins per delivery mode), the failure policy and
// retention rules it yields, the park policy applied through a real reactor (memory source and
// park store), and a typed error naming the entry for each kind of bad entry.
import assert from "node:assert/strict";
import { run, streamsSink } from "../../core/sink.ts";
import {
  streamConfig,
  type StreamConfigEntry,
  StreamConfigError,
  StreamNotDeclaredError,
} from "../../core/streamconfig.ts";
import { memoryParkStore } from "../../parked/memory.ts";
import { createMemoryStore, memorySource } from "../../sources/memory.ts";

Deno.test("stream config: first match wins per delivery mode; rules and failure policy follow the order", () => {
  const store = memoryParkStore();
  const config = streamConfig([
    {
      match: "Payment",
      delivery: "broadcast",
      retention: { maxAgeMs: 1000 },
      deadLetter: { kind: "park", maxAttempts: 2, store },
    },
    { match: "Pay*", delivery: "broadcast" },
    {
      match: "*",
      delivery: "broadcast",
      retention: { maxCount: 5 },
      lifecycle: { expired: "archive" },
    },
    { match: "Payment", delivery: "queue", retention: { maxAgeMs: 10 } }, // same name, other mode
  ]);
  assert.equal(config.resolve("broadcast", "Payment")?.deadLetter?.kind, "park");
  assert.equal(config.resolve("broadcast", "Payout")?.match, "Pay*");
  assert.equal(config.resolve("broadcast", "Order")?.match, "*");
  assert.equal(config.resolve("queue", "Payment")?.retention?.maxAgeMs, 10);
  assert.equal(config.resolve("queue", "other"), undefined);
  assert.deepEqual(config.retentionRules().map((r) => [r.target, r.match, r.archive]), [
    ["category", "Payment", false],
    ["category", "Pay*", false],
    ["category", "*", true],
    ["queue", "Payment", false],
  ]);
  const failure = config.failurePolicy();
  assert.equal(failure.kind, "byStream");
  if (failure.kind !== "byStream") return;
  assert.deepEqual(failure.rules.map((r) => [r.match, r.policy.kind]), [
    ["Payment-*", "park"],
    ["Pay*", "retry"],
    ["*", "retry"],
  ]);
});

Deno.test("stream config: check() refuses names a pattern without autoCreate would create", () => {
  const config = streamConfig([
    { match: "jobs", delivery: "queue" },
    { match: "jobs*", delivery: "queue", lifecycle: { autoCreate: false } },
    { match: "*", delivery: "broadcast" },
  ]);
  config.check("queue", "jobs");
  config.check("broadcast", "Anything");
  assert.throws(() => config.check("queue", "jobs-2"), StreamNotDeclaredError);
  assert.throws(() => config.check("queue", "mail"), StreamNotDeclaredError);
});

Deno.test("stream config: the park policy of an entry parks a failing stream in a reactor", async () => {
  const parked = memoryParkStore();
  const config = streamConfig([
    {
      match: "Payment",
      delivery: "broadcast",
      deadLetter: { kind: "park", maxAttempts: 1, store: parked, pollMs: 50 },
    },
    { match: "*", delivery: "broadcast" },
  ]);
  const events = createMemoryStore();
  await events.append("Payment-1", [{ type: "Bad", data: {} }, { type: "Later", data: {} }], 0);
  await events.append("Order-1", [{ type: "Fine", data: {} }], 0);
  const handled: string[] = [];
  const sink = streamsSink({
    group: "pay",
    handler: (stream, list) => {
      if (list.some((e) => e.type === "Bad")) throw new Error("cannot pay");
      for (const e of list) handled.push(`${stream}:${e.type}`);
    },
    failure: config.failurePolicy(),
    retry: { initialDelayMs: 1, maxDelayMs: 1 },
    statsIntervalMs: 0,
  });
  const ac = new AbortController();
  const running = run(memorySource({ store: events }), sink, { signal: ac.signal });
  let list: Awaited<ReturnType<typeof parked.list>> = [];
  for (let i = 0; i < 200 && list.length === 0; i++) {
    list = await parked.list("pay");
    await new Promise((r) => setTimeout(r, 10));
  }
  await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 5000 });
  ac.abort();
  await running;
  assert.equal(list.length, 1);
  assert.equal(list[0].stream, "Payment-1");
  assert.deepEqual(handled, ["Order-1:Fine"]);
});

Deno.test("stream config: each kind of bad entry is a StreamConfigError naming the entry and field", () => {
  const park = memoryParkStore();
  const cases: Array<[string, unknown[], number, string]> = [
    ["not an object", [null], 0, "entries[0]"],
    ["unknown field", [{ match: "A", delivery: "broadcast", retain: {} }], 0, "entries[0].retain"],
    ["bad delivery", [{ match: "A", delivery: "fanout" }], 0, "entries[0].delivery"],
    ["empty match", [{ match: "", delivery: "broadcast" }], 0, "entries[0].match"],
    ["category with '-'", [{ match: "Order-1", delivery: "broadcast" }], 0, "entries[0].match"],
    ["wildcard not at the end", [{ match: "*der", delivery: "queue" }], 0, "entries[0].match"],
    [
      "repeated",
      [{ match: "A", delivery: "queue" }, { match: "A", delivery: "queue" }],
      1,
      "entries[1].match",
    ],
    [
      "unreachable after a wildcard",
      [{ match: "Ord*", delivery: "broadcast" }, { match: "Order", delivery: "broadcast" }],
      1,
      "entries[1].match",
    ],
    [
      "retention: negative age",
      [{ match: "A", delivery: "broadcast", retention: { maxAgeMs: -5 } }],
      0,
      "entries[0].retention.maxAgeMs",
    ],
    [
      "retention: keepLast 0",
      [{ match: "A", delivery: "broadcast", retention: { keepLast: 0 } }],
      0,
      "entries[0].retention.keepLast",
    ],
    [
      "retention: keepLast on a queue",
      [{ match: "q", delivery: "queue", retention: { keepLast: 3 } }],
      0,
      "entries[0].retention.keepLast",
    ],
    [
      "deadLetter: unknown kind",
      [{ match: "A", delivery: "broadcast", deadLetter: { kind: "drop" } }],
      0,
      "entries[0].deadLetter.kind",
    ],
    [
      "deadLetter: park without a store",
      [{ match: "A", delivery: "broadcast", deadLetter: { kind: "park", maxAttempts: 3 } }],
      0,
      "entries[0].deadLetter.store",
    ],
    [
      "deadLetter: pipeline-wide fault limit",
      [{ match: "A", delivery: "broadcast", deadLetter: { kind: "fault", maxStuckMs: 5 } }],
      0,
      "entries[0].deadLetter.maxStuckMs",
    ],
    [
      "deadLetter on a queue",
      [{
        match: "q",
        delivery: "queue",
        deadLetter: { kind: "park", maxAttempts: 1, store: park },
      }],
      0,
      "entries[0].deadLetter",
    ],
    [
      "lifecycle: bad expired",
      [{ match: "A", delivery: "broadcast", lifecycle: { expired: "move" } }],
      0,
      "entries[0].lifecycle.expired",
    ],
    [
      "lifecycle: archive with nothing to remove",
      [{ match: "A", delivery: "broadcast", lifecycle: { expired: "archive" } }],
      0,
      "entries[0].lifecycle.expired",
    ],
    [
      "lifecycle: autoCreate not a boolean",
      [{ match: "A", delivery: "broadcast", lifecycle: { autoCreate: "yes" } }],
      0,
      "entries[0].lifecycle.autoCreate",
    ],
  ];
  for (const [what, entries, index, field] of cases) {
    assert.throws(
      () => streamConfig(entries as StreamConfigEntry[]),
      (e) => {
        assert.ok(e instanceof StreamConfigError, `${what}: got ${e}`);
        assert.equal(e.entry, index, what);
        assert.equal(e.field, field, what);
        assert.match(e.message, new RegExp(`entry ${index}`), what);
        return true;
      },
      what,
    );
  }
});
