// A stream queued under a batch of a tranche that is then revoked, while a batch of another
// tranche still waits on it, must still be dispatched: its place in the queue went with the
// revoked tranche's batches.
import assert from "node:assert/strict";
import { type Batch, createOwnership, type Ownership, streamsSink } from "../../mod.ts";
import { ev, gate, sleep, test, within } from "../support/core.ts";

const batchOf = (
  tranche: string,
  position: number,
  items: Array<[string, number]>,
  ownership?: Ownership,
): Batch => ({
  tranche,
  position: BigInt(position),
  isTail: true,
  items: items.map(([stream, i]) => ({ stream, event: ev(i) })),
  ownership,
});

test("scheduler: a stream queued under a revoked tranche's batch still runs for another tranche", async () => {
  const started: string[] = [];
  const busy = gate();
  const sink = streamsSink({
    maxConcurrentStreams: 1,
    statsIntervalMs: 0,
    handler: async (stream, events) => {
      started.push(`${stream}@${events.map((e) => e.index).join(",")}`);
      if (stream === "Busy-1") await busy.opened;
    },
  });
  const writer = sink.writable.getWriter();
  const owned = createOwnership("a");
  // Busy-1 takes the one slot; X-1 queues under tranche a's batch, the oldest that waits on it.
  await writer.write(batchOf("b", 1, [["Busy-1", 0]]));
  await writer.write(batchOf("a", 1, [["X-1", 0]], owned.ownership));
  await writer.write(batchOf("b", 2, [["X-1", 1]]));
  await sleep(5);
  assert.deepEqual(started, ["Busy-1@0"]);
  assert.equal((await within(owned.revoke(), 2000)).timedOut, undefined, "revocation stalled");
  busy.open();
  // Tranche b's second batch waits on X-1: it must be handled, or the sink never completes.
  const completed = await within(sink.monitor.awaitCompletion(), 2000);
  assert.equal(completed.timedOut, undefined, `never complete after the revocation: ${started}`);
  assert.deepEqual(started.slice(0, 1), ["Busy-1@0"]);
  assert.ok(started.some((s) => s.startsWith("X-1@")), `X-1 never ran: ${started}`);
  await writer.close();
});
