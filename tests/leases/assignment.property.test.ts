// Property tests of the lease assignment (core/lease.ts) over the memory lease store and a fake
// clock: members join, tick, sweep, pause, resume, die and stop in generated orders while time
// advances. After every step no unit may be held by two members, a member that holds a unit must
// be its owner in the store with at least handoverMs left before expiry, and a commit under a
// fence that is not the current lease must be refused. Once the churn ends, the assignment must
// settle: every unit held, each member within one of the others.
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  createLeaseMember,
  fairShares,
  type LeaseMember,
  type LeaseView,
  planLeases,
  StaleCommitError,
} from "../../mod.ts";
import { memoryCheckpoints } from "../../checkpoints/memory.ts";
import { memoryLeases } from "../../leases/memory.ts";

const RUNS = Number(Deno.env.get("RUNS") ?? 300);
const TIMING = { durationMs: 1000, heartbeatMs: 200, handoverMs: 400 };

type Op =
  | { readonly op: "advance"; readonly ms: number }
  | { readonly op: "tick" | "sweep" | "pause" | "resume" | "kill" | "stop"; readonly i: number }
  | { readonly op: "join" };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ op: fc.constant("advance" as const), ms: fc.nat(600) }) },
  {
    weight: 8,
    arbitrary: fc.record({ op: fc.constant("tick" as const), i: fc.nat(7) }),
  },
  { weight: 2, arbitrary: fc.record({ op: fc.constant("sweep" as const), i: fc.nat(7) }) },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constantFrom("pause" as const, "resume" as const, "kill" as const, "stop" as const),
      i: fc.nat(7),
    }),
  },
  { weight: 1, arbitrary: fc.constant({ op: "join" as const }) },
);

interface Sim {
  readonly name: string;
  readonly member: LeaseMember;
  state: "running" | "paused" | "dead" | "stopping";
  /** Revocations waiting for the simulated sink: they end `delay` ms after they began. */
  readonly revoking: Array<{ at: number; done: () => void }>;
}

const settle = async () => {
  for (let i = 0; i < 20; i++) await Promise.resolve();
};

Deno.test("leases: never two holders, holders own an unexpired lease, stale commits refused, settles balanced", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 1, max: 13 }),
      fc.integer({ min: 1, max: 4 }),
      fc.array(opArb, { minLength: 10, maxLength: 120 }),
      fc.nat(250),
      async (unitCount, initial, ops, revokeMs) => {
        let clock = 1_000_000;
        const store = memoryLeases({ now: () => clock });
        const checkpoints = memoryCheckpoints({ leases: store });
        const units = Array.from({ length: unitCount }, (_, i) => `u${i}`);
        const sims: Sim[] = [];
        const join = () => {
          const name = `m${sims.length}`;
          const revoking: Sim["revoking"] = [];
          const member = createLeaseMember({
            store,
            scope: "g",
            units,
            member: name,
            ...TIMING,
            now: () => clock,
            onAcquired() {},
            onRevoked: () => new Promise<void>((done) => revoking.push({ at: clock, done })),
          });
          sims.push({ name, member, state: "running", revoking });
        };
        for (let i = 0; i < initial; i++) join();
        const check = async () => {
          for (const unit of units) {
            const holders = sims.filter((s) => s.state !== "dead" && s.member.holds(unit));
            assert.ok(holders.length <= 1, `${unit} held by ${holders.map((s) => s.name)}`);
            const [view] = await store.list("g");
            const lease = view.leases.find((l) => l.unit === unit);
            for (const h of holders) {
              assert.equal(lease?.owner, h.name, `${h.name} holds ${unit} but the store says no`);
              assert.ok(lease!.expiresAt - clock >= TIMING.handoverMs, "handoverMs left");
            }
            for (const s of sims) {
              const fence = s.member.fence(unit);
              if (fence === undefined || s.state === "dead") continue;
              const key = { source: "s", tranche: unit, group: "g" };
              const ok = await checkpoints.commit(key, 1n, fence).then(
                () => true,
                (e) => (assert.ok(e instanceof StaleCommitError), false),
              );
              if (ok) {
                assert.ok(
                  holders.every((h) => h === s),
                  `${s.name}'s commit accepted while ${holders[0]?.name} holds ${unit}`,
                );
              }
            }
          }
        };
        const finishRevocations = (all: boolean) => {
          for (const s of sims) {
            if (s.state === "paused" || s.state === "dead") continue;
            for (let k = s.revoking.length - 1; k >= 0; k--) {
              if (all || clock - s.revoking[k].at >= revokeMs) s.revoking.splice(k, 1)[0].done();
            }
          }
        };
        for (const o of ops) {
          const s = o.op === "advance" || o.op === "join" ? undefined : sims[o.i % sims.length];
          switch (o.op) {
            case "advance":
              clock += o.ms;
              finishRevocations(false);
              break;
            case "join":
              if (sims.length < 8) join();
              break;
            case "tick":
              if (s!.state === "running" || s!.state === "stopping") await s!.member.tick();
              break;
            case "sweep":
              if (s!.state === "running" || s!.state === "stopping") s!.member.sweep();
              break;
            case "pause":
              if (s!.state === "running") s!.state = "paused";
              break;
            case "resume":
              if (s!.state === "paused") s!.state = "running";
              break;
            case "kill":
              if (s!.state !== "dead") s!.state = "dead";
              break;
            case "stop":
              if (s!.state === "running") {
                s!.state = "stopping";
                s!.member.stop();
              }
              break;
          }
          await settle();
          await check();
        }

        // The churn is over: paused members wake, everything runs for a while.
        const alive = sims.filter((s) => s.state === "running" || s.state === "paused");
        for (const s of alive) s.state = "running";
        for (let round = 0; round < 40; round++) {
          clock += TIMING.heartbeatMs;
          finishRevocations(true);
          for (const s of sims) if (s.state !== "dead") s.member.sweep();
          await settle();
          for (const s of alive) await s.member.tick();
          await settle();
          await check();
        }
        if (alive.length === 0) return;
        const counts = alive.map((s) => units.filter((u) => s.member.holds(u)).length);
        assert.equal(counts.reduce((a, b) => a + b, 0), unitCount, `all held: ${counts}`);
        assert.ok(Math.max(...counts) - Math.min(...counts) <= 1, `balanced: ${counts}`);
        for (const s of sims) if (s.state !== "dead") s.state = "stopping";
        const stops = alive.map((s) => s.member.stop());
        finishRevocations(true);
        await settle();
        finishRevocations(true);
        await Promise.all(stops);
      },
    ),
    { numRuns: RUNS },
  );
});

Deno.test("leases: fairShares splits evenly, the first members by id taking the remainder", () => {
  fc.assert(
    fc.property(
      fc.uniqueArray(fc.string({ minLength: 1, maxLength: 4 }), { minLength: 1, maxLength: 20 }),
      fc.nat(200),
      (members, units) => {
        const shares = fairShares(members, units);
        const values = [...shares.values()];
        assert.equal(values.reduce((a, b) => a + b, 0), units);
        assert.ok(Math.max(...values) - Math.min(...values) <= 1);
        assert.deepEqual(fairShares([...members].reverse(), units), shares);
      },
    ),
  );
});

Deno.test("leases: a plan never acquires beyond the share nor hands over below it", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 30 }),
      fc.array(
        fc.record({ owner: fc.option(fc.nat(4)), expired: fc.boolean(), by: fc.option(fc.nat(4)) }),
        {
          maxLength: 30,
        },
      ),
      fc.array(fc.boolean(), { minLength: 5, maxLength: 5 }),
      fc.option(fc.integer({ min: 1, max: 300 }), { nil: undefined }),
      (unitCount, rows, liveFlags, heartbeatMs) => {
        const now = 1000;
        const units = Array.from({ length: unitCount }, (_, i) => `u${i}`);
        const view: LeaseView = {
          now,
          members: liveFlags.map((live, i) => ({
            member: `m${i}`,
            expiresAt: live ? now + 1 : now - 1,
            renewedAt: 0,
          })),
          leases: rows.slice(0, unitCount).map((r, i) => ({
            unit: `u${i}`,
            generation: 1n,
            expiresAt: r.expired ? now - 200 * (i % 3) : now + 1,
            ...(r.owner === null ? {} : { owner: `m${r.owner}` }),
            ...(r.by === null ? {} : { requestedBy: `m${r.by}` }),
          })),
        };
        const held = view.leases.filter((l) => l.owner === "m0" && l.expiresAt > now).map((l) =>
          l.unit
        );
        const plan = planLeases({ view, member: "m0", units, held, heartbeatMs });
        // Beyond the share only units lapsed a heartbeat ago (stranded), never released ones.
        assert.ok(
          held.length + plan.acquire.length - plan.stranded.length + plan.request.length <=
            Math.max(plan.share, held.length),
        );
        for (const unit of plan.stranded) {
          const l = view.leases.find((x) => x.unit === unit);
          assert.ok(plan.acquire.includes(unit) && !plan.alternatives.includes(unit));
          assert.ok(heartbeatMs !== undefined && l?.owner !== undefined);
          assert.ok(now - l.expiresAt >= heartbeatMs / 2, "lapsed half a heartbeat ago");
        }
        if (heartbeatMs === undefined) assert.deepEqual(plan.stranded, []);
        assert.ok(plan.wakeAt > now, "a wake-up is always ahead");
        assert.ok(held.length - plan.handOver.length >= Math.min(plan.share, held.length));
        assert.equal(
          new Set([...plan.acquire, ...plan.alternatives]).size,
          plan.acquire.length + plan.alternatives.length,
        );
        for (const unit of [...plan.acquire, ...plan.alternatives]) {
          const l = view.leases.find((x) => x.unit === unit);
          assert.ok(
            l === undefined || l.owner === undefined || l.expiresAt <= now,
            "only free units",
          );
        }
        for (const unit of plan.request) {
          const owner = view.leases.find((x) => x.unit === unit)?.owner;
          assert.ok(owner !== undefined && owner !== "m0" && plan.members.includes(owner));
        }
      },
    ),
    { numRuns: 2000 },
  );
});
