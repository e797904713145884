// Scale-out with leases (issue 14): real member processes (tests/faults/leases/member.ts:
// messageDbSource with postgresLeases and fenced postgresCheckpoints, a streamsSink of 16
// concurrent streams whose handler waits 10 ms per call, an I/O-bound handler) share one
// category of 12 slots. For 1, 2 and 3 members in the same run, each on a fresh category
// pre-filled with single-event streams: the steady throughput once the slots are balanced (events
// handled between the balance and the last call, from the members' call logs), in alternating
// rounds so that the load of a shared machine weighs on every configuration. Then, with 3
// members busy, one is SIGKILLed: how long until every one of its slots is owned again, and
// the throughput of the two survivors meanwhile.
//
//   deno run --allow-all bench/scaleout.ts [--streams 12000] [--rounds 3]
//
// Uses the test database (IMPEL_PG_URL, default postgres://postgres@127.0.0.1:5432/impel_test),
// in fresh schemas and categories that are dropped afterwards.
import { createCluster, type Timing } from "../tests/faults/leases/cluster.ts";

const args = new Map<string, string>();
for (let k = 0; k < Deno.args.length; k += 2) {
  args.set(Deno.args[k].replace(/^--/, ""), Deno.args[k + 1]);
}
const streams = Number(args.get("streams") ?? 12_000);
const rounds = Number(args.get("rounds") ?? 3);
const TIMING: Timing = { durationMs: 2000, heartbeatMs: 300, handoverMs: 1000 };
const SLOTS = 12;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const epoch = () => performance.timeOrigin + performance.now();

/** Ends of calls from the member logs: time and events. */
async function ends(paths: readonly string[]): Promise<Array<{ at: number; events: number }>> {
  const out: Array<{ at: number; events: number }> = [];
  for (const path of paths) {
    for (const line of (await Deno.readTextFile(path)).split("\n")) {
      if (!line.startsWith("end\t")) continue;
      const f = line.split("\t");
      out.push({ at: Number(f[4]), events: Number(f[3]) - Number(f[2]) });
    }
  }
  return out.sort((a, b) => a.at - b.at);
}

async function balancedAt(owners: () => Promise<Map<string, number>>, members: number) {
  for (;;) {
    const counts = [...(await owners()).values()];
    if (
      counts.length === members && counts.reduce((a, b) => a + b, 0) === SLOTS &&
      Math.max(...counts) - Math.min(...counts) <= 1
    ) return epoch();
    await sleep(20);
  }
}

/** Steady events/s of `members` members over a backlog of single-event streams. */
async function throughput(members: number): Promise<{ rate: number; events: number }> {
  const c = await createCluster({ slots: SLOTS, timing: TIMING, handlerMs: 10 });
  try {
    await c.seed(streams, 1);
    await Promise.all(Array.from({ length: members }, (_, i) => c.spawn(`m${i}`)));
    const from = await balancedAt(c.owners, members);
    await c.awaitHandled(600_000);
    const calls = (await ends(c.members.map((m) => m.log))).filter((e) => e.at >= from);
    const events = calls.reduce((a, e) => a + e.events, 0);
    const rate = events / ((calls[calls.length - 1].at - from) / 1000);
    for (const m of c.members) await c.stop(m);
    return { rate, events };
  } finally {
    await c.close();
  }
}

/** 3 busy members, one killed: ms until its slots are owned again, survivors' rate meanwhile. */
async function rebalance() {
  const c = await createCluster({ slots: SLOTS, timing: TIMING, handlerMs: 10 });
  try {
    await c.seed(streams, 1);
    await Promise.all(["a", "b", "c"].map((n) => c.spawn(n)));
    await balancedAt(c.owners, 3);
    await sleep(1000);
    const victim = c.members[0];
    await c.kill(victim);
    const back = await balancedAt(c.owners, 2);
    await c.awaitHandled(600_000);
    const f = await c.figures();
    const calls = (await ends(c.members.slice(1).map((m) => m.log)))
      .filter((e) => e.at > victim.killedAt! && e.at <= back);
    const during = calls.reduce((a, e) => a + e.events, 0) / ((back - victim.killedAt!) / 1000);
    for (const m of c.members.slice(1)) await c.stop(m);
    return {
      rebalancedMs: back - victim.killedAt!,
      maxTakeoverMs: Math.max(...f.takeoverMs),
      survivorsRate: during,
      lost: f.lost,
      overlaps: f.overlaps,
    };
  } finally {
    await c.close();
  }
}

const fmt = (n: number) => Math.round(n).toLocaleString("en-US");
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const load = async () => (await Deno.readTextFile("/proc/loadavg").catch(() => "? ")).split(" ")[0];
console.log(
  `scale-out: ${fmt(streams)} single-event streams, 12 slots, 10 ms per call, 16 streams at ` +
    `once per member, leases ${TIMING.durationMs}/${TIMING.heartbeatMs}/${TIMING.handoverMs} ms, ` +
    `${rounds} rounds of 1, 2, 3 members in turn`,
);
const rates = new Map<number, number[]>([[1, []], [2, []], [3, []]]);
for (let round = 1; round <= rounds; round++) {
  for (const members of [1, 2, 3]) {
    const { rate, events } = await throughput(members);
    rates.get(members)!.push(rate);
    console.log(
      `round ${round}: ${members} member${members > 1 ? "s" : ""}: ${fmt(rate)} events/s ` +
        `(${fmt(events)} events after the balance; load average ${await load()})`,
    );
  }
}
const one = median(rates.get(1)!);
for (const members of [2, 3]) {
  // Each round's ratio to the same round's single member, so that the machine's load of the
  // moment weighs on both sides.
  const ratios = rates.get(members)!.map((r, i) => r / rates.get(1)![i]);
  console.log(
    `${members} members: median ${fmt(median(rates.get(members)!))} events/s vs ${fmt(one)}; ` +
      `per-round ratios ${ratios.map((x) => x.toFixed(2)).join(", ")}, median ${
        median(ratios).toFixed(2)
      }x`,
  );
}
const r = await rebalance();
console.log(
  `SIGKILL 1 of 3: slots owned again after ${fmt(r.rebalancedMs)} ms ` +
    `(max takeover ${fmt(r.maxTakeoverMs)} ms), survivors meanwhile ${fmt(r.survivorsRate)} ` +
    `events/s; lost ${r.lost}, overlaps ${r.overlaps}`,
);
