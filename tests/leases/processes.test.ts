// Consumer groups with leases, as real member processes (tests/faults/leases/member.ts) on the real
// MessageDB, short versions of the fault suite (tests/faults/leases.fault.ts): 3 members on 1,000
// streams; a member SIGKILLed mid-run; a member paused past its lease; members joining and
// leaving. From the members' logs of every call's start and end, every acquisition and every
// commit: nothing lost, no stream handled by two members at once, no call started and no commit
// accepted for a slot after another member acquired it, a dead member's slots taken over within
// durationMs + heartbeatMs, the assignment balanced within one slot.
import assert from "node:assert/strict";
import { createCluster, SHORT_TIMING } from "../faults/leases/cluster.ts";
import type { LeaseFigures } from "../faults/leases/analyse.ts";
import { sinkAsksHeld } from "../faults/leases/probe.ts";
import { seededRandom } from "../faults/support/process.ts";
import type { LeaseView } from "../../mod.ts";

const SLOTS = 12;
const T = SHORT_TIMING;
const SEED = Number(Deno.env.get("IMPEL_FAULTS_SEED") ?? Date.now() % 1_000_000);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits until `condition` holds, checking every 10 ms; fails naming `what` after `timeoutMs`. */
async function until(condition: () => Promise<boolean>, timeoutMs: number, what: string) {
  const deadline = performance.now() + timeoutMs;
  while (!(await condition())) {
    if (performance.now() > deadline) throw new Error(`${what}: not after ${timeoutMs} ms`);
    await sleep(10);
  }
}

function assertClean(f: LeaseFigures, what: string) {
  const text = `${what}: ${JSON.stringify(f)}`;
  assert.equal(f.badLines, 0, text);
  assert.equal(f.lost, 0, `nothing lost; ${text}`);
  assert.equal(f.overlaps, 0, `no stream handled by two at once; ${text}`);
  assert.equal(f.staleCommitsAccepted, 0, `no stale commit accepted; ${text}`);
  assert.equal(f.commitsFailed, 0, text);
}

async function balanced(owners: () => Promise<Map<string, number>>, members: number) {
  const deadline = performance.now() + 15_000;
  for (;;) {
    const counts = [...(await owners()).values()];
    const total = counts.reduce((a, b) => a + b, 0);
    if (
      counts.length === members && total === SLOTS && Math.max(...counts) - Math.min(...counts) <= 1
    ) return counts;
    if (performance.now() > deadline) throw new Error(`not balanced: ${counts}`);
    await sleep(100);
  }
}

Deno.test("lease processes: 3 members on 1,000 streams, one member per stream at a time, all handled, balanced", async () => {
  const c = await createCluster({ slots: SLOTS, timing: T });
  try {
    await c.seed(1000, 2);
    await Promise.all(["a", "b", "c"].map((n) => c.spawn(n)));
    await c.awaitHandled(60_000);
    const counts = await balanced(c.owners, 3);
    await c.seed(1000, 1); // once balanced, more for everyone
    await c.awaitHandled(60_000);
    for (const m of c.members) await c.stop(m);
    const f = await c.figures();
    console.log(`balanced ${counts}; ${JSON.stringify(f)}`);
    assertClean(f, "3 members");
    assert.equal(f.startedAfterLoss, 0);
    assert.equal(f.events, 3000);
  } finally {
    await c.close();
  }
});

Deno.test("lease processes: SIGKILL a member mid-run, its slots taken over within durationMs + heartbeatMs, 0 lost, no overlap", async () => {
  // 50 ms calls; the member killed takes 400 ms for each, so that it surely dies with calls in
  // flight: with the burst written slowly under load, 50 ms calls come and go and a kill could
  // land between two (seen twice in 8 runs at a load of 11-14 when it waited for 3 calls in
  // flight in its log, the kill a few ms later).
  const c = await createCluster({ slots: SLOTS, timing: T, handlerMs: 50 });
  const random = seededRandom(SEED);
  try {
    await c.seed(1000, 2);
    const [a] = await Promise.all([c.spawn("a", 400), c.spawn("b"), c.spawn("c")]);
    await balanced(c.owners, 3);
    // Killed while busy with the burst, at a random point of it, with calls in flight seen in
    // its log right before the kill rather than assumed of a sleep. The lease table, on the
    // database's clock, is read just before: the kill comes after `killedAt`.
    const into = Math.floor(random() * 30);
    const burst = c.seed(1000, 4);
    const stopWriting = c.write(1000, random);
    let before: LeaseView;
    await until(
      async () => {
        before = await c.leases();
        const { started, open } = await c.calls(a, 2); // the burst's are from index 2 on
        return started >= into && open >= 4;
      },
      30_000,
      `a into the burst by ${into} calls, 4 in flight`,
    );
    await c.kill(a);
    const killedAt = before!.now;
    const slots = before!.leases.filter((l) => l.owner === "a" && l.expiresAt > killedAt);
    // Every slot of a followed on the database's clock until another member has it: a's last
    // expiry of it (a renewal sent just before the kill may still land) and the next acquisition.
    const lapse = new Map(slots.map((l) => [l.unit, l.expiresAt]));
    const taken = new Map<string, number>();
    const giveUp = performance.now() + 3 * (T.durationMs + T.heartbeatMs);
    while (taken.size < slots.length && performance.now() < giveUp) {
      for (const l of (await c.leases()).leases) {
        if (!lapse.has(l.unit) || taken.has(l.unit)) continue;
        if (l.owner === "a") lapse.set(l.unit, Math.max(lapse.get(l.unit)!, l.expiresAt));
        else if (l.owner !== undefined && l.acquiredAt !== undefined) {
          taken.set(l.unit, l.acquiredAt);
        }
      }
      await sleep(20);
    }
    await burst;
    await balanced(c.owners, 2);
    await stopWriting();
    await c.awaitHandled(60_000);
    for (const m of c.members.slice(1)) await c.stop(m);
    const f = await c.figures();
    const figures = slots.map((l) =>
      `${l.unit}: renewed ${Math.round(killedAt - l.renewedAt!)} ms before the kill, lapsed at +${
        Math.round(lapse.get(l.unit)! - killedAt)
      }, taken at +${Math.round((taken.get(l.unit) ?? Infinity) - killedAt)}`
    );
    console.log(`seed ${SEED}: ${JSON.stringify(f)}\n  ${figures.join("\n  ")}`);
    assertClean(f, "kill");
    assert.equal(f.startedAfterLoss, 0, "no call on a slot after another member acquired it");
    assert.ok(slots.length >= 3, `a held slots when killed: ${slots.map((l) => l.unit)}`);
    assert.ok(
      f.interrupted >= 1,
      "a died with calls in flight, which the new owners did not overlap",
    );
    for (const l of slots) {
      const at = taken.get(l.unit);
      assert.ok(at !== undefined, `${l.unit} taken over: ${figures}`);
      assert.ok(
        at >= lapse.get(l.unit)!,
        `${l.unit} not taken before a's lease lapsed: ${figures}`,
      );
      assert.ok(
        at - killedAt <= T.durationMs + T.heartbeatMs,
        `${l.unit} taken within durationMs + heartbeatMs of the kill: ${figures}`,
      );
    }
  } finally {
    await c.close();
  }
});

// One run serves the two tests of the pause: what the fence guarantees on its own, and what
// needs the sink to ask Ownership.held() before each call.
let pauseRun: Promise<LeaseFigures> | undefined;
function runPause(): Promise<LeaseFigures> {
  pauseRun ??= (async () => {
    // 50 ms calls: the member is paused with calls in flight. It commits only when a tranche is
    // revoked or it stops, and is paused once it has handled all of the first events (so every
    // tranche of its has completed work not committed, whatever the load): the revocation on
    // SIGCONT (the lease lapsed) commits it, and the fence refuses. With commits every 200 ms it
    // could have none: under load (12-15) a tranche's first batch was often not complete yet,
    // or a commit in flight at SIGSTOP (accepted: the lease was still valid when it arrived)
    // covered all there was; no stale commit was tried (pausedCommitsRefused 0, 3 runs in 12).
    const c = await createCluster({ slots: SLOTS, timing: T, handlerMs: 50 });
    const random = seededRandom(SEED + 1);
    try {
      await c.seed(500, 2);
      const [a] = await Promise.all([c.spawn("a", 50, 600_000), c.spawn("b")]);
      await balanced(c.owners, 2);
      await c.awaitHandled(60_000);
      // Paused while busy, so that calls are in flight and batches unfinished: calls of the
      // burst in flight in its log once it has stopped (a sleep alone, or a look at the log
      // before the SIGSTOP, could pause it between two waves of 50 ms calls, frozenCalls 0).
      const burst = c.seed(500, 4);
      const stopWriting = c.write(500, random);
      await sleep(random() * 300);
      await until(async () => (await c.calls(a, 2)).open >= 1, 30_000, "a busy with the burst");
      await c.pause(
        a,
        T.durationMs + 3 * T.heartbeatMs,
        async () => (await c.calls(a, 2)).open >= 1,
      );
      await burst;
      await sleep(1500); // a wakes up, finds its slots gone, and rejoins
      await stopWriting();
      await c.awaitHandled(60_000);
      await balanced(c.owners, 2);
      for (const m of c.members) await c.stop(m);
      const f = await c.figures();
      console.log(`seed ${SEED + 1}: ${JSON.stringify(f)}`);
      return f;
    } finally {
      await c.close();
    }
  })();
  return pauseRun;
}

Deno.test("lease processes: SIGSTOP past the lease, SIGCONT: the paused member's commits are refused, nothing lost", async () => {
  const f = await runPause();
  const text = JSON.stringify(f);
  assert.equal(f.lost, 0, text);
  assert.equal(f.staleCommitsAccepted, 0, text);
  assert.ok(f.pausedCommitsRefused >= 1, `a stale commit was tried and refused: ${text}`);
  assert.ok(f.frozenCalls >= 1, `paused with calls in flight: ${text}`);
});

Deno.test({
  name:
    "lease processes: SIGSTOP past the lease, SIGCONT: the paused member starts no call on a slot it lost, no overlap",
  // Without the sink's check of Ownership.held(), a call whose timer fires before the source's
  // deadline timer on resumption starts one more call per busy stream: shown as ignored.
  ignore: !(await sinkAsksHeld()),
  async fn() {
    const f = await runPause();
    assert.equal(f.startedAfterLoss, 0, JSON.stringify(f));
    assert.equal(f.overlaps, 0, JSON.stringify(f));
  },
});

Deno.test("lease processes: members joining and leaving, 0 lost, 0 overlap, 0 stale commits accepted", async () => {
  const c = await createCluster({ slots: SLOTS, timing: T });
  const random = seededRandom(SEED + 2);
  try {
    await c.seed(500, 2);
    await Promise.all(["a", "b"].map((n) => c.spawn(n)));
    const stopWriting = c.write(500, random);
    for (let i = 0; i < 4; i++) {
      await sleep(500 + random() * 1000);
      const live = c.members.filter((m) => !m.stopped);
      if (i % 2 === 0) await c.spawn();
      else await c.stop(live[Math.floor(random() * live.length)]);
    }
    await stopWriting();
    await c.awaitHandled(60_000);
    await balanced(c.owners, c.members.filter((m) => !m.stopped).length);
    for (const m of c.members.filter((m) => !m.stopped)) await c.stop(m);
    const f = await c.figures();
    console.log(`seed ${SEED + 2}: ${JSON.stringify(f)}`);
    assertClean(f, "churn");
    assert.equal(f.startedAfterLoss, 0);
  } finally {
    await c.close();
  }
});
