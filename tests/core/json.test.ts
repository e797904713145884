// Stats are what operators log and serve: JSON.stringify of them must work and keep what they say.
import assert from "node:assert/strict";
import { jsonSafe, run, streamsSink } from "../../mod.ts";
import { createMemoryStore, memorySource } from "../../sources/memory.ts";
import { memoryCheckpoints } from "../../checkpoints/memory.ts";
import type { CheckpointStore } from "../../core/checkpoints.ts";
import { sleep, test, within } from "../support/core.ts";

test("jsonSafe: bigints as decimal text, errors by name and message, cycles and odd values", () => {
  const cyclic: Record<string, unknown> = { a: 1 };
  cyclic.self = cyclic;
  const shared = { n: 1n };
  assert.deepEqual(
    jsonSafe({
      big: 2n ** 70n,
      error: new TypeError("bad"),
      when: new Date(0),
      gone: undefined,
      nan: NaN,
      list: [1n, undefined, shared, shared],
      map: new Map([["k", 3n]]),
      pairs: new Map([[1, "one"]]),
      url: new URL("http://127.0.0.1:9464/metrics"),
      cyclic,
    }),
    {
      big: "1180591620717411303424",
      error: { name: "TypeError", message: "bad" },
      when: "1970-01-01T00:00:00.000Z",
      nan: null,
      list: ["1", null, { n: "1" }, { n: "1" }], // the same object twice is not a cycle
      map: { k: "3" },
      pairs: [[1, "one"]],
      url: "http://127.0.0.1:9464/metrics",
      cyclic: { a: 1, self: "[cycle]" },
    },
  );
});

test("sink.stats(): JSON.stringify works and keeps positions and the commit error", async () => {
  const inner = memoryCheckpoints();
  const failing: CheckpointStore = {
    ...inner,
    commit: () => Promise.reject(new Error("checkpoint table is gone")),
  };
  const store = createMemoryStore();
  await store.append("Order-1", [{ type: "Placed", data: {} }], 0);
  const sink = streamsSink({
    group: "g",
    statsIntervalMs: 0,
    commitIntervalMs: 10,
    handler: () => {},
  });
  const ac = new AbortController();
  const running = run(
    memorySource({ store, checkpoints: failing, group: "g" }),
    sink,
    { signal: ac.signal },
  ).catch((e) => e);
  const failed = await within(
    (async () => {
      while (!(sink.stats().tranches[0]?.commitFailures > 0)) await sleep(10);
    })(),
    5000,
  );
  assert.equal(failed.timedOut, undefined, "the failing commit shows in stats");
  const parsed = JSON.parse(JSON.stringify(sink.stats()));
  const [t] = parsed.tranches;
  assert.equal(t.completed, "1", "the position, as decimal text");
  assert.deepEqual(t.commitError, { name: "Error", message: "checkpoint table is gone" });
  assert.equal(parsed.group, "g");
  assert.equal(parsed.counters.handled, 1);
  assert.equal(Object.keys(sink.stats()).includes("toJSON"), false, "spreads see only the data");
  // The parts stringify on their own too.
  assert.equal(JSON.parse(JSON.stringify(sink.stats().tranches))[0].completed, "1");
  ac.abort();
  await running;
});
