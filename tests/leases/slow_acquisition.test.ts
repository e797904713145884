// Review rev14 (issue 14): a plan computed while the last plan's acquisitions still run was
// dropped (`renew()` starts a plan's calls only when none run), and nothing planned again when they
// ended: a wake-up for a dead member's lapse that came meanwhile was lost, and its slots were
// taken only at the next heartbeat (or by another member, as stranded). Fixed: a member plans
// again (a heartbeat, for a fresh view) as soon as the calls end when it dropped a plan meanwhile.
// The slow acquisitions are a deliberate fault: a store wrapper that delays them.
import assert from "node:assert/strict";
import { createLeaseMember, type LeaseStore } from "../../mod.ts";
import { initPostgresLeases, postgresLeases } from "../../leases/postgres.ts";
import { withSchema } from "../support/postgres.ts";

// callTimeoutMs = (6 000 − 2 000) / 2 = 2 000: the slow acquisitions (1 500 ms) are not given up.
const T = { durationMs: 6000, heartbeatMs: 1200, handoverMs: 2000 };
const SLOW_ACQUIRE_MS = 1500;
/** The dead member's leases and heartbeat lapse this long after the member starts. */
const DEAD_FOR_MS = 600;
/** Two store round trips (a heartbeat, an acquisition) of a loaded machine. */
const ALLOWANCE_MS = 400;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

Deno.test("a wake-up that comes while acquisitions are still running is acted on when they end", async () => {
  await withSchema(async (pool, schema) => {
    await initPostgresLeases(pool, { schema });
    const store = postgresLeases(pool, { schema });
    const scope = "messagedb/g";
    const units = ["u0", "u1", "u2", "u3"];
    // "dead" holds u0 and u1 and stops beating: both lapse DEAD_FOR_MS from now.
    await store.heartbeat(scope, "dead", DEAD_FOR_MS, []);
    for (const unit of ["u0", "u1"]) {
      assert.ok(await store.acquire(scope, unit, "dead", DEAD_FOR_MS));
    }
    let slowEndedAt = 0;
    const slowed: LeaseStore = {
      ...store,
      acquire: async (scope, unit, member, durationMs) => {
        const lease = await store.acquire(scope, unit, member, durationMs);
        if (unit === "u2" || unit === "u3") {
          await sleep(SLOW_ACQUIRE_MS);
          slowEndedAt = Math.max(slowEndedAt, performance.now());
        }
        return lease;
      },
    };
    const acquiredAt = new Map<string, number>();
    const a = createLeaseMember({
      store: slowed,
      scope,
      units,
      member: "a",
      ...T,
      onAcquired: ({ unit }) => void acquiredAt.set(unit, performance.now()),
      onRevoked: () => Promise.resolve(),
    });
    const startedAt = performance.now();
    const loop = a.start();
    try {
      const deadline = performance.now() + 10_000;
      while (acquiredAt.size < 4) {
        assert.ok(performance.now() < deadline, `took only ${[...acquiredAt.keys()]}`);
        await sleep(20);
      }
      const late = (unit: string) => Math.round(acquiredAt.get(unit)! - slowEndedAt);
      console.log(
        `slow acquisitions ended at +${Math.round(slowEndedAt - startedAt)} ms; u0 taken ` +
          `${late("u0")} ms and u1 ${late("u1")} ms after them (heartbeat ${T.heartbeatMs} ms)`,
      );
      // The first heartbeat saw "dead" live: a's share was 2, so it went for the free u2 and u3.
      assert.ok(acquiredAt.get("u2")! < acquiredAt.get("u0")!, "u2 first");
      for (const unit of ["u0", "u1"]) {
        // Not before the lapse (the store decides), and at once after the slow calls.
        assert.ok(acquiredAt.get(unit)! - startedAt >= DEAD_FOR_MS - 50, `${unit} too early`);
        assert.ok(
          late(unit) <= ALLOWANCE_MS,
          `${unit} taken ${
            late(unit)
          } ms after the slow acquisitions ended (> ${ALLOWANCE_MS} ms): ` +
            `the wake-up for the dead member's lapse was dropped`,
        );
      }
    } finally {
      await a.stop();
      await loop;
    }
  });
});
