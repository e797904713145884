// Rolling snapshots of workflow instances: a long instance loads from its latest snapshot (the
// decider's rolling snapshots), with its outbox, timers and recent input ids; an instance
// written without snapshots still loads, and gets one with its next append.
import assert from "node:assert/strict";
import pg from "pg";
import { createCodec } from "../../core/codec.ts";
import { InvalidArgumentError } from "../../core/errors.ts";
import type { StreamEvent } from "../../core/event.ts";
import {
  defineSaga,
  defineWorkflow,
  manualClock,
  startWorkflow,
  stepSucceeded,
  workflowCategories,
  workflowClient,
  type WorkflowDefinition,
  type WorkflowSnapshotOptions,
} from "../../core/workflow.ts";
import { createMemoryStore, memorySource, type MemoryStore } from "../../sources/memory.ts";
import { messageDbStore } from "../../stores/messagedb.ts";
import { unique, url } from "../support/postgres.ts";

type Seen = { type: "Seen"; data: { tag: string } };
type Input = { type: "See"; data: { tag: string } } | { type: "Remind"; data: { tag: string } };
type Ping = { type: "Ping"; data: { tag: string } };
interface State {
  readonly count: number;
  readonly tags: ReadonlySet<string>;
}
let folded = 0;
const base: WorkflowDefinition<Seen, State, Input, Ping> = {
  category: "Watcher",
  codec: createCodec<Seen>({ Seen: {} }),
  initial: { count: 0, tags: new Set() },
  fold: (s, events) => {
    folded += events.length;
    return events.reduce(
      (t, e) => ({ count: t.count + 1, tags: new Set([...t.tags, e.data.tag]) }),
      s,
    );
  },
  decide: (_, input) =>
    input.type === "See"
      ? {
        events: [{ type: "Seen", data: input.data }],
        ...(input.data.tag === "ping"
          ? {
            sends: [{ to: "Pinged-1", type: "Ping", data: input.data }],
            timers: [{
              name: "remind",
              afterMs: 60_000,
              input: { type: "Remind", data: input.data },
            }],
          }
          : {}),
      }
      : {},
};
// A Set does not survive JSON: the snapshot keeps it as a list.
const snapshot: WorkflowSnapshotOptions<State> = {
  every: 20,
  encode: (s) => ({ count: s.count, tags: [...s.tags] }),
  decode: (data) => {
    const d = data as { count: number; tags: string[] };
    return { count: d.count, tags: new Set(d.tags) };
  },
};
const withSnapshots = defineWorkflow({ ...base, snapshot });
const without = defineWorkflow(base);

/** Counts the events each cold load of `store` reads. */
function countReads(store: MemoryStore): { events: number } {
  const counted = { events: 0 };
  const readStream = store.readStream.bind(store);
  const readLastEvent = store.readLastEvent.bind(store);
  store.readStream = async (stream, options) => {
    const read = await readStream(stream, options);
    counted.events += read.length;
    return read;
  };
  store.readLastEvent = async (stream, type) => {
    const read: StreamEvent | undefined = await readLastEvent(stream, type);
    if (read !== undefined) counted.events++;
    return read;
  };
  return counted;
}

Deno.test("workflow snapshots: a long instance loads from its latest snapshot, outbox, timers and input ids included", async () => {
  const store = createMemoryStore();
  const clock = manualClock(0);
  const writer = workflowClient(withSnapshots, { store, clock });
  await writer.handle("w1", { type: "See", data: { tag: "ping" } }, { id: "see-0" });
  for (let n = 1; n < 100; n++) {
    await writer.handle("w1", { type: "See", data: { tag: `t${n % 7}` } }, { id: `see-${n}` });
  }
  const types = (await store.readStream("Watcher-w1")).map((e) => e.type);
  // 100 Seen, a send and a timer; a snapshot each time 20 or more followed the last.
  assert.equal(types.filter((t) => t !== "WorkflowSnapshot").length, 102);
  assert.equal(types.filter((t) => t === "WorkflowSnapshot").length, 5);

  // A process with a cold cache reads from the last snapshot on.
  const reads = countReads(store);
  folded = 0;
  const reader = workflowClient(withSnapshots, { store, clock });
  const instance = await reader.read("w1");
  assert.ok(reads.events <= 20, `read ${reads.events} events, not the whole stream`);
  assert.ok(folded < 20, `folded ${folded} events`);
  assert.equal(instance.state.count, 100);
  assert.deepEqual([...instance.state.tags].sort(), [
    "ping",
    "t0",
    "t1",
    "t2",
    "t3",
    "t4",
    "t5",
    "t6",
  ]);
  assert.deepEqual(instance.pending.map((p) => [p.seq, p.type, p.to]), [[1, "Ping", "Pinged-1"]]);
  assert.deepEqual(instance.timers, [{ name: "remind", due: 60_000 }]);
  // Input ids recorded before the snapshot are still recognised.
  const again = await reader.handle("w1", { type: "See", data: { tag: "t3" } }, { id: "see-90" });
  assert.equal(again.duplicate, true);
  assert.equal(again.state.count, 100);
});

Deno.test("workflow snapshots: an instance written without snapshots still loads, then gets one", async () => {
  const store = createMemoryStore();
  const old = workflowClient(without, { store });
  for (let n = 0; n < 50; n++) {
    await old.handle("w2", { type: "See", data: { tag: `t${n % 3}` } }, { id: `see-${n}` });
  }
  assert.ok(!(await store.readStream("Watcher-w2")).some((e) => e.type === "WorkflowSnapshot"));
  const upgraded = workflowClient(withSnapshots, { store });
  const loaded = await upgraded.read("w2");
  assert.equal(loaded.state.count, 50);
  assert.deepEqual([...loaded.state.tags].sort(), ["t0", "t1", "t2"]);
  // Its next append is past `every` events since the start: it records a snapshot.
  await upgraded.handle("w2", { type: "See", data: { tag: "t9" } }, { id: "see-50" });
  const last = (await store.readStream("Watcher-w2")).at(-1)!;
  assert.equal(last.type, "WorkflowSnapshot");
  const reads = countReads(store);
  const cold = await workflowClient(withSnapshots, { store }).read("w2");
  assert.equal(reads.events, 1, "only the snapshot");
  assert.equal(cold.state.count, 51);
  assert.equal(cold.version, 52);
});

Deno.test("workflow snapshots: bad options are refused naming the field", () => {
  assert.throws(
    () => defineWorkflow({ ...base, snapshot: { every: 0 } }),
    (e: unknown) => e instanceof InvalidArgumentError && /snapshot\.every/.test(e.message),
  );
  assert.throws(
    () => defineWorkflow({ ...base, snapshot: { every: 5, decode: "no" as never } }),
    (e: unknown) => e instanceof InvalidArgumentError && /snapshot\.decode/.test(e.message),
  );
});

// pg keeps sockets and timers of its pool until `end`, which the test awaits.
Deno.test({
  name:
    "workflow snapshots on MessageDB: an old instance loads, gets a snapshot, and loads from it",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const pool = new pg.Pool({
      connectionString: url,
      max: 2,
      options: "-c search_path=message_store,public",
    });
    pool.on("error", () => {});
    try {
      const store = messageDbStore(pool);
      const id = unique("s");
      const old = workflowClient(without, { store });
      for (let n = 0; n < 30; n++) {
        await old.handle(id, { type: "See", data: { tag: `t${n % 3}` } }, { id: `see-${n}` });
      }
      const upgraded = workflowClient(withSnapshots, { store });
      assert.equal((await upgraded.read(id)).state.count, 30);
      await upgraded.handle(id, { type: "See", data: { tag: "t9" } }, { id: "see-30" });
      folded = 0;
      const cold = await workflowClient(withSnapshots, { store }).read(id);
      assert.equal(folded, 0, "folded from the snapshot alone (readFromLast)");
      assert.equal(cold.state.count, 31);
      assert.deepEqual([...cold.state.tags].sort(), ["t0", "t1", "t2", "t9"]);
      const again = await workflowClient(withSnapshots, { store }).handle(id, {
        type: "See",
        data: { tag: "t1" },
      }, { id: "see-12" });
      assert.equal(again.duplicate, true, "an input id from before the snapshot");
    } finally {
      await pool.end();
    }
  },
});

Deno.test("saga snapshots: a saga's state loads from a snapshot, its data through parse", async () => {
  type Order = { orderId: string; placed: Date };
  type Message = { type: "Ship"; data: { orderId: string } } | {
    type: "Bill";
    data: { orderId: string };
  };
  const delivery = defineSaga<Order, Message>({
    category: "SnapDelivery",
    parse: (d) => {
      const f = d as { orderId: string; placed: string | Date };
      return { orderId: f.orderId, placed: new Date(f.placed) };
    },
    snapshot: { every: 3 },
    steps: [
      { name: "bill", action: (o) => ({ to: `Bill-${o.orderId}`, type: "Bill", data: o }) },
      { name: "ship", action: (o) => ({ to: `Ship-${o.orderId}`, type: "Ship", data: o }) },
    ],
  });
  const store = createMemoryStore();
  const runner = startWorkflow(delivery, {
    store,
    source: memorySource({ store, categories: workflowCategories(delivery) }),
    handlers: { Bill: () => stepSucceeded("bill"), Ship: () => stepSucceeded("ship") },
  });
  try {
    const placed = new Date("2026-12-02T10:00:00Z");
    await runner.handle("o1", { type: "Start", data: { orderId: "o1", placed } });
    await runner.awaitIdle();
  } finally {
    await runner.stop();
  }
  const types = (await store.readStream("SnapDelivery-o1")).map((e) => e.type);
  assert.ok(types.includes("WorkflowSnapshot"), types.join(" "));
  const reads = countReads(store);
  const cold = await workflowClient(delivery, { store }).read("o1");
  assert.ok(reads.events < types.length, `read ${reads.events} of ${types.length}`);
  assert.equal(cold.state.status, "completed");
  assert.ok(cold.state.data?.placed instanceof Date, "data parsed");
  assert.equal(cold.state.data?.placed.toISOString(), "2026-12-02T10:00:00.000Z");
});
