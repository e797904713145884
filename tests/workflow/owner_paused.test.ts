// A runner paused past its owner lease (a stopped process, a long GC, a blocked event loop) must
// not send on resuming: its renewals stalled meanwhile, and another runner may hold the category
// by now. The pause ends inside a handler, so what runs next (the next send of the same target)
// runs before any of the lease's timers: the runner checks the lease's expiry before each send.
import assert from "node:assert/strict";
import {
  defineWorkflow,
  startWorkflow,
  workflowCategories,
  workflowClient,
  WorkflowRunnerConflictError,
} from "../../core/workflow.ts";
import { createCodec } from "../../core/codec.ts";
import { memoryLeases } from "../../leases/memory.ts";
import { createMemoryStore, memorySource } from "../../sources/memory.ts";

type Noted = { type: "Noted"; data: null };
type Note = { type: "Note"; data: null };
type Ping = { type: "Ping"; data: { n: number } };
const wf = defineWorkflow<Noted, number, Note, Ping>({
  category: "Paused",
  codec: createCodec<Noted>({ Noted: {} }),
  initial: 0,
  fold: (n, es) => n + es.length,
  // Two sends to one target: delivered one after the other.
  decide: () => ({
    events: [{ type: "Noted", data: null }],
    sends: [
      { to: "Pinged-1", type: "Ping", data: { n: 1 } },
      { to: "Pinged-1", type: "Ping", data: { n: 2 } },
    ],
  }),
});

/** Blocks the event loop for `ms`: the process is paused, no timer runs. */
function pause(ms: number) {
  const until = Date.now() + ms;
  while (Date.now() < until) { /* paused */ }
}

Deno.test({
  name: "a runner paused past its lease (renewals stalled) does not send on resuming",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const store = createMemoryStore();
    const leases = memoryLeases();
    let stall = false;
    // Renewals stall (a partitioned lease database) from the pause on.
    const stalling = new Proxy(leases, {
      get(t, p) {
        const v = Reflect.get(t, p);
        if (p === "heartbeat") {
          return (...a: unknown[]) =>
            stall ? new Promise(() => {}) : (v as (...a: unknown[]) => unknown).apply(t, a);
        }
        return typeof v === "function" ? v.bind(t) : v;
      },
    });
    const sent: number[] = [];
    const runner = startWorkflow(wf, {
      store,
      source: memorySource({ store, categories: workflowCategories(wf) }),
      handlers: {
        Ping: (s) => {
          sent.push(s.data.n);
          if (s.data.n === 1) {
            stall = true;
            pause(600); // twice the lease's duration
          }
        },
      },
      owner: { leases: stalling, member: "a", durationMs: 300 },
    });
    let ended: unknown = "running";
    runner.running.then(() => ended = "stopped", (e) => ended = e);
    try {
      await workflowClient(wf, { store }).handle("i1", { type: "Note", data: null }, { id: "n1" });
      await new Promise((r) => setTimeout(r, 500));
      assert.deepEqual(sent, [1], "the second send went out after the lease lapsed");
      assert.ok(ended instanceof WorkflowRunnerConflictError, `runner: ${ended}`);
    } finally {
      await Promise.race([runner.stop().catch(() => {}), new Promise((r) => setTimeout(r, 500))]);
    }
  },
});
