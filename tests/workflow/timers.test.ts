// Durable timers and the manual clock on the memory store: due times, restarts, failures,
// batching of shard appends, snapshots, bad input.
import assert from "node:assert/strict";
import { ImpelError, InvalidArgumentError } from "../../core/errors.ts";
import type { EventData, EventStore } from "../../core/store.ts";
import { type DurableTimer, durableTimers, manualClock } from "../../core/workflow.ts";
import { createMemoryStore } from "../../sources/memory.ts";

const timer = (n: number, due: number): DurableTimer => ({
  id: `t${n}`,
  due,
  stream: `Order-${n}`,
});

Deno.test("manual clock: sleepers wake when the clock reaches them, or on abort", async () => {
  const clock = manualClock(100);
  const woken: number[] = [];
  const a = clock.sleep(50).then(() => woken.push(clock.now()));
  const ac = new AbortController();
  const b = clock.sleep(1_000, ac.signal).then(() => woken.push(-1));
  clock.advance(49);
  await Promise.resolve();
  assert.deepEqual(woken, []);
  clock.set(150);
  await a;
  ac.abort();
  await b;
  assert.deepEqual(woken, [150, -1]);
  assert.throws(() => clock.set(10), InvalidArgumentError);
  assert.throws(() => clock.advance(-1), InvalidArgumentError);
});

Deno.test("timers: fire when due, in due order, and not before", async () => {
  const clock = manualClock(0);
  const fired: string[] = [];
  const timers = durableTimers({
    store: createMemoryStore(),
    category: "T",
    clock,
    fire: (t) => void fired.push(t.id),
  });
  await Promise.all([timer(1, 300), timer(2, 100), timer(3, 200)].map((t) => timers.schedule(t)));
  await timers.idle();
  assert.deepEqual(fired, []);
  clock.advance(199);
  await timers.idle();
  assert.deepEqual(fired, ["t2"]);
  clock.advance(1_000);
  await timers.idle();
  assert.deepEqual(fired, ["t2", "t3", "t1"]);
  assert.deepEqual(
    [timers.stats().pending, timers.stats().fired, timers.stats().nextDue],
    [0, 3, undefined],
  );
  await timers.stop();
});

Deno.test("timers: a restart loads what is pending; what fired is gone from the shards", async () => {
  const store = createMemoryStore();
  const clock = manualClock(0);
  const fired: string[] = [];
  const start = () =>
    durableTimers({
      store,
      category: "T",
      clock,
      shards: 3,
      fire: (t) => void fired.push(t.id),
    });
  const first = start();
  for (let n = 0; n < 20; n++) await first.schedule(timer(n, n < 10 ? 10 : 1_000));
  clock.advance(10);
  await first.idle();
  await first.stop();
  assert.equal(fired.length, 10);
  const second = start();
  await second.idle();
  assert.equal(second.stats().pending, 10, "the ten not yet due");
  clock.advance(1_000);
  await second.idle();
  await second.stop();
  assert.deepEqual(
    fired.slice(10).sort(),
    Array.from({ length: 10 }, (_, n) => `t${n + 10}`).sort(),
  );
  const third = start();
  await third.idle();
  assert.equal(third.stats().pending, 0);
  await third.stop();
});

Deno.test("timers: scheduling an id again is a no-op; a fire that throws is tried again after a backoff", async () => {
  const clock = manualClock(0);
  const store = createMemoryStore();
  let attempts = 0;
  const timers = durableTimers({
    store,
    category: "T",
    clock,
    retry: { initialDelayMs: 1_000, maxDelayMs: 1_000, jitter: 0 },
    fire: () => {
      if (++attempts < 3) throw new Error(`down ${attempts}`);
    },
  });
  await timers.schedule(timer(1, 5));
  const head = store.head;
  await timers.schedule(timer(1, 5));
  assert.equal(store.head, head, "nothing appended for a known id");
  clock.advance(5);
  await timers.idle();
  assert.equal(attempts, 1);
  assert.equal(timers.stats().failing, 1);
  assert.match(String(timers.stats().lastError), /down 1/);
  clock.advance(1_000);
  await timers.idle();
  clock.advance(1_000);
  await timers.idle();
  assert.deepEqual([attempts, timers.stats().failing, timers.stats().fired], [3, 0, 1]);
  await timers.stop();
});

Deno.test("timers: schedules that arrive during a shard append go together in the next one", async () => {
  const inner = createMemoryStore();
  let appends = 0;
  const store: EventStore = {
    readStream: (s, o) => inner.readStream(s, o),
    append: async (s, events: readonly EventData[], v) => {
      appends++;
      await new Promise((r) => setTimeout(r, 5));
      return inner.append(s, events, v);
    },
  };
  const timers = durableTimers({ store, category: "T", shards: 1, fire: () => {} });
  await Promise.all(Array.from({ length: 200 }, (_, n) => timers.schedule(timer(n, 1e15))));
  assert.ok(appends <= 3, `200 schedules in ${appends} appends`);
  await timers.stop();
  const pending = durableTimers({ store: inner, category: "T", shards: 1, fire: () => {} });
  await pending.idle();
  assert.equal(pending.stats().pending, 200);
  await pending.stop();
});

Deno.test("timers: a shard's rolling snapshot bounds what a restart reads", async () => {
  const store = createMemoryStore();
  const clock = manualClock(0);
  const start = () =>
    durableTimers({
      store,
      category: "T",
      clock,
      shards: 1,
      snapshotEvery: 10,
      fire: () => {},
    });
  const first = start();
  for (let n = 0; n < 50; n++) await first.schedule(timer(n, n % 2 === 0 ? 1 : 1e15));
  clock.advance(1);
  await first.idle();
  await first.stop();
  const types = (await store.readStream("T-0")).map((e) => e.type);
  assert.ok(types.includes("TimersSnapshot"));
  assert.ok(types.length - types.lastIndexOf("TimersSnapshot") <= 10);
  const second = start();
  await second.idle();
  assert.equal(second.stats().pending, 25);
  await second.stop();
});

Deno.test("timers: bad input is refused with the field named", async () => {
  const store = createMemoryStore();
  const bad = (fn: () => unknown, field: string) =>
    assert.throws(fn, (e) => e instanceof InvalidArgumentError && e.field === field);
  bad(() => durableTimers({ store, category: "T", fire: 1 } as never), "fire");
  bad(() => durableTimers({ store: {}, category: "T", fire: () => {} } as never), "store");
  bad(() => durableTimers({ store, category: "T", shards: 0, fire: () => {} }), "shards");
  bad(
    () => durableTimers({ store, category: "T", clock: {} as never, fire: () => {} }),
    "clock",
  );
  assert.throws(() => durableTimers({ store, category: "T-1", fire: () => {} }), /category/);
  const timers = durableTimers({ store, category: "T", fire: () => {} });
  await assert.rejects(timers.schedule({ id: "", due: 1, stream: "A-1" }), /timer.id/);
  await assert.rejects(timers.schedule({ id: "x", due: NaN, stream: "A-1" }), /timer.due/);
  await assert.rejects(
    timers.schedule({ id: "x", due: 1, stream: "nodash" }),
    /invalid stream name/,
  );
  await timers.stop();
  await assert.rejects(
    timers.schedule(timer(1, 1)),
    (e) => e instanceof ImpelError && e.code === "TimersStopped",
  );
});

Deno.test("timers: a timer another process scheduled after this one loaded fires here (reloadIntervalMs)", async () => {
  const store = createMemoryStore();
  const clock = manualClock(0);
  const fired: string[] = [];
  const b = durableTimers({
    store,
    category: "Reload",
    clock,
    reloadIntervalMs: 20,
    fire: (t) => void fired.push(t.id),
  });
  try {
    await b.idle(); // loaded: the shards were empty
    const a = durableTimers({ store, category: "Reload", clock, fire: () => {} });
    await a.schedule({ id: "C:Order-o1#0", due: 1_000, stream: "Order-o1" });
    await a.stop(); // it dies before the timer is due
    clock.advance(2_000);
    for (let i = 0; i < 100 && fired.length === 0; i++) {
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.deepEqual(fired, ["C:Order-o1#0"]);
    assert.throws(
      () => durableTimers({ store, category: "R2", fire: () => {}, reloadIntervalMs: -1 }),
      InvalidArgumentError,
    );
  } finally {
    await b.stop();
  }
});
