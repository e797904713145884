// A runner's lease check before each send (owner_paused.test.ts) must also refuse once a heartbeat
// found the lease lost (taken by another runner), though the lease's lapse time by this process's
// clock is still ahead: the loss is reported on `lost`, and a send started before the runner
// stops must not go out beside the new holder's.
import assert from "node:assert/strict";
import { holdRunnerLease, WorkflowRunnerConflictError } from "../../core/workflow/ownership.ts";
import {
  defineWorkflow,
  startWorkflow,
  workflowCategories,
  workflowClient,
} from "../../core/workflow.ts";
import { createCodec } from "../../core/codec.ts";
import { memoryLeases } from "../../leases/memory.ts";
import { createMemoryStore, memorySource } from "../../sources/memory.ts";

/** Memory leases whose heartbeats renew nothing once `taken()`: another runner holds them. */
function losingLeases(taken: () => boolean) {
  const leases = memoryLeases();
  return new Proxy(leases, {
    get(t, p) {
      const v = Reflect.get(t, p);
      if (p === "heartbeat") {
        return (...a: unknown[]) =>
          taken()
            ? Promise.resolve({ renewed: [] })
            : (v as (...a: unknown[]) => unknown).apply(t, a);
      }
      return typeof v === "function" ? v.bind(t) : v;
    },
  });
}

Deno.test({
  name: "runner lease: check throws once a heartbeat found the lease taken, before its lapse",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    let taken = false;
    const losing = losingLeases(() => taken);
    const lease = holdRunnerLease({ leases: losing, member: "a", durationMs: 3000 }, "Lost");
    try {
      await lease.ready;
      lease.check(); // held and well within its lapse
      taken = true;
      let lost: unknown;
      lease.lost.catch((e) => lost = e);
      // The first heartbeat comes a third of the duration in; the lapse is 2 s further.
      await new Promise((r) => setTimeout(r, 1200));
      assert.ok(lost instanceof WorkflowRunnerConflictError, `lost: ${lost}`);
      assert.throws(() => lease.check(), (e) => e === lost, "check passed on a lease known lost");
    } finally {
      await lease.stop();
    }
  },
});

type Noted = { type: "Noted"; data: null };
type Note = { type: "Note"; data: null };
type Ping = { type: "Ping"; data: { n: number } };
const wf = defineWorkflow<Noted, number, Note, Ping>({
  category: "Taken",
  codec: createCodec<Noted>({ Noted: {} }),
  initial: 0,
  fold: (n, es) => n + es.length,
  // Two sends to one target: the second starts once the first is recorded.
  decide: () => ({
    events: [{ type: "Noted", data: null }],
    sends: [
      { to: "Pinged-1", type: "Ping", data: { n: 1 } },
      { to: "Pinged-1", type: "Ping", data: { n: 2 } },
    ],
  }),
});

Deno.test({
  name: "a runner whose lease a heartbeat found taken sends nothing more (its lapse still ahead)",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const store = createMemoryStore();
    let taken = false;
    const sent: number[] = [];
    const runner = startWorkflow(wf, {
      store,
      source: memorySource({ store, categories: workflowCategories(wf) }),
      handlers: {
        Ping: async (s) => {
          sent.push(s.data.n);
          if (s.data.n !== 1) return;
          // Another runner takes the category while this send is out; a heartbeat (every
          // 1 s) finds it, 2 s before the lease would lapse by this clock.
          taken = true;
          await new Promise((r) => setTimeout(r, 1500));
        },
      },
      owner: { leases: losingLeases(() => taken), member: "a", durationMs: 3000 },
    });
    let ended: unknown = "running";
    runner.running.then(() => ended = "stopped", (e) => ended = e);
    try {
      await workflowClient(wf, { store }).handle("i1", { type: "Note", data: null }, { id: "n1" });
      await new Promise((r) => setTimeout(r, 2000));
      assert.deepEqual(sent, [1], "the second send went out after the lease was found taken");
      assert.ok(ended instanceof WorkflowRunnerConflictError, `runner: ${ended}`);
    } finally {
      await Promise.race([runner.stop().catch(() => {}), new Promise((r) => setTimeout(r, 500))]);
    }
  },
});
