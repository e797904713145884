// From a review of the scheduler optimisations (issue 11): each case failed before its fix.
import assert from "node:assert/strict";
import { createScheduler } from "../../core/scheduler.ts";
import type { Batch } from "../../core/batch.ts";
import { ev, sleep } from "../support/core.ts";

const intrinsicThen = Promise.prototype.then;

const batch = (tranche: string, pos: number, items: Array<[string, number]>): Batch => ({
  tranche,
  position: BigInt(pos),
  isTail: true,
  items: items.map(([stream, i]) => ({ stream, event: ev(i) })),
});
const tick = () => new Promise((r) => setTimeout(r, 5));
function gate() {
  let open!: () => void;
  const p = new Promise<void>((r) => (open = r));
  return { p, open };
}

Deno.test("a state left behind by a revocation never purges its stream's next state: one call at a time", async () => {
  const running = new Map<string, number>();
  const log: string[] = [];
  const violations: string[] = [];
  const gates = new Map<string, ReturnType<typeof gate>>();
  const sched = createScheduler({
    maxIdleStreams: 1,
    handler: (stream, events) => {
      const key = `${stream}@${events.map((e) => e.index).join(",")}`;
      log.push(key);
      if ((running.get(stream) ?? 0) > 0) violations.push(`concurrent call on ${stream}: ${key}`);
      running.set(stream, (running.get(stream) ?? 0) + 1);
      const g = gates.get(key);
      const end = () => {
        running.set(stream, running.get(stream)! - 1);
      };
      if (g === undefined) {
        end();
        return;
      }
      return g.p.then(end);
    },
  }, {
    onProgress() {},
    onFault(e) {
      throw e;
    },
    onHandlerError() {},
  });
  const g1 = gate(), g2 = gate();
  gates.set("A@1", g1);
  sched.ingest(batch("p", 1, [["A", 0]]));
  await tick();
  sched.ingest(batch("p", 2, [["A", 1]]));
  await tick();
  const revoked = sched.revoke("p");
  sched.abandon("p");
  sched.forget("p");
  gates.set("A@1", g2); // the re-read of A@1 under the new period hangs too
  g1.open();
  await tick();
  await revoked;
  sched.ingest(batch("p", 2, [["A", 1]])); // new period re-reads A@1
  await tick();
  sched.ingest(batch("q", 1, [["B", 0]])); // purge runs
  await tick();
  sched.ingest(batch("p", 3, [["A", 2]]));
  await tick();
  g2.open();
  await tick();
  console.log(log, violations, sched.counters.purgedStreams);
  assert.deepEqual(violations, []);
});

Deno.test("a native promise whose own `then` calls back twice finishes its call once", async () => {
  const log: string[] = [];
  const gates = new Map<string, () => void>();
  let first = true;
  const sched = createScheduler({
    maxConcurrentStreams: 4,
    handler: (stream, events) => {
      log.push(`${stream}@${events[0].index}`);
      if (first) {
        first = false;
        const p = Promise.resolve();
        // e.g. an instrumented or "cancelable" promise: its own then, which calls back twice
        (p as { then: unknown }).then = function (
          this: Promise<void>,
          ok: () => void,
          err: () => void,
        ) {
          intrinsicThen.call(this, ok, err);
          return intrinsicThen.call(this, ok, err);
        };
        return p;
      }
      return new Promise<void>((r) => gates.set(`${stream}@${events[0].index}`, r));
    },
  }, {
    onProgress() {},
    onFault(e) {
      throw e;
    },
    onHandlerError() {},
  });
  sched.ingest({
    tranche: "p",
    position: 1n,
    isTail: true,
    items: [{ stream: "A", event: ev(0) }],
  });
  await sleep(5);
  console.log("after A: active", sched.active);
  // two calls now get the same slot (it was pushed to the free list twice)
  sched.ingest({
    tranche: "p",
    position: 2n,
    isTail: true,
    items: [{ stream: "B", event: ev(0) }, { stream: "C", event: ev(0) }],
  });
  await sleep(5);
  gates.get("B@0")!(); // only B's call ends
  await sleep(5);
  const busy = sched.snapshot().busy.map((b) => b.stream);
  console.log({
    log,
    active: sched.active,
    busy,
    uncompleted: sched.uncompleted,
    calls: sched.counters.calls,
  });
  assert.deepEqual(busy, ["C"], "C is still running, B is done");
  gates.get("C@0")?.();
  await sleep(5);
  sched.stop();
});

Deno.test("a late second call back of a native promise's own `then` finishes no other stream's call", async () => {
  const log: string[] = [];
  const gates = new Map<string, () => void>();
  let first = true;
  let late: () => void = () => {};
  const sched = createScheduler({
    maxConcurrentStreams: 4,
    handler: (stream, events) => {
      log.push(`${stream}@${events[0].index}`);
      if (first) {
        first = false;
        const p = Promise.resolve();
        // e.g. an instrumented or "cancelable" promise: its own then, which calls back twice
        (p as { then: unknown }).then = function (
          this: Promise<void>,
          ok: () => void,
          err: () => void,
        ) {
          const r = intrinsicThen.call(this, ok, err);
          late = () => ok(); // a late second call back, once the slot is another call's
          return r;
        };
        return p;
      }
      return new Promise<void>((r) => gates.set(`${stream}@${events[0].index}`, r));
    },
  }, {
    onProgress() {},
    onFault(e) {
      throw e;
    },
    onHandlerError() {},
  });
  sched.ingest({
    tranche: "p",
    position: 1n,
    isTail: true,
    items: [{ stream: "A", event: ev(0) }],
  });
  await sleep(5);
  console.log("after A: active", sched.active);
  // two calls now get the same slot (it was pushed to the free list twice)
  sched.ingest({
    tranche: "p",
    position: 2n,
    isTail: true,
    items: [{ stream: "B", event: ev(0) }, { stream: "C", event: ev(0) }],
  });
  await sleep(5);
  late(); // the late second call back: B's call has not ended
  await sleep(5);
  const busy = sched.snapshot().busy.map((b) => b.stream);
  console.log({
    log,
    active: sched.active,
    busy,
    uncompleted: sched.uncompleted,
    calls: sched.counters.calls,
  });
  assert.deepEqual(busy.sort(), ["B", "C"], "B's and C's handlers are both still running");
  gates.get("C@0")?.();
  await sleep(5);
  sched.stop();
});

for (
  const [name, make] of [
    ["then getter throws", () => ({
      get then() {
        throw new Error("getter");
      },
    })],
    ["proxy of a native promise", () => new Proxy(Promise.resolve(), {})],
  ] as Array<[string, () => unknown]>
) {
  Deno.test(`handler result: ${name}`, async () => {
    let calls = 0;
    const errors: unknown[] = [];
    const sched = createScheduler({
      retry: { initialDelayMs: 1, maxDelayMs: 1 },
      handler: () => {
        if (calls++ === 0) return make() as Promise<void>;
      },
    }, {
      onProgress() {},
      onFault(e) {
        throw e;
      },
      onHandlerError(f) {
        errors.push(f.error);
      },
    });
    let thrown: unknown;
    try {
      sched.ingest({
        tranche: "p",
        position: 1n,
        isTail: true,
        items: [{ stream: "A", event: ev(0) }],
      });
    } catch (e) {
      thrown = e;
    }
    await sleep(30);
    console.log({
      thrown: String(thrown),
      calls,
      active: sched.active,
      uncompleted: sched.uncompleted,
      busy: sched.snapshot().busy.length,
      errors: errors.map(String),
    });
    assert.equal(thrown, undefined, "ingest threw");
    assert.equal(sched.uncompleted, 0);
    sched.stop();
  });
}
