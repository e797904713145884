// From a review of the scheduler optimisations (issue 11): each failed before its fix.
import assert from "node:assert/strict";
import { createScheduler } from "../../core/scheduler.ts";
import type { StreamEvent } from "../../core/event.ts";
const ev = (
  i: number,
): StreamEvent => ({
  index: i,
  type: "E",
  data: null,
  meta: null,
  id: `e${i}`,
  time: new Date(0),
  size: 1,
} as StreamEvent);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const intrinsicThen = Promise.prototype.then;

Deno.test("a late second call back of a native promise with its own `then` finishes another stream's call", async () => {
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
