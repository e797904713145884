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
