// The hotel group checkout in both styles on one memory store: today's reactor over GroupCheckout
// and the workflow over GroupCheckoutFlow, driving the same GuestStay service; the same clerk's
// actions give the same outcomes, and a stay both select lands in exactly one group.
import assert from "node:assert/strict";
import { memoryCheckpoints } from "../../checkpoints/memory.ts";
import { createStateCache } from "../../core/decider.ts";
import { startWorkflow, workflowCategories } from "../../core/workflow.ts";
import { GROUP_CHECKOUT, groupCheckoutService } from "../../examples/hotel/groupCheckout.ts";
import {
  groupCheckoutHandlers,
  groupCheckoutWorkflow,
} from "../../examples/hotel/groupCheckoutWorkflow.ts";
import { guestStayService } from "../../examples/hotel/guestStay.ts";
import { REACTOR_GROUP, startReactor } from "../../examples/hotel/reactor.ts";
import { createMemoryStore, memorySource } from "../../sources/memory.ts";

const T = "2026-03-01T12:00:00Z";

function hotel() {
  const store = createMemoryStore();
  const cache = createStateCache();
  const stays = guestStayService(store, { cache });
  const groups = groupCheckoutService(store, { cache });
  const reactor = startReactor({
    stays,
    groups,
    now: () => T,
    source: memorySource({
      store,
      checkpoints: memoryCheckpoints(),
      group: REACTOR_GROUP,
      categories: [GROUP_CHECKOUT],
    }),
  });
  const workflow = startWorkflow(groupCheckoutWorkflow, {
    store,
    source: memorySource({ store, categories: workflowCategories(groupCheckoutWorkflow) }),
    handlers: groupCheckoutHandlers(stays),
  });
  const settle = async () => {
    for (let i = 0; i < 3; i++) {
      await reactor.sink.monitor.awaitCompletion({ tail: true, timeoutMs: 10_000 });
      await workflow.awaitIdle();
    }
  };
  let n = 0;
  const open = async (charged: number, paid = 0) => {
    const id = `s${n++}`;
    await stays.checkIn(id, T);
    if (charged > 0) await stays.charge(id, "room", charged, T);
    if (paid > 0) await stays.pay(id, "deposit", paid, T);
    return id;
  };
  const stop = () => Promise.all([reactor.stop(), workflow.stop()]);
  return { store, stays, groups, workflow, settle, open, stop };
}

Deno.test("hotel: the reactor and the workflow check the same kinds of stays out alike", async () => {
  const h = hotel();
  try {
    const setUp = async () => {
      const merged = await h.open(10_000, 2_500);
      const out = await h.open(100, 100);
      await h.stays.checkOut(out, T);
      return { merged, out, never: `never${n++}` };
    };
    let n = 0;
    const a = await setUp(), b = await setUp();
    await h.groups.select("ga", [a.merged, a.out, a.never], T);
    await h.workflow.handle("gb", {
      type: "SelectStays",
      data: { stayIds: [b.merged, b.out, b.never], at: T },
    });
    await h.settle();
    const reactorStyle = (await h.groups.read("ga")).state;
    const workflowStyle = (await h.workflow.read("gb")).state;
    const outcome = (s: typeof reactorStyle, ids: typeof a) => ({
      pending: s.pending,
      merged: s.merged.map((m) => [m.stayId === ids.merged, m.residual]),
      failed: s.failed.map((f) => [f.stayId === ids.out ? "out" : "never", f.reason]).sort(),
      balance: s.balance,
    });
    assert.deepEqual(outcome(workflowStyle, b), outcome(reactorStyle, a));
    assert.deepEqual(outcome(workflowStyle, b), {
      pending: [],
      merged: [[true, 7_500]],
      failed: [["never", "notCheckedIn"], ["out", "checkedOut"]],
      balance: 7_500,
    });
    await h.workflow.handle("gb", {
      type: "Pay",
      data: { paymentId: "card", amount: 7_500, at: T },
    });
    await h.workflow.handle("gb", { type: "Confirm", data: { at: T } });
    const done = await h.workflow.read("gb");
    assert.equal(done.state.confirmedAt, T);
    assert.deepEqual(done.pending, []);
    assert.deepEqual((await h.stays.read(b.merged)).groupId, "gb");
  } finally {
    await h.stop();
  }
});

Deno.test("hotel: stays selected by a reactor group and a workflow group at once land in one each", async () => {
  const h = hotel();
  try {
    const shared = await Promise.all(Array.from({ length: 8 }, (_, i) => h.open(100 * (i + 1))));
    await Promise.all([
      h.groups.select("ga", shared, T),
      h.workflow.handle("gb", {
        type: "SelectStays",
        data: { stayIds: [...shared].reverse(), at: T },
      }),
    ]);
    await h.settle();
    const a = (await h.groups.read("ga")).state, b = (await h.workflow.read("gb")).state;
    assert.deepEqual([a.pending, b.pending], [[], []]);
    for (const id of shared) {
      const inA = a.merged.some((m) => m.stayId === id),
        inB = b.merged.some((m) => m.stayId === id);
      assert.ok(inA !== inB, `${id} merged into exactly one group`);
      const owner = (await h.stays.read(id)).groupId;
      assert.equal(owner, inA ? "ga" : "gb");
    }
    assert.equal(a.merged.length + b.merged.length, shared.length);
    assert.equal(a.failed.length + b.failed.length, shared.length);
    assert.equal(a.balance + b.balance, 3_600);
  } finally {
    await h.stop();
  }
});
