// The list of withdrawn sends an instance keeps (whose handler may still run, so a reply to one
// is ignored and what was sent after it waits) stays short for a long-running instance that
// withdraws every send: the runner records those whose handler no longer runs settled.
import assert from "node:assert/strict";
import { createCodec } from "../../core/codec.ts";
import { defineWorkflow, startWorkflow, workflowCategories } from "../../core/workflow.ts";
import { createRuntime } from "../../core/workflow/client.ts";
import { internalFold } from "../../core/workflow/instance.ts";
import { createMemoryStore, memorySource } from "../../sources/memory.ts";

type Noted = { type: "Noted"; data: { n: number } };
type Input = { type: "Replace"; data: { n: number } } | { type: "Drop"; data: null } | {
  type: "Done";
  data: null;
};
type Work = { type: "Work"; data: { n: number } };
// Each Replace withdraws what is pending and sends anew; Drop withdraws everything.
const replacer = defineWorkflow<Noted, number, Input, Work>({
  category: "Replacer",
  codec: createCodec<Noted>({ Noted: {} }),
  initial: 0,
  fold: (n, events) => n + events.length,
  decide: (_, input, { pending }) => {
    const withdrawSends = (pending ?? []).map((p) => p.seq);
    if (input.type === "Replace") {
      return {
        events: [{ type: "Noted", data: input.data }],
        sends: [{ to: "Worker-1", type: "Work", data: input.data }],
        withdrawSends,
      };
    }
    return input.type === "Drop" ? { withdrawSends } : {};
  },
});

Deno.test("withdrawn: an instance that withdraws every send keeps a short list; a running one stays listed", async () => {
  const store = createMemoryStore();
  let release!: () => void;
  const released = new Promise<void>((resolve) => release = resolve);
  let calls = 0;
  const runner = startWorkflow(replacer, {
    store,
    source: memorySource({ store, categories: workflowCategories(replacer) }),
    handlers: {
      // The first call hangs until released, then replies: by then its send was withdrawn.
      Work: async () => {
        calls++;
        await released;
        return { type: "Done" as const, data: null };
      },
    },
  });
  const internals = createRuntime(replacer, { store }).decider;
  const withdrawnOf = () => internals.query("Replacer-r1", (s) => s.withdrawn ?? []);
  try {
    // While the first call hangs, the dispatcher waits on it (up to sendTimeoutMs): what is
    // withdrawn meanwhile is settled once it is back.
    for (let n = 0; n < 200; n++) await runner.handle("r1", { type: "Replace", data: { n } });
    await runner.handle("r1", { type: "Drop", data: null });
    release();
    await runner.awaitIdle();
    assert.equal(calls, 1, "only the first send's handler ran (the others waited behind it)");
    assert.equal(runner.stats().ignoredInputs, 1, "its late reply was recognised and ignored");
    const left = await withdrawnOf();
    assert.ok(left.length <= 8, `withdrawn kept short, got ${left.length}`);
    const instance = await runner.read("r1");
    assert.equal(instance.pending.length, 0);
    assert.equal(instance.state, 200);
  } finally {
    await runner.stop();
  }
});

Deno.test("withdrawn: sends withdrawn while no runner ran are settled when one starts", async () => {
  const store = createMemoryStore();
  const client = createRuntime(replacer, { store });
  for (let n = 0; n < 100; n++) await client.handle("r2", { type: "Replace", data: { n } });
  await client.handle("r2", { type: "Drop", data: null });
  const withdrawnOf = () => client.decider.query("Replacer-r2", (s) => s.withdrawn ?? []);
  assert.equal((await withdrawnOf()).length, 100);
  let calls = 0;
  const runner = startWorkflow(replacer, {
    store,
    source: memorySource({ store, categories: workflowCategories(replacer) }),
    handlers: { Work: () => void calls++ },
  });
  try {
    await runner.awaitIdle();
    assert.equal(calls, 0, "nothing withdrawn is delivered");
    assert.equal((await withdrawnOf()).length, 0, "none of them could still be running");
  } finally {
    await runner.stop();
  }
});

Deno.test("withdrawn: a settled mark removes one entry; an older runtime's fold ignores it", () => {
  const fold = internalFold<Noted, number>((n, events) => n + events.length);
  const send = (seq: number) => ({
    type: "WorkflowSend" as const,
    data: { seq, to: "W-1", type: "Work", data: null, correlationId: "c", causationId: "i" },
  });
  const s = fold({ state: 0, next: 0, pending: [], timers: [] }, [
    send(0),
    send(1),
    { type: "WorkflowWithdrawn", data: { seq: 0 } },
    { type: "WorkflowWithdrawn", data: { seq: 1, abandoned: true } },
  ]);
  assert.deepEqual([s.withdrawn, s.withdrawnAt, s.abandoned], [[0, 1], [2, 2], [1]]);
  const settled = fold(s, [{ type: "WorkflowWithdrawn", data: { seq: 1, settled: true } }]);
  assert.deepEqual([settled.withdrawn, settled.withdrawnAt, settled.abandoned], [
    [0],
    [2],
    undefined,
  ]);
  // Read as a plain withdrawal of a send no longer pending (what earlier versions saw): no-op.
  assert.deepEqual(fold(s, [{ type: "WorkflowWithdrawn", data: { seq: 1 } }]), s);
});
