// Consumer groups with leases under faults (issue 14): real member processes
// (tests/faults/leases/member.ts: messageDbSource with postgresLeases and fenced postgresCheckpoints,
// a streamsSink whose handler logs each call's start and end) on one category of the real
// MessageDB, 12 slots, 2 s leases, while this process keeps appending. Four runs:
//
//   1. 3 members on 1,000 streams: all handled, balanced within one slot;
//   2. KILLS times a random member is SIGKILLed mid-run and a new one started: its slots taken
//      over within durationMs + heartbeatMs (the median; the slowest within one more heartbeat);
//   3. PAUSES times a member is SIGSTOPped past its lease, then SIGCONTed;
//   4. members join and leave 10 times.
//
// From the logs: events lost, calls overlapping on a stream (a killed call ends at the kill),
// calls started on a slot after another member acquired it, commits accepted after another
// member acquired the slot (stale), commits refused by the fence. Calls frozen in flight by a
// SIGSTOP are counted apart: they end after SIGCONT, while the next owner works, inevitably.
//
//   deno task faults tests/faults/leases.fault.ts                       # ~4 minutes
//   IMPEL_FAULTS_SHORT=1 deno task faults tests/faults/leases.fault.ts  # ~1.5 minutes
//   IMPEL_FAULTS_SEED=123 ...                                           # repeat the delays
import assert from "node:assert/strict";
import { createCluster, SHORT_TIMING } from "./leases/cluster.ts";
import type { LeaseFigures } from "./leases/analyse.ts";
import { sinkAsksHeld } from "./leases/probe.ts";
import { seededRandom } from "./support/process.ts";

const SHORT = Deno.env.get("IMPEL_FAULTS_SHORT") === "1";
const KILLS = SHORT ? 3 : 10;
const PAUSES = SHORT ? 1 : 3;
const SEED = Number(Deno.env.get("IMPEL_FAULTS_SEED") ?? Date.now() % 1_000_000);
const SLOTS = 12;
const T = SHORT_TIMING;
const ASKS_HELD = await sinkAsksHeld();

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function balanced(owners: () => Promise<Map<string, number>>, members: number) {
  const deadline = performance.now() + 30_000;
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

function report(what: string, f: LeaseFigures, extra: Record<string, unknown> = {}) {
  const sorted = [...f.takeoverMs].sort((a, b) => a - b);
  const max = sorted.length ? Math.round(sorted.at(-1)!) : undefined;
  const median = sorted.length ? Math.round(sorted[Math.floor(sorted.length / 2)]) : undefined;
  console.log(
    `${what} (seed ${SEED}): ${
      JSON.stringify({
        ...f,
        takeoverMs: f.takeoverMs.map(Math.round),
        medianTakeoverMs: median,
        maxTakeoverMs: max,
        ...extra,
      })
    }`,
  );
}

function assertClean(f: LeaseFigures) {
  const text = JSON.stringify(f);
  assert.equal(f.badLines, 0, text);
  assert.equal(f.lost, 0, `events lost: ${text}`);
  assert.equal(f.staleCommitsAccepted, 0, `stale commits accepted: ${text}`);
  assert.equal(f.commitsFailed, 0, text);
}

Deno.test(`faults: leases, 3 members on 1,000 streams`, async () => {
  const c = await createCluster({ slots: SLOTS, timing: T });
  try {
    await c.seed(1000, SHORT ? 3 : 10);
    await Promise.all(["a", "b", "c"].map((n) => c.spawn(n)));
    const stopWriting = c.write(1000, seededRandom(SEED));
    await sleep(SHORT ? 3000 : 10_000);
    await stopWriting();
    await c.awaitHandled(120_000);
    const counts = await balanced(c.owners, 3);
    for (const m of c.members) await c.stop(m);
    const f = await c.figures();
    report("3 members", f, { slots: counts });
    assertClean(f);
    assert.equal(f.overlaps, 0);
    assert.equal(f.startedAfterLoss, 0);
  } finally {
    await c.close();
  }
});

Deno.test(`faults: leases, a member SIGKILLed ${KILLS} times`, async () => {
  const c = await createCluster({ slots: SLOTS, timing: T, handlerMs: 50 });
  const random = seededRandom(SEED + 1);
  try {
    await c.seed(1000, 2);
    await Promise.all(["a", "b", "c"].map((n) => c.spawn(n)));
    await balanced(c.owners, 3);
    const stopWriting = c.write(1000, random);
    for (let i = 0; i < KILLS; i++) {
      const live = c.members.filter((m) => m.killedAt === undefined);
      const burst = c.seed(1000, 2); // busy: killed with calls in flight
      await sleep(300 + random() * 500);
      await c.kill(live[Math.floor(random() * live.length)]);
      await burst;
      await balanced(c.owners, 2);
      await c.spawn();
      await balanced(c.owners, 3);
    }
    await stopWriting();
    await c.awaitHandled(120_000);
    for (const m of c.members.filter((m) => m.killedAt === undefined)) await c.stop(m);
    const f = await c.figures();
    report("kills", f);
    assertClean(f);
    assert.equal(f.overlaps, 0, "no call overlapped a dead member's last calls");
    assert.equal(f.startedAfterLoss, 0);
    assert.ok(f.interrupted >= 1, "members died with calls in flight");
    // By design within durationMs + heartbeatMs of the death; each one's timers and queries lag
    // on a loaded machine (100 ms and more at a load of 10 on 2 cores), so the median must keep
    // to the bound and the slowest gets one heartbeat more.
    const sorted = [...f.takeoverMs].sort((a, b) => a - b);
    const median = sorted[Math.floor(sorted.length / 2)];
    assert.ok(median <= T.durationMs + T.heartbeatMs, `median takeover ${median} ms`);
    assert.ok(sorted.at(-1)! <= T.durationMs + 2 * T.heartbeatMs, `takeover ${sorted.at(-1)} ms`);
  } finally {
    await c.close();
  }
});

Deno.test(`faults: leases, a member SIGSTOPped past its lease ${PAUSES} times`, async () => {
  const c = await createCluster({ slots: SLOTS, timing: T, handlerMs: 50 });
  const random = seededRandom(SEED + 2);
  try {
    await c.seed(500, 2);
    await Promise.all(["a", "b", "c"].map((n) => c.spawn(n)));
    await balanced(c.owners, 3);
    const stopWriting = c.write(500, random);
    // A member is paused once: the figures of paused members are kept apart per member.
    for (let i = 0; i < PAUSES; i++) {
      const m = c.members[i % c.members.length];
      const burst = c.seed(500, 3); // busy: paused with calls in flight
      await sleep(300 + random() * 300);
      await c.pause(m, T.durationMs + (1 + random() * 3) * T.heartbeatMs);
      await burst;
      await balanced(c.owners, 3);
    }
    await stopWriting();
    await c.awaitHandled(120_000);
    for (const m of c.members) await c.stop(m);
    const f = await c.figures();
    report("pauses", f, { sinkAsksHeld: ASKS_HELD });
    assertClean(f);
    assert.ok(f.pausedCommitsRefused >= 1, "stale commits were tried and refused");
    assert.ok(f.frozenCalls >= 1, "paused with calls in flight");
    if (ASKS_HELD) {
      assert.equal(f.startedAfterLoss, 0, "no call started on a lost slot after SIGCONT");
      assert.equal(f.overlaps, 0);
    } else {
      console.warn(
        "the sink does not ask Ownership.held(): calls started after SIGCONT on lost slots " +
          `(${f.startedAfterLoss}) and overlaps (${f.overlaps}) are reported, not asserted`,
      );
    }
  } finally {
    await c.close();
  }
});

Deno.test("faults: leases, members joining and leaving 10 times", async () => {
  const c = await createCluster({ slots: SLOTS, timing: T });
  const random = seededRandom(SEED + 3);
  try {
    await c.seed(1000, 2);
    await Promise.all(["a", "b"].map((n) => c.spawn(n)));
    const stopWriting = c.write(1000, random);
    for (let i = 0; i < 10; i++) {
      await sleep((SHORT ? 300 : 1000) + random() * 1500);
      const live = c.members.filter((m) => !m.stopped);
      if (live.length <= 1 || (live.length < 4 && random() < 0.5)) await c.spawn();
      else await c.stop(live[Math.floor(random() * live.length)]);
    }
    await stopWriting();
    await c.awaitHandled(120_000);
    const live = c.members.filter((m) => !m.stopped);
    const counts = await balanced(c.owners, live.length);
    for (const m of live) await c.stop(m);
    const f = await c.figures();
    report("joins and leaves", f, { members: c.members.length, slots: counts });
    assertClean(f);
    assert.equal(f.overlaps, 0);
    assert.equal(f.startedAfterLoss, 0);
  } finally {
    await c.close();
  }
});
