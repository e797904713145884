// The defects the review of issue 14 found, each against the memory store and the real
// PostgreSQL one: a slow store call holding up renewals and deadlines, a revocation that
// abandoned calls releasing its lease, timing that breaks handoverMs ≥ 2 × stopTimeoutMs or a
// timer's limit, members with other units, acquisitions that always fail.
import assert from "node:assert/strict";
import {
  checkLeaseTiming,
  createLeaseMember,
  InvalidArgumentError,
  type LeaseMember,
  type LeaseMemberOptions,
  type LeaseStore,
  LeaseTimingError,
  run,
  streamsSink,
  unitsFingerprint,
} from "../../mod.ts";
import { memoryCheckpoints } from "../../checkpoints/memory.ts";
import { initPostgresCheckpoints, postgresCheckpoints } from "../../checkpoints/postgres.ts";
import { memoryLeases } from "../../leases/memory.ts";
import { initPostgresLeases, postgresLeases } from "../../leases/postgres.ts";
import { messageDbSource } from "../../sources/messagedb.ts";
import { seed, unique, withSchema } from "../support/postgres.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const never = <T>() => new Promise<T>(() => {});

/** Each test runs on a fresh memory store and on a fresh PostgreSQL lease table. */
const STORES: Array<[string, (fn: (store: LeaseStore) => Promise<void>) => Promise<void>]> = [
  ["memory", (fn) => fn(memoryLeases())],
  ["postgres", (fn) =>
    withSchema(async (pool, schema) => {
      await initPostgresLeases(pool, { schema });
      await fn(postgresLeases(pool, { schema }));
    })],
];

/** What a deliberately faulty store does instead of a call: hang, fail, or pass it on. */
type Fault = "hang" | "fail" | undefined;

/** `store` with faults injected per call (the only fake here: the faults are the point). */
function faulty(
  store: LeaseStore,
  faults: { acquire?: (unit: string) => Fault; heartbeat?: (n: number) => Fault },
): LeaseStore & { heartbeats: number } {
  const wrapped = {
    ...store,
    heartbeats: 0,
    heartbeat(...args: Parameters<LeaseStore["heartbeat"]>) {
      wrapped.heartbeats++;
      const fault = faults.heartbeat?.(wrapped.heartbeats);
      if (fault === "hang") return never<never>();
      if (fault === "fail") return Promise.reject(new Error("heartbeat refused"));
      return store.heartbeat(...args);
    },
    acquire(...args: Parameters<LeaseStore["acquire"]>) {
      const fault = faults.acquire?.(args[1]);
      if (fault === "hang") return never<never>();
      if (fault === "fail") return Promise.reject(new Error("acquire refused"));
      return store.acquire(...args);
    },
  };
  return wrapped;
}

const T = { durationMs: 600, heartbeatMs: 100, handoverMs: 300 };

function member(store: LeaseStore, extra: Partial<LeaseMemberOptions> = {}): LeaseMember {
  return createLeaseMember({
    store,
    scope: "g",
    units: ["u0", "u1"],
    member: "a",
    ...T,
    onAcquired() {},
    onRevoked: () => Promise.resolve(),
    ...extra,
  });
}

for (const [name, withStore] of STORES) {
  Deno.test(`lease review (${name}): a hung acquisition does not stop the renewals of other leases`, () =>
    withStore(async (base) => {
      const store = faulty(base, { acquire: (unit) => unit === "u1" ? "hang" : undefined });
      const m = member(store);
      const running = m.start();
      try {
        await sleep(4 * T.durationMs);
        assert.equal(m.snapshot().lost, 0, "u0 renewed all along");
        assert.ok(m.holds("u0"));
        assert.ok(store.heartbeats >= 10, `${store.heartbeats} heartbeats in 2.4 s`);
        assert.ok(m.snapshot().acquireFailures > 0, "the hung acquisitions count as failed");
      } finally {
        await m.stop();
        await running;
      }
    }));

  Deno.test(`lease review (${name}): a lease is revoked at its own deadline while another acquisition hangs`, () =>
    withStore(async (base) => {
      // The first heartbeat plans; then the store stops answering heartbeats and u1's acquisition.
      const store = faulty(base, {
        acquire: (unit) => unit === "u1" ? "hang" : undefined,
        heartbeat: (n) => n > 1 ? "hang" : undefined,
      });
      let acquiredAt = 0, revokedAt = 0;
      const m = member(store, {
        onAcquired: () => void (acquiredAt = performance.now()),
        onRevoked: () => (revokedAt = performance.now(), Promise.resolve()),
      });
      const running = m.start();
      try {
        await sleep(T.durationMs + 200);
        assert.ok(acquiredAt > 0 && revokedAt > 0, "acquired, then revoked");
        const after = revokedAt - acquiredAt;
        assert.ok(
          after <= T.durationMs - T.handoverMs + 100,
          `revoked ${Math.round(after)} ms after it was taken (deadline ${
            T.durationMs - T.handoverMs
          } ms)`,
        );
      } finally {
        await m.stop();
        await running;
      }
    }));

  Deno.test(`lease review (${name}): a revocation that abandoned calls keeps the lease until it expires`, () =>
    withStore(async (store) => {
      const a = member(store, { onRevoked: () => Promise.resolve({ abandoned: 1 }) });
      const b = member(store, { member: "b" });
      await a.tick();
      assert.equal(a.snapshot().held.length, 2);
      const stoppedAt = performance.now();
      await a.stop();
      assert.equal(a.snapshot().kept, 2);
      assert.equal(a.snapshot().released, 2, "let go of, though not released in the store");
      await b.tick();
      const early = performance.now() - stoppedAt;
      if (early < T.durationMs - 100) {
        assert.equal(b.snapshot().held.length, 0, `taken ${Math.round(early)} ms after the stop`);
        const [view] = await store.list("g");
        assert.ok(view.leases.every((l) => l.owner === "a" && l.expiresAt > view.now));
      }
      await sleep(T.durationMs + 50);
      await b.tick();
      assert.equal(b.snapshot().held.length, 2, "expired: taken");
      await b.stop();
    }));

  Deno.test(`lease review (${name}): a hand-over whose calls were abandoned renews the lease until they end`, () =>
    withStore(async (store) => {
      const ended = Promise.withResolvers<void>();
      const a = member(store, {
        onRevoked: () => Promise.resolve({ abandoned: 1, settled: ended.promise }),
      });
      const b = member(store, { member: "b" });
      const runningA = a.start();
      let runningB: Promise<void> | undefined;
      try {
        await until("a holds both", 5_000, () => a.snapshot().held.length === 2);
        runningB = b.start();
        await until("a gives one up", 5_000, () => a.snapshot().kept === 1);
        assert.ok(a.problems().some((p) => /still run past their revocation/.test(p.reason)));
        // Left to expire, the lease would lapse within durationMs: three of them pass.
        await sleep(3 * T.durationMs);
        assert.equal(b.snapshot().held.length, 0, "b does not start while the calls run");
        assert.equal(a.snapshot().held.length, 2, "a still renews the one it lets go of");
        assert.equal(a.snapshot().lost, 0);
        ended.resolve();
        await until("b takes it once they ended", 5_000, () => b.snapshot().held.length === 1);
        assert.equal(a.snapshot().held.length, 1);
        assert.ok(!a.problems().some((p) => /past their revocation/.test(p.reason)));
      } finally {
        ended.resolve();
        await Promise.all([a.stop(), b.stop()]);
        await Promise.all([runningA, runningB]);
      }
    }));

  Deno.test(`lease review (${name}): with default timing one failed or hung heartbeat loses nothing, and is retried soon`, () =>
    withStore(async (base) => {
      for (const fault of ["fail", "hang"] as const) {
        const at: number[] = [];
        const store = faulty(base, {
          heartbeat: (n) => (at.push(performance.now()), n === 3 ? fault : undefined),
        });
        // heartbeatMs defaults to (durationMs − handoverMs) / 3 = 166 here.
        const m = member(store, {
          member: `a-${fault}`,
          durationMs: 1500,
          heartbeatMs: undefined,
          handoverMs: undefined,
          stopTimeoutMs: 500,
        });
        assert.equal(m.snapshot().heartbeatMs, 166);
        const running = m.start();
        try {
          await sleep(1300);
          assert.equal(m.snapshot().lost, 0, `${fault}: nothing lost`);
          assert.ok(m.holds("u0") && m.holds("u1"), fault);
          // The beat after the failed one: at once after a hang's bound (250 ms), a quarter
          // heartbeat after a failure.
          const gap = at[3] - at[2];
          const expected = fault === "fail" ? 41 : 250;
          assert.ok(gap < expected + 40, `${fault}: retried ${Math.round(gap)} ms after`);
        } finally {
          await m.stop();
          await running;
        }
      }
    }));

  Deno.test(`lease review (${name}): a live member with other units is left out of the shares, loudly`, () =>
    withStore(async (store) => {
      // b advertises three units of its own and holds none of a's: a must not leave half of
      // its units to it.
      const other = unitsFingerprint(["Order-0/3", "Order-1/3", "Order-2/3"]);
      await store.heartbeat("g", "b", 60_000, [], other);
      const [view] = await store.list("g");
      assert.equal(view.members.find((m) => m.member === "b")?.units, other, "stored");
      const units = ["u0", "u1", "u2", "u3", "u4", "u5"];
      const a = member(store, { units });
      await a.tick();
      assert.equal(a.snapshot().held.length, 6, "every unit owned");
      assert.deepEqual(a.snapshot().mismatched, ["b"]);
      assert.equal(a.snapshot().unowned, 0);
      const problem = a.problems().find((p) => p.reason.includes("other units"));
      assert.equal(problem?.severity, "failing");
      assert.match(problem!.reason, /b \(3 units\).*a has 6/);
      await a.stop();
    }));

  Deno.test(`lease review (${name}): acquisitions that always fail are counted, logged and failing`, () =>
    withStore(async (base) => {
      const store = faulty(base, { acquire: () => "fail" });
      let clock = 0;
      const m = member(store, { now: () => clock });
      await m.tick();
      clock += T.heartbeatMs;
      const first = m.problems().find((p) => p.reason.includes("acquisitions"));
      assert.equal(first?.severity, "degraded", "two failed: not failing yet");
      for (let i = 0; i < 2; i++) {
        await m.tick();
        clock += T.heartbeatMs;
      }
      const s = m.snapshot();
      assert.equal(s.acquireFailures, 6, "each unit tried once per heartbeat");
      assert.equal(s.failedAcquisitions, 6);
      assert.equal(s.unowned, 2);
      const failing = m.problems().find((p) => p.reason.includes("acquisitions"));
      assert.equal(failing?.severity, "failing");
      assert.match(failing!.reason, /6 in a row.*acquire refused/);
      assert.ok(!m.problems().some((p) => p.reason.includes("holds no lease")), "not yet");
      clock += T.durationMs;
      await m.tick();
      const idle = m.problems().find((p) => p.reason.includes("holds no lease"));
      assert.equal(idle?.severity, "failing");
      assert.match(idle!.reason, /2 of its 2 units are unowned/);
      await m.stop();
    }));

  Deno.test(`lease review (${name}): durations of 2^31 ms or more are refused by the store`, () =>
    withStore(async (store) => {
      await assert.rejects(
        async () => await store.acquire("g", "u", "a", 2 ** 31),
        (e) => e instanceof InvalidArgumentError && e.field === "durationMs",
      );
      await assert.rejects(
        async () => await store.heartbeat("g", "a", 2 ** 31, []),
        (e) => e instanceof InvalidArgumentError && e.field === "durationMs",
      );
    }));
}

Deno.test("lease review: defaults satisfy handoverMs ≥ 2 × stopTimeoutMs; less is a LeaseTimingError", () => {
  assert.deepEqual(checkLeaseTiming({ stopTimeoutMs: 10_000 }), {
    durationMs: 30_000,
    heartbeatMs: 3_333,
    handoverMs: 20_000,
    stopTimeoutMs: 10_000,
  });
  assert.deepEqual(checkLeaseTiming({ durationMs: 10_000, stopTimeoutMs: 2_000 }), {
    durationMs: 10_000,
    heartbeatMs: 1_666,
    handoverMs: 5_000,
    stopTimeoutMs: 2_000,
  });
  assert.throws(
    () => checkLeaseTiming({ durationMs: 10_000, handoverMs: 5_000, stopTimeoutMs: 10_000 }),
    (e) =>
      e instanceof LeaseTimingError && e.field === "handoverMs" && e.handoverMs === 5_000 &&
      e.stopTimeoutMs === 10_000 && /5000 ms.*stopTimeoutMs \(10000 ms\)/.test(e.message),
  );
  // heartbeatMs ≤ (durationMs − handoverMs) / 3: 333 here; (d − h) / 2 is refused.
  assert.throws(
    () => checkLeaseTiming({ durationMs: 3_000, handoverMs: 2_000, heartbeatMs: 500 }),
    (e) => e instanceof InvalidArgumentError && e.field === "heartbeatMs" && /333/.test(e.message),
  );
  assert.equal(checkLeaseTiming({ durationMs: 3_000, handoverMs: 2_000 }).heartbeatMs, 333);
  assert.throws(
    () => member(memoryLeases(), { durationMs: 2_000, handoverMs: 700, stopTimeoutMs: 400 }),
    (e) => e instanceof LeaseTimingError && e.handoverMs === 700 && e.stopTimeoutMs === 400,
  );
});

Deno.test("lease review: messageDbSource checks lease timing against the sink's stopTimeoutMs", () => {
  const fake = { query: () => Promise.resolve({ rows: [] }) };
  const store = memoryLeases();
  const make = (leases: Record<string, unknown>) =>
    messageDbSource({
      client: fake,
      categories: ["Order"],
      group: "g",
      checkpoints: memoryCheckpoints({ leases: store }),
      leases: { store, ...leases },
    });
  // The defaults leave room for the sink's default stopTimeoutMs (10 s).
  void make({}).cancel();
  void make({ durationMs: 2_000, handoverMs: 1_000, stopTimeoutMs: 400 }).cancel();
  assert.throws(
    () => make({ durationMs: 10_000, handoverMs: 5_000 }),
    (e) =>
      e instanceof LeaseTimingError && e.field === "leases.handoverMs" &&
      e.handoverMs === 5_000 && e.stopTimeoutMs === 10_000,
  );
  assert.throws(
    () => make({ durationMs: 10_000 }),
    (e) => e instanceof InvalidArgumentError && e.field === "leases.durationMs",
  );
  for (
    const [leases, field] of [
      [{ durationMs: 2 ** 31 }, "leases.durationMs"],
      [{ stopTimeoutMs: 2 ** 31 }, "leases.stopTimeoutMs"],
      [{ durationMs: 2 ** 31 + 5, handoverMs: 2 ** 31 }, "leases.durationMs"],
    ] as const
  ) {
    assert.throws(
      () => make(leases),
      (e) => e instanceof InvalidArgumentError && e.field === field,
      field,
    );
  }
});

Deno.test("lease review: a member refuses durations of 2^31 ms or more, naming the option", () => {
  for (
    const [options, field] of [
      [{ durationMs: 2 ** 31 }, "durationMs"],
      [{ stopTimeoutMs: 2 ** 31 }, "stopTimeoutMs"],
      [{ durationMs: 2 ** 32, handoverMs: 2 ** 31 }, "durationMs"],
    ] as const
  ) {
    assert.throws(
      () => member(memoryLeases(), { durationMs: undefined, ...options }),
      (e) => e instanceof InvalidArgumentError && e.field === field,
      field,
    );
  }
});

Deno.test("lease review (postgres): a MessageDB slot whose revocation abandoned calls keeps its lease, renewed, until they end", () =>
  withSchema(async (pool, schema) => {
    await initPostgresCheckpoints(pool, { schema });
    await initPostgresLeases(pool, { schema });
    const category = unique("LeaseKept");
    await seed(pool, category, 20, 1);
    const store = postgresLeases(pool, { schema });
    const timing = { durationMs: 1500, heartbeatMs: 250, handoverMs: 700, stopTimeoutMs: 300 };
    let hanging = 0;
    const release = Promise.withResolvers<void>();
    const start = (name: string, handler: () => Promise<void> | void) => {
      const stop = new AbortController();
      const source = messageDbSource({
        client: pool,
        categories: [category],
        group: "g",
        checkpoints: postgresCheckpoints(pool, { schema, leases: { schema } }),
        leases: { store, slots: 2, member: name, ...timing },
        tailSleepMs: 50,
        signal: stop.signal,
      });
      const sink = streamsSink({ group: "g", handler, statsIntervalMs: 0, stopTimeoutMs: 300 });
      return { source, stop, running: run(source, sink, { signal: stop.signal }) };
    };
    // a's calls never end, whatever their signal says: a revocation must give up on them.
    const a = start("a", () => (hanging++, release.promise));
    let b: ReturnType<typeof start> | undefined;
    let bCalls = 0;
    try {
      await until(
        "a busy on both slots",
        10_000,
        () => a.source.leases()!.held.length === 2 && hanging >= 2,
      );
      b = start("b", () => void bCalls++);
      await until("a hand-over given up on", 10_000, () => a.source.leases()!.kept === 1);
      assert.ok(
        a.source.problems!().some((p) => /still run past their revocation/.test(p.reason)),
        "a says its abandoned calls still run",
      );
      // Past two lease durations the handed-over slot would have lapsed had a stopped renewing.
      await sleep(2 * timing.durationMs + 200);
      const [view] = await store.list("messagedb/g");
      const kept = view.leases.filter((l) => l.owner === "a" && l.expiresAt > view.now);
      assert.equal(kept.length, 2, "the slot handed over is still a's in the table, renewed");
      assert.equal(b.source.leases()!.held.length, 0, "b waits while a's calls run");
      assert.equal(bCalls, 0, "b started nothing");
      release.resolve(); // a's calls end: a releases the slot
      await until(
        "b takes it once a's calls ended",
        10_000,
        () => b!.source.leases()!.held.length === 1,
      );
      assert.ok(a.source.leases()!.held.length === 1);
      assert.ok(!a.source.problems!().some((p) => /past their revocation/.test(p.reason)));
    } finally {
      release.resolve();
      a.stop.abort();
      b?.stop.abort();
      await Promise.all([a.running, b?.running].map((r) => r?.catch(() => {})));
      await Promise.all([a.source.released, b?.source.released]);
    }
  }));

async function until(what: string, ms: number, ok: () => boolean): Promise<void> {
  const deadline = performance.now() + ms;
  while (!ok()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
