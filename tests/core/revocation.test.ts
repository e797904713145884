// Tranche revocation: a source that loses a tranche revokes its ownership, and the sink lets go
// of it before the source hands the tranche on (semantic 12, one owner at a time).
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  type Batch,
  createOwnership,
  type Ownership,
  type Position,
  type StreamEvent,
  streamsSink,
  type StreamsSinkOptions,
} from "../../mod.ts";
import { ev, gate, sleep, test, within } from "../support/core.ts";

const RUNS = Number(Deno.env.get("RUNS") ?? 300);

function batchOf(
  tranche: string,
  position: number,
  items: Array<[string, number]>,
  ownership: Ownership | undefined,
  commits: Array<[string, Position]>,
): Batch {
  return {
    tranche,
    position: BigInt(position),
    isTail: false,
    items: items.map(([stream, i]) => ({ stream, event: ev(i) })),
    ownership,
    commit: (p) => {
      commits.push([tranche, p]);
      return Promise.resolve();
    },
  };
}

function sinkOf(options: Partial<StreamsSinkOptions> & Pick<StreamsSinkOptions, "handler">) {
  return streamsSink({ statsIntervalMs: 0, commitIntervalMs: 10_000, ...options });
}

test("revoke waits for in-flight calls, starts nothing new, commits what was complete, and forgets the tranche", async () => {
  const commits: Array<[string, Position]> = [];
  const started: string[] = [];
  const slow = gate();
  const sink = sinkOf({
    maxConcurrentStreams: 1,
    handler: async (stream, events) => {
      started.push(`${stream}@${events[0].index}`);
      if (stream === "A-1") await slow.opened;
    },
  });
  const writer = sink.writable.getWriter();
  const owned = createOwnership("p0");
  await writer.write(batchOf("p0", 1, [["A-1", 0]], owned.ownership, commits));
  await writer.write(batchOf("p0", 2, [["A-2", 0]], owned.ownership, commits));
  await sleep(5);
  assert.deepEqual(started, ["A-1@0"]); // one at a time: A-2 waits behind A-1
  let revoked = false;
  const revoking = owned.revoke().then((outcome) => {
    revoked = true;
    return outcome;
  });
  await sleep(20);
  assert.equal(revoked, false, "revoke resolved while a call was still running");
  slow.open();
  const outcome = await revoking;
  assert.deepEqual(started, ["A-1@0"], "A-2 was started on a revoked tranche");
  assert.equal(outcome.abandoned, 0);
  assert.equal(outcome.committed, 1n, "the batch completed by the in-flight call is committed");
  assert.deepEqual(commits, [["p0", 1n]]);
  assert.equal(sink.stats().tranches.length, 0, "the revoked tranche is forgotten");
  assert.equal(sink.stats().streams, 0);
  // Late batches of the revoked ownership are dropped and counted, never handled.
  await writer.write(batchOf("p0", 3, [["A-3", 0]], owned.ownership, commits));
  assert.equal(sink.stats().counters.revokedBatches, 2);
  // A new owner period starts the tranche afresh: A-2 is handled from index 0 again.
  const again = createOwnership("p0");
  await writer.write(batchOf("p0", 2, [["A-2", 0]], again.ownership, commits));
  await sleep(5);
  assert.deepEqual(started, ["A-1@0", "A-2@0"]);
  await sink.stop();
  assert.deepEqual(commits, [["p0", 1n], ["p0", 2n]]);
});

test("revocation releases a write held back by a full read-ahead, without waiting for the handler", async () => {
  const commits: Array<[string, Position]> = [];
  const hung = gate();
  const sink = sinkOf({
    maxReadAhead: 2,
    stopTimeoutMs: 50,
    handler: async (_stream, _events, { signal }) => {
      await Promise.race([hung.opened, new Promise((r) => signal.addEventListener("abort", r))]);
    },
  });
  const writer = sink.writable.getWriter();
  const owned = createOwnership("p0");
  await writer.write(batchOf("p0", 1, [["A-1", 0]], owned.ownership, commits));
  const blocked = writer.write(batchOf("p0", 2, [["A-2", 0]], owned.ownership, commits));
  assert.ok((await within(blocked, 30)).timedOut, "the read-ahead should be full");
  const outcome = await owned.revoke();
  assert.equal(outcome.abandoned, 2, "hung calls are abandoned after stopTimeoutMs");
  assert.equal(outcome.committed, undefined);
  assert.ok(!(await within(blocked, 100)).timedOut, "the held write was not released");
  assert.equal(sink.stats().tranches.length, 0);
  assert.deepEqual(commits, []);
  hung.open();
  await sink.stop();
});

test("a new ownership of a tranche waits until the previous one is let go", async () => {
  const commits: Array<[string, Position]> = [];
  const log: string[] = [];
  const slow = gate();
  const sink = sinkOf({
    handler: async (stream, events) => {
      log.push(`start ${stream}@${events[0].index}`);
      if (events[0].index === 0) await slow.opened;
      log.push(`end ${stream}@${events[0].index}`);
    },
  });
  const writer = sink.writable.getWriter();
  const first = createOwnership("p0");
  await writer.write(batchOf("p0", 1, [["A-1", 0]], first.ownership, commits));
  await sleep(5);
  const revoking = first.revoke();
  const second = createOwnership("p0");
  const write = writer.write(batchOf("p0", 2, [["A-1", 1]], second.ownership, commits));
  await sleep(20);
  assert.deepEqual(log, ["start A-1@0"], "the new owner's batch ran before the old call ended");
  slow.open();
  await revoking;
  await write;
  await sleep(5);
  assert.deepEqual(log, ["start A-1@0", "end A-1@0", "start A-1@1", "end A-1@1"]);
  await sink.stop();
});

test("a batch with a new ownership before the old one was revoked is a typed error", async () => {
  const sink = sinkOf({ handler: () => new Promise<void>(() => {}), stopTimeoutMs: 10 });
  const writer = sink.writable.getWriter();
  await writer.write(batchOf("p0", 1, [["A-1", 0]], createOwnership("p0").ownership, []));
  await assert.rejects(
    writer.write(batchOf("p0", 2, [["A-1", 1]], createOwnership("p0").ownership, [])),
    (e: Error & { code?: string }) => e.code === "InvalidBatch" && /ownership/.test(e.message),
  );
  await sink.done.catch(() => {});
});

// The property: whatever the interleaving of batches, handler delays and revocations, no call
// starts on a revoked tranche's streams, a revocation resolves only after its calls ended, and
// nothing of a revoked ownership is committed after it resolved.
test("property: revocation is clean under any interleaving", async () => {
  const step = fc.oneof(
    fc.record({
      kind: fc.constant("batch" as const),
      tranche: fc.nat(2),
      streams: fc.array(fc.nat(5), { minLength: 0, maxLength: 4 }),
    }),
    fc.record({ kind: fc.constant("revoke" as const), tranche: fc.nat(2) }),
    fc.record({ kind: fc.constant("pause" as const), ms: fc.nat(3) }),
  );
  await fc.assert(
    fc.asyncProperty(
      fc.array(step, { minLength: 1, maxLength: 25 }),
      fc.array(fc.nat(3), { minLength: 1, maxLength: 8 }),
      fc.integer({ min: 1, max: 4 }),
      async (steps, delays, maxReadAhead) => {
        const violations: string[] = [];
        const owners = new Map<number, ReturnType<typeof createOwnership>>();
        const revokedAt = new Map<Ownership, "revoking" | "released">();
        const running = new Map<Ownership, number>();
        const nextIndex = new Map<string, number>();
        let position = 0;
        let call = 0;
        const sink = sinkOf({
          maxReadAhead,
          stopTimeoutMs: 1000,
          handler: async (stream: string, events: readonly StreamEvent[]) => {
            const o = ownerOfEvent.get(events[0])!;
            if (revokedAt.has(o)) violations.push(`${stream} started on a revoked tranche`);
            running.set(o, (running.get(o) ?? 0) + 1);
            const d = delays[call++ % delays.length];
            if (d > 0) await sleep(d);
            running.set(o, running.get(o)! - 1);
          },
        });
        const ownerOfEvent = new WeakMap<StreamEvent, Ownership>();
        const writer = sink.writable.getWriter();
        const pending: Promise<unknown>[] = [];
        for (const s of steps) {
          if (s.kind === "pause") await sleep(s.ms);
          else if (s.kind === "revoke") {
            const owned = owners.get(s.tranche);
            if (!owned) continue;
            owners.delete(s.tranche);
            revokedAt.set(owned.ownership, "revoking");
            pending.push(
              owned.revoke().then(() => {
                if ((running.get(owned.ownership) ?? 0) > 0) {
                  violations.push(`revocation of ${s.tranche} resolved with calls running`);
                }
                revokedAt.set(owned.ownership, "released");
              }),
            );
          } else {
            let owned = owners.get(s.tranche);
            if (!owned) owners.set(s.tranche, owned = createOwnership(`t${s.tranche}`));
            const o = owned.ownership;
            const items = [...new Set(s.streams)].map((n) => {
              const stream = `S${s.tranche}-${n}`;
              const index = nextIndex.get(stream) ?? 0;
              nextIndex.set(stream, index + 1);
              const event = ev(index);
              ownerOfEvent.set(event, o);
              return { stream, event };
            });
            const tranche = `t${s.tranche}`;
            const write = writer.write({
              tranche,
              position: BigInt(++position),
              isTail: false,
              items,
              ownership: o,
              commit: () => {
                if (revokedAt.get(o) === "released") {
                  violations.push(`${tranche} committed after its revocation resolved`);
                }
                return Promise.resolve();
              },
            });
            // A full read-ahead holds the write; revocations and pauses go on meanwhile.
            if ((await within(write, 5)).timedOut) pending.push(write);
          }
        }
        for (const owned of owners.values()) pending.push(owned.revoke());
        await Promise.all(pending);
        await sink.stop();
        assert.deepEqual(violations, []);
      },
    ),
    { numRuns: RUNS },
  );
});

test("a stop during a revocation waits for it and never commits the revoked tranche itself", async () => {
  const commits: Array<[string, Position]> = [];
  const slow = gate();
  const sink = sinkOf({
    handler: async (stream) => {
      if (stream === "A-1") await slow.opened;
    },
  });
  const writer = sink.writable.getWriter();
  const owned = createOwnership("p0");
  await writer.write(batchOf("p0", 1, [["A-1", 0]], owned.ownership, commits));
  await writer.write(batchOf("q0", 7, [["B-1", 0]], undefined, commits));
  await sleep(5);
  const revoking = owned.revoke();
  const stopping = sink.stop();
  await sleep(10);
  slow.open();
  const [outcome] = await Promise.all([revoking, stopping]);
  assert.equal(outcome.committed, 1n);
  // p0 committed once, by its revocation; q0 by the stop's flush.
  assert.deepEqual(commits.filter(([t]) => t === "p0"), [["p0", 1n]]);
  assert.deepEqual(commits.filter(([t]) => t === "q0"), [["q0", 7n]]);
});

test("a call abandoned by a revocation still blocks a new period's call on its stream until it ends", async () => {
  const commits: Array<[string, Position]> = [];
  let running = 0, most = 0;
  const log: string[] = [];
  const sink = sinkOf({
    stopTimeoutMs: 30,
    handler: async (stream, events) => {
      running++;
      most = Math.max(most, running);
      log.push(`start ${stream}@${events[0].index}`);
      await sleep(events[0].index === 0 ? 200 : 1); // the first call ignores its signal
      log.push(`end ${stream}@${events[0].index}`);
      running--;
    },
  });
  const writer = sink.writable.getWriter();
  const first = createOwnership("p0");
  await writer.write(batchOf("p0", 1, [["A-1", 0]], first.ownership, commits));
  await sleep(5);
  const outcome = await first.revoke();
  assert.equal(outcome.abandoned, 1);
  const second = createOwnership("p0");
  await writer.write(batchOf("p0", 2, [["A-1", 1]], second.ownership, commits));
  await sleep(300);
  assert.equal(most, 1, `two calls on A-1 at once: ${log.join(", ")}`);
  assert.deepEqual(log, ["start A-1@0", "end A-1@0", "start A-1@1", "end A-1@1"]);
  await sink.stop();
});

test("revoking one tranche keeps the events another tranche's batches wait for on a shared stream", async () => {
  const commits: Array<[string, Position]> = [];
  const seen: string[] = [];
  const gateA = gate();
  const sink = sinkOf({
    handler: async (stream, events) => {
      if (stream === "Hold-1") await gateA.opened;
      seen.push(...events.map((e) => `${stream}@${e.index}`));
    },
  });
  const writer = sink.writable.getWriter();
  const b = createOwnership("B");
  // X-1's event 0 comes from A, held back behind a gap-free but busy stream so it is buffered.
  await writer.write(batchOf("B", 1, [["Hold-1", 0]], b.ownership, commits));
  await writer.write(batchOf("A", 1, [["X-1", 0]], undefined, commits));
  await writer.write(batchOf("B", 2, [["X-1", 1]], b.ownership, commits));
  const revoking = b.revoke();
  gateA.open();
  await revoking;
  await sleep(10);
  assert.ok(seen.includes("X-1@0"), `X-1@0 lost: ${seen.join(", ")}`);
  const a = sink.stats().tranches.find((t) => t.tranche === "A");
  assert.equal(a?.completed, 1n, "tranche A's batch never completed");
  await sink.stop();
});
