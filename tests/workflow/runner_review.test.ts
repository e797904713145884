import assert from "node:assert/strict";
import { createCodec } from "../../core/codec.ts";
import { InvalidArgumentError } from "../../core/errors.ts";
import {
  defineWorkflow,
  manualClock,
  startWorkflow,
  workflowCategories,
} from "../../core/workflow.ts";
import { createMemoryStore, memorySource } from "../../sources/memory.ts";

type E = { type: "Touched"; data: null };
type I = { type: "Touch"; data: null } | { type: "Idle"; data: null };
Deno.test("runner patch: a re-armed deadline holds one durable timer; routed id form refused", async () => {
  const wf = defineWorkflow<E, number, I, never>({
    category: "Sess",
    codec: createCodec<E>({ Touched: {} }),
    initial: 0,
    fold: (n, es) => n + es.length,
    decide: (_s, input) =>
      input.type === "Touch"
        ? {
          events: [{ type: "Touched", data: null }],
          timers: [{ name: "idle", afterMs: 86_400_000, input: { type: "Idle", data: null } }],
        }
        : {},
    routes: [{ category: "Payment", route: () => undefined }],
  });
  const store = createMemoryStore();
  const runner = startWorkflow(wf, {
    store,
    clock: manualClock(0),
    source: memorySource({ store, categories: workflowCategories(wf) }),
    handlers: {},
  });
  try {
    for (let i = 0; i < 500; i++) {
      await runner.handle("s1", { type: "Touch", data: null });
      if (i % 50 === 49) await runner.awaitIdle();
    }
    await runner.awaitIdle();
    assert.equal(runner.timers.stats().pending, 1);
    await assert.rejects(
      runner.handle("s1", { type: "Touch", data: null }, { id: "Payment-p1@3" }),
      InvalidArgumentError,
    );
  } finally {
    await runner.stop();
  }
});
