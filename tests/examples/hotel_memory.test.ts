// The hotel reactor end to end on the memory store: the monitor's awaitCompletion is the only
// wait (no sleeps, no polling).
import assert from "node:assert/strict";
import { groupCheckoutService } from "../../examples/hotel/groupCheckout.ts";
import { guestStayService } from "../../examples/hotel/guestStay.ts";
import { memoryBackend } from "../../examples/hotel/wiring.ts";
import {
  closedStaysFailCleanly,
  concurrentSelections,
  groupMergesAndConfirms,
  type HotelEnv,
  newId,
  withReactor,
} from "./hotel_scenarios.ts";

/** The reactor reports past its own writes, so it is never called with them. */
function neverSawItsOwnWrites(env: HotelEnv): void {
  assert.ok(env.calls.length > 0);
  for (const call of env.calls) {
    assert.ok(
      !call.types.includes("StaysMerged") && !call.types.includes("MergesFailed"),
      `handler called for ${call.stream} with ${call.types.join(", ")}`,
    );
  }
}

Deno.test("hotel on memory: a group of several stays merges and confirms once paid", () =>
  withReactor(memoryBackend(), async (env) => {
    await groupMergesAndConfirms(env);
    neverSawItsOwnWrites(env);
    assert.deepEqual(env.sink.stats().failing, []);
  }));

Deno.test("hotel on memory: stays checked out, merged elsewhere or unknown fail cleanly", () =>
  withReactor(memoryBackend(), async (env) => {
    await closedStaysFailCleanly(env);
    neverSawItsOwnWrites(env);
  }));

Deno.test("hotel on memory: concurrent selections of one stay leave it in exactly one group", () =>
  withReactor(memoryBackend(), async (env) => {
    await concurrentSelections(env);
    neverSawItsOwnWrites(env);
  }));

Deno.test("hotel on memory: a restarted reactor resumes from its checkpoint", async () => {
  const backend = memoryBackend();
  const stays = guestStayService(backend.store);
  const groups = groupCheckoutService(backend.store);
  const first = newId(), second = newId();
  const stay1 = newId(), stay2 = newId();
  await stays.checkIn(stay1, "t");
  await stays.checkIn(stay2, "t");

  await withReactor(backend, async (env) => {
    await groups.select(first, [stay1], "t");
    await env.settle();
  });
  // Written while no reactor runs.
  await groups.select(second, [stay2], "t");
  assert.equal((await groups.read(second)).state.pending.length, 1);

  await withReactor(backend, async (env) => {
    await env.settle();
    // Only the new group's selection is handled: the first run's events were checkpointed.
    assert.deepEqual(env.calls.map((c) => c.types), [["StaysSelected"]]);
    assert.equal(env.calls[0].stream, `GroupCheckout-${second}`);
  });
  assert.deepEqual((await groups.read(second)).state.merged, [{ stayId: stay2, residual: 0 }]);
});
