// Two members of one consumer group over one PostgreSQL park store, each owning one tranche (as
// leases give them): a request is claimed and applied only by the member owning the tranche the
// episode names, and a revocation mid-release stops the replay, gives the claim up at once and
// lets the tranche's new owner finish the release.
import assert from "node:assert/strict";
// @ts-types="@types/pg"
import pg from "pg";
import {
  type Batch,
  createOwnership,
  type Ownership,
  type StreamEvent,
  streamsSink,
} from "../../mod.ts";
import { initPostgresParkStore, postgresParkStore } from "../../parked/postgres.ts";
import { unique, url } from "../support/postgres.ts";
import { ev } from "../support/core.ts";
import { failure } from "./contract.ts";

const pool = new pg.Pool({ connectionString: url, max: 6 });
pool.on("error", () => {});
const available = await pool.query("SELECT 1").then(() => true, () => false);
if (!available) console.warn(`PostgreSQL is not reachable at ${url}: its member tests are ignored`);

async function until(what: string, cond: () => boolean | Promise<boolean>, ms = 10_000) {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const batchOf = (tranche: string, ownership: Ownership, stream: string): Batch => ({
  tranche,
  position: 1n,
  isTail: true,
  items: [{ stream, event: ev(0) }],
  ownership,
});

Deno.test({
  name:
    "two members over PostgreSQL: only the owner of an episode's tranche claims it; a revocation hands the release over",
  ignore: !available,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const schema = unique("members_");
    await initPostgresParkStore(pool, { schema });
    const store = postgresParkStore(pool, { schema });
    const handled = { a: [] as string[], b: [] as string[] };
    const member = (name: "a" | "b", pollMs: number) =>
      streamsSink({
        group: "g",
        statsIntervalMs: 0,
        commitIntervalMs: 5,
        maxEventsPerCall: 1,
        handler: async (stream: string, events: readonly StreamEvent[]) => {
          if (stream.startsWith("Pay-")) await new Promise((r) => setTimeout(r, 5));
          handled[name].push(...events.map((e) => `${stream}@${e.index}`));
        },
        failure: { kind: "park", maxAttempts: 1, store, pollMs },
      });
    // A polls ten times as often as B: without the ownership rule A would win every claim.
    const a = member("a", 10);
    const b = member("b", 100);
    const wa = a.writable.getWriter();
    const wb = b.writable.getWriter();
    try {
      const a0 = createOwnership("Pay-0/2");
      const b1 = createOwnership("Pay-1/2");
      await wa.write(batchOf("Pay-0/2", a0.ownership, "Order-a"));
      await wb.write(batchOf("Pay-1/2", b1.ownership, "Order-b"));
      await until("both tranches owned", () => handled.a.length === 1 && handled.b.length === 1);
      // Pay-X was parked from tranche Pay-1/2 (B's), with 60 events.
      const events = Array.from({ length: 60 }, (_, i) => ev(i));
      await store.park("g", [{ stream: "Pay-X", events, failure: failure(), tranche: "Pay-1/2" }]);
      await store.request("g", "Pay-X", { action: "release", by: "alice" });
      await until("B's replay under way", () => handled.b.length >= 11);
      assert.deepEqual(handled.a, ["Order-a@0"], "A claimed nothing of B's tranche");
      // B loses the tranche mid-release: its replay stops and its claim is given up at once.
      await b1.revoke();
      const atRevoke = handled.b.length;
      await until("the claim given up", async () => {
        const e = await store.get("g", "Pay-X");
        return e?.state === "parked" && (e.claim === undefined || e.claim.until <= Date.now());
      }, 1_000);
      const progress = (await store.get("g", "Pay-X"))!.first;
      assert.ok(progress > 0, "the replay's progress was recorded with the claim given up");
      await new Promise((r) => setTimeout(r, 300));
      assert.ok(handled.b.length <= atRevoke + 1, "B replays nothing more");
      assert.equal((await store.get("g", "Pay-X"))?.state, "parked", "nobody else took it yet");
      assert.deepEqual(handled.a, ["Order-a@0"], "nor A, which does not own the tranche");
      // A becomes the owner of Pay-1/2 and finishes the release.
      const a1 = createOwnership("Pay-1/2");
      await wa.write(batchOf("Pay-1/2", a1.ownership, "Order-c"));
      await until("A's release", async () => (await store.get("g", "Pay-X"))?.state === "released");
      const replayedByA = handled.a.filter((x) => x.startsWith("Pay-X@")).map((x) =>
        Number(x.slice(6))
      );
      assert.ok(replayedByA[0] <= progress, "from the progress recorded, nothing skipped");
      assert.deepEqual(
        replayedByA,
        Array.from({ length: 60 - replayedByA[0] }, (_, i) => replayedByA[0] + i),
        "in order, to the end",
      );
    } finally {
      wa.releaseLock();
      wb.releaseLock();
      await a.stop();
      await b.stop();
      await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    }
  },
});

addEventListener("unload", () => pool.end());
