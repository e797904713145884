// A runner's lease check before each send (owner_paused.test.ts) must also refuse once a heartbeat
// found the lease lost (taken by another runner), though the lease's lapse time by this process's
// clock is still ahead: the loss is reported on `lost`, and a send started before the runner
// stops must not go out beside the new holder's.
import assert from "node:assert/strict";
import { holdRunnerLease, WorkflowRunnerConflictError } from "../../core/workflow/ownership.ts";
import { memoryLeases } from "../../leases/memory.ts";

Deno.test({
  name: "runner lease: check throws once a heartbeat found the lease taken, before its lapse",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const leases = memoryLeases();
    let taken = false;
    // From `taken` on, a heartbeat renews nothing: another runner holds the category.
    const losing = new Proxy(leases, {
      get(t, p) {
        const v = Reflect.get(t, p);
        if (p === "heartbeat") {
          return (...a: unknown[]) =>
            taken
              ? Promise.resolve({ renewed: [] })
              : (v as (...a: unknown[]) => unknown).apply(t, a);
        }
        return typeof v === "function" ? v.bind(t) : v;
      },
    });
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
