// From a review of the scheduler optimisations (issue 11): each failed before its fix.
import assert from "node:assert/strict";
import { createScheduler } from "../../core/scheduler.ts";
import type { Batch } from "../../core/batch.ts";
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

Deno.test("purge after leftBehind deletes the NEW state of the same stream: two calls at once", async () => {
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
