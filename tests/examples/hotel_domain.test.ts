// The hotel domain as plain functions: decisions over folded states, no store involved.
import assert from "node:assert/strict";
import type { Decision } from "../../core/decider.ts";
import {
  confirm,
  foldGroup,
  type GroupCheckout,
  groupCheckoutCodec,
  type GroupCheckoutEvent,
  initialGroup,
  nextAction,
  payGroup,
  recordMerges,
  selectStays,
} from "../../examples/hotel/groupCheckout.ts";
import {
  charge,
  checkIn,
  checkOut,
  foldStay,
  type GuestStay,
  guestStayCodec,
  type GuestStayEvent,
  initialStay,
  pay,
  transferToGroup,
} from "../../examples/hotel/guestStay.ts";

const T = "2026-03-01T12:00:00Z";

/** Runs a decision and folds its events, as a decider would. */
function step<E extends { type: string }, S, R>(
  fold: (s: S, es: readonly E[]) => S,
  state: S,
  decide: (s: S) => Decision<E, R>,
): { state: S; events: readonly E[]; result: R | undefined } {
  const d = decide(state);
  const events = Array.isArray(d) ? d as readonly E[] : (d as { events: readonly E[] }).events;
  const result = Array.isArray(d) ? undefined : (d as { result: R }).result;
  return { state: fold(state, events), events, result };
}

const stay = (s: GuestStay, d: (s: GuestStay) => Decision<GuestStayEvent, unknown>) =>
  step(foldStay, s, d);
const group = (s: GroupCheckout, d: (s: GroupCheckout) => Decision<GroupCheckoutEvent, unknown>) =>
  step(foldGroup, s, d);

function openStay(balance: number): GuestStay {
  let s = stay(initialStay, checkIn(T)).state;
  s = stay(s, charge("c1", balance, T)).state;
  return s;
}

Deno.test("GuestStay: charges and payments are idempotent and only on an open stay", () => {
  assert.deepEqual(stay(initialStay, charge("c1", 100, T)).result, {
    ok: false,
    reason: "notOpen",
  });
  let r = stay(initialStay, checkIn(T));
  assert.deepEqual(r.events, [{ type: "CheckedIn", data: { at: T } }]);
  assert.deepEqual(stay(r.state, checkIn(T)).events, []);
  r = stay(r.state, charge("c1", 1200, T));
  r = stay(r.state, charge("c1", 1200, T)); // the same charge again
  assert.deepEqual(r.events, []);
  r = stay(r.state, pay("p1", 200, T));
  assert.equal(r.state.balance, 1000);
  assert.deepEqual(r.state.seen, ["c1", "p1"]);
});

Deno.test("GuestStay: check-out needs a settled balance and is final", () => {
  assert.deepEqual(stay(initialStay, checkOut(T)).result, { ok: false, reason: "notCheckedIn" });
  let s = openStay(500);
  assert.deepEqual(stay(s, checkOut(T)).result, { ok: false, reason: "balanceDue", balance: 500 });
  s = stay(s, pay("p1", 500, T)).state;
  const out = stay(s, checkOut(T));
  assert.deepEqual([out.result, out.events.map((e) => e.type)], [{ ok: true }, ["CheckedOut"]]);
  assert.deepEqual(stay(out.state, checkOut(T)), {
    state: out.state,
    events: [],
    result: { ok: true },
  });
  assert.deepEqual(stay(out.state, charge("c9", 1, T)).result, { ok: false, reason: "notOpen" });
  assert.deepEqual(stay(out.state, transferToGroup("g1", T)).result, {
    ok: false,
    reason: "checkedOut",
  });
});

Deno.test("GuestStay: a transfer hands the residual to one group only", () => {
  const s = openStay(750);
  const t = stay(s, transferToGroup("g1", T));
  assert.deepEqual(t.result, { ok: true, residual: 750 });
  assert.deepEqual(t.events, [{
    type: "TransferredToGroup",
    data: { groupId: "g1", residual: 750, at: T },
  }]);
  // Repeating for the same group is a success without a write; another group is refused.
  assert.deepEqual(stay(t.state, transferToGroup("g1", T)), {
    state: t.state,
    events: [],
    result: { ok: true, residual: 750 },
  });
  assert.deepEqual(stay(t.state, transferToGroup("g2", T)).result, {
    ok: false,
    reason: "transferredElsewhere",
  });
  assert.deepEqual(stay(t.state, checkOut(T)).result, {
    ok: false,
    reason: "transferred",
    groupId: "g1",
  });
  assert.deepEqual(stay(initialStay, transferToGroup("g1", T)).result, {
    ok: false,
    reason: "notCheckedIn",
  });
});

Deno.test("GroupCheckout: selections feed the to-do list, outcomes clear it", () => {
  let r = group(initialGroup, selectStays(["s1", "s2", "s1"], T));
  assert.deepEqual(r.events, [{ type: "StaysSelected", data: { stayIds: ["s1", "s2"], at: T } }]);
  assert.deepEqual(nextAction(r.state), { kind: "merge", stayIds: ["s1", "s2"] });
  r = group(r.state, selectStays(["s2", "s3"], T)); // s2 is already selected
  assert.deepEqual(r.events, [{ type: "StaysSelected", data: { stayIds: ["s3"], at: T } }]);

  r = group(
    r.state,
    recordMerges([
      { stayId: "s1", result: { ok: true, residual: 300 } },
      { stayId: "s3", result: { ok: false, reason: "checkedOut" } },
      { stayId: "s9", result: { ok: true, residual: 5 } }, // never selected: ignored
    ]),
  );
  assert.deepEqual(r.events, [
    { type: "StaysMerged", data: { stays: [{ stayId: "s1", residual: 300 }] } },
    { type: "MergesFailed", data: { stays: [{ stayId: "s3", reason: "checkedOut" }] } },
  ]);
  assert.deepEqual(nextAction(r.state), { kind: "merge", stayIds: ["s2"] });
  // Outcomes already recorded are not recorded twice.
  assert.deepEqual(
    group(r.state, recordMerges([{ stayId: "s1", result: { ok: true, residual: 300 } }])).events,
    [],
  );
  r = group(r.state, recordMerges([{ stayId: "s2", result: { ok: true, residual: 200 } }]));
  assert.deepEqual(nextAction(r.state), { kind: "ready", balance: 500 });
  // A stay with an outcome is not selected again.
  assert.deepEqual(group(r.state, selectStays(["s1", "s3"], T)).events, []);
});

Deno.test("GroupCheckout: confirmation needs every outcome and a settled balance", () => {
  let s = group(initialGroup, selectStays(["s1", "s2"], T)).state;
  assert.deepEqual(group(s, confirm(T)).result, { ok: false, reason: "mergesPending", pending: 2 });
  s = group(
    s,
    recordMerges([
      { stayId: "s1", result: { ok: true, residual: 400 } },
      { stayId: "s2", result: { ok: false, reason: "transferredElsewhere" } },
    ]),
  ).state;
  assert.deepEqual(group(s, confirm(T)).result, { ok: false, reason: "balanceDue", balance: 400 });
  s = group(s, payGroup("p1", 150, T)).state;
  s = group(s, payGroup("p1", 150, T)).state; // the same payment again
  assert.equal(s.balance, 250);
  s = group(s, payGroup("p2", 250, T)).state;
  const c = group(s, confirm(T));
  assert.deepEqual([c.result, c.events], [{ ok: true }, [{ type: "Confirmed", data: { at: T } }]]);
  assert.deepEqual(nextAction(c.state), { kind: "confirmed" });
  assert.deepEqual(group(c.state, confirm(T)).events, []);
  assert.deepEqual(group(c.state, selectStays(["s3"], T)).result, {
    ok: false,
    reason: "confirmed",
  });
  assert.deepEqual(group(c.state, payGroup("p3", 1, T)).result, { ok: false, reason: "confirmed" });
});

Deno.test("hotel codecs: stored shapes are checked", () => {
  const ev = (type: string, data: unknown) => ({
    index: 0,
    type,
    data,
    meta: null,
    id: "e",
    time: new Date(0),
    size: 0,
  });
  assert.deepEqual(guestStayCodec.decode(ev("Charged", { chargeId: "c", amount: 5, at: T })), {
    type: "Charged",
    data: { chargeId: "c", amount: 5, at: T },
  });
  assert.throws(
    () => guestStayCodec.decode(ev("Charged", { chargeId: "c", amount: 5.5, at: T })),
    /amount must be an integer/,
  );
  assert.throws(
    () =>
      groupCheckoutCodec.decode(ev("MergesFailed", { stays: [{ stayId: "s", reason: "bored" }] })),
    /unknown failure reason bored/,
  );
  assert.throws(
    () => groupCheckoutCodec.decode(ev("StaysSelected", { stayIds: "s1", at: T })),
    /stayIds must be an array/,
  );
});
