// The memory source's start position: a checkpoint past the end of the log is refused, and a
// source that failed to start leaves no listener on the store.
import assert from "node:assert/strict";
import { ImpelError, run, streamsSink } from "../../mod.ts";
import { memoryCheckpoints } from "../../checkpoints/memory.ts";
import { createMemoryStore, MEMORY_TRANCHE, memorySource } from "../../sources/memory.ts";
import { test } from "../support/core.ts";

test(
  "memory source: a checkpoint past the end of the log fails the run, skipping nothing",
  async () => {
    const store = createMemoryStore();
    const checkpoints = memoryCheckpoints();
    await checkpoints.commit({ source: "memory", tranche: MEMORY_TRANCHE, group: "g" }, 5n);
    await store.append("Order-1", [{ type: "T", data: {} }], 0);
    let listeners = 0;
    const counting = {
      ...store,
      get head() {
        return store.head;
      },
      subscribe(listener: () => void) {
        listeners++;
        const off = store.subscribe(listener);
        return () => {
          listeners--;
          off();
        };
      },
    };
    const handled: string[] = [];
    const sink = streamsSink({
      statsIntervalMs: 0,
      handler: (stream) => void handled.push(stream),
    });
    const error = await run(memorySource({ store: counting, checkpoints, group: "g" }), sink).then(
      () => undefined,
      (e) => e,
    );
    assert.ok(error instanceof ImpelError && error.code === "InvalidCheckpoint", `got ${error}`);
    assert.match(error.message, /beyond the log \(1 entries\)/);
    assert.deepEqual(handled, []);
    assert.equal(listeners, 0, "a source that failed to start leaves no listener");
  },
);
