// Review rev14 (issue 14), the reproduction kept as the test (fixed: planLeases checks its input
// at the boundary): planLeases is a public export (mod.ts) and takes the new
// `heartbeatMs` without checking it. NaN makes `wakeAt` NaN (a member loop would compute a NaN
// sleep: `Math.min(began + every, NaN)`); 0 or a negative number strands every lapsed unit at once,
// so every member takes every lapsed unit beyond its share (the churn the half heartbeat exists to
// avoid); a string is coerced. Other bad input crashes with a TypeError (`view: null`) or is read
// character by character (`units: "u0u1"`). The standard: bad input gets a typed error naming it.
import assert from "node:assert/strict";
import { InvalidArgumentError, planLeases } from "../../mod.ts";

const now = 1_000_000;
const view = {
  now,
  members: [{ member: "b", expiresAt: now + 1_000, renewedAt: now }],
  // Lapsed 10 ms ago: not stranded under any sane heartbeat.
  leases: [{ unit: "u0", owner: "dead", generation: 1n, expiresAt: now - 10 }],
};
const units = ["u0", "u1", "u2", "u3"];

for (const heartbeatMs of [NaN, 0, -5, "100" as unknown as number]) {
  Deno.test(`planLeases refuses heartbeatMs ${String(heartbeatMs)} (${typeof heartbeatMs}) with a typed error`, () => {
    let plan;
    try {
      plan = planLeases({ view, member: "a", units, held: ["u1", "u2"], heartbeatMs });
    } catch (error) {
      assert.ok(error instanceof InvalidArgumentError, `not typed: ${error}`);
      return;
    }
    assert.fail(
      `accepted: wakeAt ${plan.wakeAt}, stranded ${JSON.stringify(plan.stranded)}, acquire ` +
        `${JSON.stringify(plan.acquire)} (a at its share of 2)`,
    );
  });
}

Deno.test("planLeases refuses a view that is not one with a typed error", () => {
  assert.throws(
    () => planLeases({ view: null as never, member: "a", units, held: [] }),
    InvalidArgumentError,
  );
});

Deno.test("planLeases refuses units that are not an array of names", () => {
  assert.throws(
    () => planLeases({ view, member: "a", units: "u0u1" as never, held: [] }),
    InvalidArgumentError,
  );
});

Deno.test("planLeases names the bad field of the view, member, held and fingerprint", () => {
  const cases: Array<[string, Record<string, unknown>]> = [
    ["view.now", { view: { ...view, now: NaN } }],
    ["view.leases", { view: { ...view, leases: undefined } }],
    ["view.members", { view: { ...view, members: {} } }],
    ["view.leases[0].expiresAt", { view: { ...view, leases: [{ unit: "u0", generation: 1n }] } }],
    ["view.members[0].member", { view: { ...view, members: [{ expiresAt: now }] } }],
    ["member", { member: "" }],
    ["units", { units: ["u0", "u0"] }],
    ["units", { units: ["u0", 1] }],
    ["held", { held: "u1" }],
    ["fingerprint", { fingerprint: 4 }],
    ["heartbeatMs", { heartbeatMs: 2.5 }],
  ];
  for (const [field, change] of cases) {
    assert.throws(
      () => planLeases({ view, member: "a", units, held: [], ...change } as never),
      (e: unknown) => e instanceof InvalidArgumentError && e.field === field,
      `${field}: ${JSON.stringify(change, (_, v) => typeof v === "bigint" ? `${v}n` : v)}`,
    );
  }
  // Well-formed input still plans: a, alone with b, takes up to its share of 2.
  const plan = planLeases({ view, member: "a", units, held: new Set(["u1"]), heartbeatMs: 100 });
  assert.equal(plan.share, 2);
  assert.equal(plan.acquire.length, 1);
});
