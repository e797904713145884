// Park and byStream policies refuse at construction what can never work: a pollMs no timer can
// take (above 2^31 - 1 ms setInterval fires about every millisecond), and a byStream pattern no
// stream name can match (no '-' and no '*', or leading or trailing spaces).
import assert from "node:assert/strict";
import { type FailurePolicy, InvalidArgumentError, streamsSink } from "../../mod.ts";
import { memoryParkStore } from "../../parked/memory.ts";

const refused = (failure: FailurePolicy, field: string) =>
  assert.throws(
    () => streamsSink({ group: "g", statsIntervalMs: 0, handler: () => {}, failure }),
    (e: unknown) => e instanceof InvalidArgumentError && e.message.includes(field),
  );

Deno.test("park policy: pollMs above 2^31 - 1 ms is refused, naming failure.pollMs", async () => {
  const store = memoryParkStore();
  refused({ kind: "park", maxAttempts: 3, store, pollMs: 2 ** 31 }, "failure.pollMs");
  refused({ kind: "park", maxAttempts: 3, store, pollMs: 30 * 24 * 3600 * 1000 }, "failure.pollMs");
  refused({
    kind: "byStream",
    rules: [{ match: "A-*", policy: { kind: "park", maxAttempts: 3, store, pollMs: 2 ** 40 } }],
  }, "failure.rules[0].policy.pollMs");
  const ok = streamsSink({
    group: "g",
    statsIntervalMs: 0,
    handler: () => {},
    failure: { kind: "park", maxAttempts: 3, store, pollMs: 2 ** 31 - 1 },
  });
  await ok.stop();
});

Deno.test("byStream: a pattern that can never match a stream name is refused, naming the entry", async () => {
  const store = memoryParkStore();
  const park = { kind: "park", maxAttempts: 3, store } as const;
  for (const match of ["Payment", " Payment-*", "Payment-* ", "\tPayment-1"]) {
    refused({ kind: "byStream", rules: [{ match, policy: park }] }, "failure.rules[0].match");
  }
  refused({
    kind: "byStream",
    rules: [{ match: "Order-*", policy: { kind: "retry" } }, { match: "Payment", policy: park }],
  }, "failure.rules[1].match");
  for (const match of ["Payment-*", "*", "Pay*", "Payment-1", "*-1"]) {
    const sink = streamsSink({
      group: "g",
      statsIntervalMs: 0,
      handler: () => {},
      failure: { kind: "byStream", rules: [{ match, policy: park }] },
    });
    await sink.stop();
  }
});
