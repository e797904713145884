// Two Cosmos source instances of one consumer group sharing the container's feed ranges through
// Cosmos leases (leases and checkpoints in one container, commits fenced), against the local
// server, which has a single feed range: one member holds it and catches up, the other holds
// nothing; no range is held by both at once; after a clean stop, and after the holder's lease
// lapses (its lease store failing on purpose), the other takes it over and resumes from the
// holder's checkpoint instead of the beginning. Balance over several ranges needs an account
// with several physical partitions: cosmos_tailing.test.ts.
import assert from "node:assert/strict";
import type { LeaseStore } from "../../core/lease.ts";
import { run, streamsSink } from "../../core/sink.ts";
import { cosmosCheckpoints } from "../../checkpoints/cosmos.ts";
import { cosmosLeases } from "../../leases/cosmos.ts";
import { cosmosStore } from "../../stores/cosmos.ts";
import { cosmosSource } from "../../sources/cosmos.ts";
import { freshContainer, opts, seed } from "../support/cosmos.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const timing = { durationMs: 3_000, heartbeatMs: 300, handoverMs: 1_200, stopTimeoutMs: 500 };

/** A member: a leased source into a recording sink. */
function member(
  name: string,
  container: Parameters<typeof cosmosSource>[0]["container"],
  store: LeaseStore,
  checkpoints: ReturnType<typeof cosmosCheckpoints>,
  handled: string[],
) {
  const ac = new AbortController();
  const source = cosmosSource({
    container,
    group: "g",
    checkpoints,
    pageSize: 10_000,
    leases: { store, member: name, ...timing },
    signal: ac.signal,
  });
  const sink = streamsSink({
    group: "g",
    statsIntervalMs: 0,
    commitIntervalMs: 50,
    stopTimeoutMs: timing.stopTimeoutMs,
    handler: (stream, events) =>
      void handled.push(...events.map((e) => `${name}:${stream}@${e.index}`)),
  });
  const running = run(source, sink, { signal: ac.signal });
  return {
    source,
    sink,
    held: () => source.leases()?.held.map((h) => h.unit) ?? [],
    async stop() {
      ac.abort();
      await running;
      await source.released;
    },
  };
}

async function until(what: string, ok: () => boolean, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await sleep(50);
  }
}

Deno.test({
  name:
    "cosmos source with leases: one holder at a time; takeovers after a clean stop and after a lapse resume from the checkpoint",
  ...opts,
  async fn() {
    await using t = await freshContainer("source");
    await using aux = await freshContainer("aux");
    await seed(cosmosStore(t.container), 100, 20, 4);
    const leases = cosmosLeases(aux.container);
    const checkpoints = cosmosCheckpoints(aux.container);
    const handled: string[] = [];
    // Every 50 ms: no range held by both members.
    let both = 0;
    const members: Array<ReturnType<typeof member>> = [];
    const watch = setInterval(() => {
      const holders = members.filter((m) => m.held().length > 0);
      if (holders.length > 1) both++;
    }, 50);
    try {
      const a = member("a", t.container, leases, checkpoints, handled);
      members.push(a);
      await until("a holds the range", () => a.held().length === 1);
      await a.sink.monitor.awaitCompletion({ tail: true, timeoutMs: 30_000 });
      assert.equal(handled.length, 2_000);
      assert.ok(handled.every((h) => h.startsWith("a:")));
      const b = member("b", t.container, leases, checkpoints, handled);
      members.push(b);
      await sleep(1_000); // several heartbeats: b finds the range held
      assert.deepEqual(b.held(), []);
      assert.equal(b.source.leases()?.members.length, 2, "b sees both members");
      // A clean stop releases the range: b takes it at once and resumes from a's checkpoint.
      await a.stop();
      members.splice(members.indexOf(a), 1);
      await until("b holds the range", () => b.held().length === 1, 5_000);
      await b.sink.monitor.awaitCompletion({ tail: true, timeoutMs: 30_000 });
      assert.equal(handled.length, 2_000, "b read nothing again");
      const [saved] = await checkpoints.list(`cosmos:${t.id}`, "g");
      assert.equal(saved.position, 600n);

      // A lapse: c joins, b's lease store starts failing (renewals and release refused), b lets go
      // before the lease lapses and c takes the range once it has.
      let broken = false;
      const failing = (store: LeaseStore): LeaseStore => ({
        ...store,
        heartbeat: (...a) => broken ? Promise.reject(new Error("cut off")) : store.heartbeat(...a),
        release: (...a) => broken ? Promise.reject(new Error("cut off")) : store.release(...a),
        acquire: (...a) => broken ? Promise.reject(new Error("cut off")) : store.acquire(...a),
        leave: (...a) => broken ? Promise.reject(new Error("cut off")) : store.leave(...a),
      });
      await b.stop();
      members.splice(members.indexOf(b), 1);
      const handledB: string[] = [];
      const b2 = member(
        "b2",
        t.container,
        failing(cosmosLeases(aux.container)),
        checkpoints,
        handledB,
      );
      members.push(b2);
      await until("b2 holds the range", () => b2.held().length === 1, 10_000);
      const c = member("c", t.container, leases, checkpoints, handled);
      members.push(c);
      await sleep(500);
      const cutAt = Date.now();
      broken = true;
      await until("b2 let go", () => b2.held().length === 0, 10_000);
      assert.ok(Date.now() - cutAt < timing.durationMs, "let go before the lease lapsed");
      await until("c holds the range", () => c.held().length === 1, 10_000);
      assert.ok(Date.now() - cutAt >= timing.durationMs - 400, "taken only once lapsed");
      await c.sink.monitor.awaitCompletion({ tail: true, timeoutMs: 30_000 });
      assert.equal(handled.length + handledB.length, 2_000, "nothing read twice");
      assert.equal((await checkpoints.list(`cosmos:${t.id}`, "g"))[0].position, 600n);
      await c.stop();
      members.splice(members.indexOf(c), 1);
      await b2.stop().catch(() => {});
      members.splice(members.indexOf(b2), 1);
      assert.equal(both, 0, "never held by two members at once");
    } finally {
      clearInterval(watch);
      await Promise.all(members.map((m) => m.stop().catch(() => {})));
    }
  },
});
