// Review rev14 (issue 14), the reproduction kept as the test (fixed: a clean stop leaves the scope
// first, releases wait for the leave): README ("A clean stop releases every slot, so the others
// take over within a heartbeat"). stop() revokes every lease at once and releases each as its
// revocation ends, but leaves the scope only after the slowest one; until then the stopping member
// still counts as live (its row does not lapse: it was renewed up to a heartbeat ago), so its
// released slots are neither within another member's share nor stranded (released, not lapsed),
// and nobody takes them. With one slot whose revocation takes 1.2 s (calls in flight up to the
// sink's stopTimeoutMs), a slot released at once stays unowned for that long, plus up to a
// heartbeat (no wake-up for a member row deleted by leave()).
import assert from "node:assert/strict";
import { createLeaseMember } from "../../mod.ts";
import { initPostgresLeases, postgresLeases } from "../../leases/postgres.ts";
import { withSchema } from "../support/postgres.ts";

const T = { durationMs: 3000, heartbeatMs: 400, handoverMs: 1500 };
const SLOW_REVOCATION_MS = 1200;
/** Queries and timers of a loaded machine, on top of the heartbeat. */
const ALLOWANCE_MS = 250;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

Deno.test("a clean stop's quickly revoked slots are taken within a heartbeat of their release, whatever another slot's revocation takes", async () => {
  await withSchema(async (pool, schema) => {
    await initPostgresLeases(pool, { schema });
    const store = postgresLeases(pool, { schema });
    const scope = "messagedb/g";
    const units = ["u0", "u1", "u2", "u3"];
    const slow: { unit?: string; ended?: boolean; takenEarly?: boolean } = {};
    const make = (name: string) =>
      createLeaseMember({
        store,
        scope,
        units,
        member: name,
        ...T,
        onAcquired({ unit }) {
          // The leave comes first: the slow slot must still wait for its release.
          if (unit === slow.unit && slow.ended === false) slow.takenEarly = true;
        },
        onRevoked: ({ unit }) =>
          unit === slow.unit
            ? sleep(SLOW_REVOCATION_MS).then(() => void (slow.ended = true))
            : Promise.resolve(),
      });
    const a = make("a"), b = make("b");
    const loops = [a.start()];
    await sleep(2 * T.heartbeatMs);
    loops.push(b.start());
    const deadline = performance.now() + 10_000;
    while (a.snapshot().held.length !== 2 || b.snapshot().held.length !== 2) {
      assert.ok(performance.now() < deadline, "did not settle");
      await sleep(50);
    }
    const [slowUnit, fastUnit] = a.snapshot().held.map((h) => h.unit);
    slow.unit = slowUnit;
    slow.ended = false;
    const stopping = a.stop();
    // When the fast slot was released (owner gone), and when b took it, on the database's clock.
    let releasedAt: number | undefined, takenAt: number | undefined;
    const end = performance.now() + 10_000;
    while (takenAt === undefined && performance.now() < end) {
      const [view] = await store.list(scope);
      const l = view.leases.find((l) => l.unit === fastUnit);
      if (releasedAt === undefined && l?.owner === undefined) releasedAt = view.now;
      if (l?.owner === "b") takenAt = l.acquiredAt;
      await sleep(10);
    }
    await stopping;
    console.log(
      `${fastUnit} released at +0, taken by b at +${
        takenAt === undefined || releasedAt === undefined
          ? "never"
          : Math.round(takenAt - releasedAt)
      } ms (${slowUnit}'s revocation: ${SLOW_REVOCATION_MS} ms, heartbeat ${T.heartbeatMs} ms)`,
    );
    try {
      assert.ok(releasedAt !== undefined && takenAt !== undefined, "released and taken");
      assert.ok(!slow.takenEarly, `b took ${slowUnit} before a's revocation of it ended`);
      assert.ok(
        takenAt - releasedAt <= T.heartbeatMs + ALLOWANCE_MS,
        `taken ${Math.round(takenAt - releasedAt)} ms after its release (> ${T.heartbeatMs} + ` +
          `${ALLOWANCE_MS} ms)`,
      );
    } finally {
      await b.stop();
      await Promise.all(loops);
    }
  });
});
