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
import type { ParkStore } from "../../mod.ts";
import { memoryParkStore } from "../../parked/memory.ts";
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

// A member that owns no tranche (a standby, or one still waiting for its lease) and one that owns
// the episode's tranche; or, with `tranche` nobody reads, two members neither of which owns it.
async function standby(
  kind: "memory" | "postgres",
  fn: (store: ParkStore) => Promise<void>,
) {
  if (kind === "memory") return await fn(memoryParkStore());
  const schema = unique("standby_");
  await initPostgresParkStore(pool, { schema });
  try {
    await fn(postgresParkStore(pool, { schema }));
  } finally {
    await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  }
}

for (const kind of ["memory", "postgres"] as const) {
  const member = (store: ParkStore, handled: string[], pollMs: number) =>
    streamsSink({
      group: "g",
      statsIntervalMs: 0,
      commitIntervalMs: 5,
      handler: (stream: string, events: readonly StreamEvent[]) => {
        handled.push(...events.map((e) => `${stream}@${e.index}`));
      },
      failure: { kind: "park", maxAttempts: 1, store, pollMs },
    });

  Deno.test({
    name: `${kind}: a member that owns no tranche never claims a release of another's tranche`,
    ignore: kind === "postgres" && !available,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: () =>
      standby(kind, async (store) => {
        await store.park("g", [{
          stream: "Pay-X",
          tranche: "Pay-0/1",
          events: [ev(0), ev(1), ev(2)],
          failure: failure(),
        }]);
        const owner: string[] = [];
        const idle: string[] = [];
        const o = member(store, owner, 100); // polls slowly: the standby would win every race
        const sb = member(store, idle, 10);
        const wo = o.writable.getWriter();
        try {
          const t0 = createOwnership("Pay-0/1");
          await wo.write(batchOf("Pay-0/1", t0.ownership, "Order-1"));
          await until("the owner reads its tranche", () => owner.length === 1);
          await store.request("g", "Pay-X", { action: "release", by: "alice" });
          await until(
            "released",
            async () => (await store.get("g", "Pay-X"))?.state === "released",
          );
          assert.deepEqual(idle, [], "the standby replayed nothing");
          assert.deepEqual(owner, ["Order-1@0", "Pay-X@0", "Pay-X@1", "Pay-X@2"]);
          assert.equal(
            (await store.get("g", "Pay-X"))?.resolution?.appliedBy.startsWith("g/"),
            true,
          );
        } finally {
          wo.releaseLock();
          await o.stop();
          await sb.stop();
        }
      }),
  });

  Deno.test({
    name:
      `${kind}: a request naming a tranche no member owns is claimed by a member once a claim's lease has passed`,
    ignore: kind === "postgres" && !available,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: () =>
      standby(kind, async (store) => {
        // Parked under a tranche name the group no longer uses (it moved to leases).
        await store.park("g", [{
          stream: "Pay-X",
          tranche: "Pay",
          events: [ev(0), ev(1)],
          failure: failure(),
        }]);
        const handled: string[] = [];
        const m = member(store, handled, 10); // a claim lasts 1 s here
        const w = m.writable.getWriter();
        try {
          const t0 = createOwnership("Pay-0/1");
          await w.write(batchOf("Pay-0/1", t0.ownership, "Order-1"));
          await until("the member reads its tranche", () => handled.length === 1);
          const asked = Date.now();
          await store.request("g", "Pay-X", { action: "release", by: "alice" });
          await until(
            "released",
            async () => (await store.get("g", "Pay-X"))?.state === "released",
            5_000,
          );
          assert.ok(Date.now() - asked >= 1_000, "not before a claim's lease: an owner may come");
          assert.deepEqual(handled, ["Order-1@0", "Pay-X@0", "Pay-X@1"]);
        } finally {
          w.releaseLock();
          await m.stop();
        }
      }),
  });
  Deno.test({
    name: `${kind}: streams another member released stop being parked on this one (stats, health)`,
    ignore: kind === "postgres" && !available,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: () =>
      standby(kind, async (store) => {
        for (let i = 0; i < 5; i++) {
          await store.park("g", [{
            stream: `Pay-${i}`,
            tranche: "Pay-1/2",
            events: [ev(0)],
            failure: failure(),
          }]);
        }
        const a: string[] = [];
        const b: string[] = [];
        const ma = member(store, a, 10);
        const mb = member(store, b, 10);
        const wa = ma.writable.getWriter();
        const wb = mb.writable.getWriter();
        try {
          await wa.write(batchOf("Pay-0/2", createOwnership("Pay-0/2").ownership, "Order-a"));
          await wb.write(batchOf("Pay-1/2", createOwnership("Pay-1/2").ownership, "Order-b"));
          await until("both read their tranche", () => a.length === 1 && b.length === 1);
          assert.equal(ma.stats().parked.streams, 5, "loaded: the group's parked streams");
          for (let i = 0; i < 5; i++) {
            await store.request("g", `Pay-${i}`, { action: "release", by: "alice" });
          }
          await until("released by B", async () => (await store.list("g")).length === 0);
          assert.deepEqual(a, ["Order-a@0"], "A replayed none of them");
          await until(
            "A no longer shows them parked",
            () => ma.stats().parked.streams === 0,
            3_000,
          );
          assert.equal(mb.stats().parked.streams, 0);
        } finally {
          wa.releaseLock();
          wb.releaseLock();
          await ma.stop();
          await mb.stop();
        }
      }),
  });
  Deno.test({
    name:
      `${kind}: an owner with a backlog of releases keeps them: no other member takes one over after a lease`,
    ignore: kind === "postgres" && !available,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: () =>
      standby(kind, async (store) => {
        const streams = Array.from({ length: 48 }, (_, i) => `Pay-${i}`);
        for (const stream of streams) {
          const events = Array.from({ length: 15 }, (_, i) => ev(i));
          await store.park("g", [{ stream, tranche: "Pay-1/2", events, failure: failure() }]);
        }
        const a: string[] = [];
        const b: string[] = [];
        const ma = member(store, a, 10);
        const slow = streamsSink({
          group: "g",
          statsIntervalMs: 0,
          commitIntervalMs: 5,
          maxEventsPerCall: 1,
          handler: async (stream: string, events: readonly StreamEvent[]) => {
            if (stream.startsWith("Pay-")) await new Promise((r) => setTimeout(r, 30));
            b.push(...events.map((e) => `${stream}@${e.index}`));
          },
          failure: { kind: "park", maxAttempts: 1, store, pollMs: 10 },
        });
        const wa = ma.writable.getWriter();
        const wb = slow.writable.getWriter();
        try {
          await wa.write(batchOf("Pay-0/2", createOwnership("Pay-0/2").ownership, "Order-a"));
          await wb.write(batchOf("Pay-1/2", createOwnership("Pay-1/2").ownership, "Order-b"));
          await until("both read their tranche", () => a.length === 1 && b.length === 1);
          const asked = Date.now();
          for (const stream of streams) {
            await store.request("g", stream, { action: "release", by: "alice" });
          }
          await until("all released", async () => (await store.list("g")).length === 0, 30_000);
          assert.ok(Date.now() - asked > 1_500, "the backlog outlasted a claim's lease");
          assert.deepEqual(a, ["Order-a@0"], "A took none of B's releases");
          assert.equal(b.length, 1 + 48 * 15);
        } finally {
          wa.releaseLock();
          wb.releaseLock();
          await ma.stop();
          await slow.stop();
        }
      }),
  });
}

addEventListener("unload", () => pool.end());
