// The lease member over the memory store with a fake clock: takeover after a death, hand-over on
// a clean stop, a paused member's stale commit, disagreeing members, bad options; and the real
// heartbeat loop with real timers.
import assert from "node:assert/strict";
import {
  checkLeaseTiming,
  createLeaseMember,
  InvalidArgumentError,
  type LeaseMemberOptions,
  StaleCommitError,
} from "../../mod.ts";
import { memoryCheckpoints } from "../../checkpoints/memory.ts";
import { memoryLeases } from "../../leases/memory.ts";

const TIMING = { durationMs: 1000, heartbeatMs: 200, handoverMs: 400 };
const units = ["u0", "u1", "u2", "u3", "u4", "u5"];

function cluster() {
  let clock = 0;
  const store = memoryLeases({ now: () => clock });
  const log: string[] = [];
  const make = (member: string, extra: Partial<LeaseMemberOptions> = {}) =>
    createLeaseMember({
      store,
      scope: "g",
      units,
      member,
      ...TIMING,
      now: () => clock,
      onAcquired: (l) => log.push(`+${member}:${l.unit}`),
      onRevoked: (l, reason) => (log.push(`-${member}:${l.unit}:${reason}`), Promise.resolve()),
      ...extra,
    });
  return {
    store,
    log,
    make,
    advance: (ms: number) => (clock += ms),
    get now() {
      return clock;
    },
  };
}

const held = (m: { holds(u: string): boolean }) => units.filter((u) => m.holds(u));

Deno.test("leases: a dead member's units are taken within durationMs + heartbeatMs", async () => {
  const c = cluster();
  const a = c.make("a"), b = c.make("b");
  await a.tick();
  await b.tick();
  await a.tick(); // hands three over
  await new Promise((r) => setTimeout(r, 0));
  await b.tick();
  assert.deepEqual([held(a).length, held(b).length], [3, 3]);
  const diedAt = c.now; // a is never ticked again
  let takenAt: number | undefined;
  while (takenAt === undefined) {
    c.advance(TIMING.heartbeatMs);
    await b.tick();
    if (held(b).length === 6) takenAt = c.now;
    assert.ok(c.now - diedAt <= 5000, "taken over at all");
  }
  assert.ok(takenAt - diedAt <= TIMING.durationMs + TIMING.heartbeatMs, `${takenAt - diedAt} ms`);
  assert.deepEqual(held(a), [], "a stopped handing out work before its leases lapsed");
  await b.stop();
});

Deno.test("leases: a clean stop hands every unit to the others at their next heartbeat", async () => {
  const c = cluster();
  const a = c.make("a"), b = c.make("b");
  await a.tick();
  await b.tick();
  await a.tick();
  await new Promise((r) => setTimeout(r, 0));
  await b.tick();
  await a.stop();
  assert.ok(c.log.some((l) => l.startsWith("-a:") && l.endsWith("the member is stopping")));
  await b.tick();
  assert.equal(held(b).length, 6);
  const [view] = await c.store.list("g");
  assert.deepEqual(view.members.map((m) => m.member), ["b"], "a left");
  await b.stop();
});

Deno.test("leases: a paused member stops before expiry, and its late commit is refused", async () => {
  const c = cluster();
  const checkpoints = memoryCheckpoints({ leases: c.store });
  const key = { source: "s", tranche: "u0", group: "g" };
  const a = c.make("a");
  await a.tick();
  const fence = a.fence("u0")!;
  await checkpoints.commit(key, 5n, fence);
  c.advance(TIMING.durationMs - TIMING.handoverMs); // paused: no tick, no sweep
  assert.equal(a.holds("u0"), false, "no new work past the deadline, even before a sweep runs");
  c.advance(TIMING.handoverMs);
  const b = c.make("b");
  await b.tick();
  assert.equal(held(b).length, 6);
  await assert.rejects(checkpoints.commit(key, 9n, fence), StaleCommitError);
  assert.equal(await checkpoints.load(key), 5n);
  await checkpoints.commit(key, 9n, b.fence("u0")!);
  assert.equal(await checkpoints.load(key), 9n);
  await a.tick(); // wakes up: its heartbeat renews nothing
  assert.equal(a.snapshot().lost, 6);
  assert.deepEqual(held(a), []);
  await Promise.all([a.stop(), b.stop()]);
  // Asking holds() at the deadline revoked at once, before the leases could lapse.
  assert.equal(a.snapshot().lateRevocations, 0);
});

Deno.test("leases: members that disagree on the units take nothing of the other's and say so", async () => {
  const c = cluster();
  const a = c.make("a");
  await a.tick();
  const other = createLeaseMember({
    store: c.store,
    scope: "g",
    units: ["v0", "v1"],
    member: "z",
    ...TIMING,
    now: () => c.now,
    onAcquired() {},
    onRevoked: () => Promise.resolve(),
  });
  await other.tick();
  assert.deepEqual(units.filter((u) => other.holds(u)), []);
  assert.equal(other.holds("v0"), false);
  assert.match(other.problems()[0].reason, /disagree on the units/);
  await Promise.all([a.stop(), other.stop()]);
});

Deno.test("leases: the heartbeat loop with real timers renews, and stop releases", async () => {
  const store = memoryLeases();
  const started: string[] = [];
  const m = createLeaseMember({
    store,
    scope: "g",
    units: ["u0", "u1"],
    durationMs: 300,
    heartbeatMs: 50,
    handoverMs: 150,
    onAcquired: (l) => started.push(l.unit),
    onRevoked: () => Promise.resolve(),
  });
  const running = m.start();
  await new Promise((r) => setTimeout(r, 700)); // several lease durations
  assert.deepEqual(started.sort(), ["u0", "u1"], "acquired once, kept by renewals");
  assert.equal(m.snapshot().lost, 0);
  assert.ok(m.holds("u0"));
  await m.stop();
  await running;
  assert.equal(m.snapshot().released, 2);
  const [view] = await store.list("g");
  assert.ok(view.leases.every((l) => l.owner === undefined), "released");
});

Deno.test("leases: bad options are refused with InvalidArgumentError naming the option", () => {
  const base = {
    store: memoryLeases(),
    scope: "g",
    units: ["u"],
    onAcquired() {},
    onRevoked: () => Promise.resolve(),
  };
  const bad: Array<[Partial<LeaseMemberOptions>, string]> = [
    [{ units: [] }, "units"],
    [{ units: ["u", "u"] }, "units"],
    [{ scope: "" }, "scope"],
    [{ member: "" }, "member"],
    [{ durationMs: 10 }, "durationMs"],
    [{ durationMs: 1000, heartbeatMs: 300 }, "heartbeatMs"],
    [{ durationMs: 1000, handoverMs: 1000 }, "handoverMs"],
    [{ store: {} as never }, "store"],
  ];
  for (const [options, field] of bad) {
    assert.throws(
      () => createLeaseMember({ ...base, ...options }),
      (e) => e instanceof InvalidArgumentError && e.field === field,
      field,
    );
  }
  assert.deepEqual(checkLeaseTiming({ durationMs: 2000 }), {
    durationMs: 2000,
    heartbeatMs: 333,
    handoverMs: 1000,
  });
});
