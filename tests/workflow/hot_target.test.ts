// A re-send to a hot target: the target stream's idempotency window is shared by every sender,
// so other senders' appends between a delivery and its re-send can push the send's key out of
// it. The re-send must still be recognised (the target searches its stream for the key), both
// after a restart (another runner re-sends) and on a retry in the same runner.
import assert from "node:assert/strict";
import { createCodec } from "../../core/codec.ts";
import { createDecider } from "../../core/decider.ts";
import {
  defineWorkflow,
  deliveryOptions,
  type SendHandler,
  startWorkflow,
  workflowCategories,
} from "../../core/workflow.ts";
import { createMemoryStore, memorySource, type MemoryStore } from "../../sources/memory.ts";

type Added = { type: "Added"; data: { n: number } };
type AddInput = { type: "Add"; data: { n: number } };
type Increment = { type: "Increment"; data: { n: number } };
const tally = defineWorkflow<Added, number, AddInput, Increment>({
  category: "HotTally",
  codec: createCodec<Added>({ Added: {} }),
  initial: 0,
  fold: (total, events) => events.reduce((t, e) => t + e.data.n, total),
  decide: (_, input) => ({
    events: [{ type: "Added", data: input.data }],
    sends: [{ to: "HotCounter-1", type: "Increment", data: input.data }],
  }),
});
type Counted = { type: "Incremented"; data: { n: number } };
/** A target that is not idempotent by its state, with a small window (3 keys). */
const counterOf = (store: MemoryStore) =>
  createDecider<Counted, number>({
    store,
    codec: createCodec<Counted>({ Incremented: {} }),
    initial: 0,
    fold: (t, events) => events.reduce((s, e) => s + e.data.n, t),
    idempotencyWindow: 3,
  });

/** Ten other senders' keyed appends to the hot target: more than its window. */
async function otherTraffic(counter: ReturnType<typeof counterOf>) {
  for (let i = 0; i < 10; i++) {
    await counter.transact("HotCounter-1", () => [{ type: "Incremented", data: { n: 1 } }], {
      idempotencyKey: `other-${i}`,
    });
  }
}

Deno.test("hot target: a re-send after a restart, past the target's window, is applied once", async () => {
  const store = createMemoryStore();
  const counter = counterOf(store);
  let applied!: () => void;
  const effect = new Promise<void>((resolve) => applied = resolve);
  // The first runner applies the effect, then "dies" before recording the delivery.
  const dying: SendHandler<AddInput, Increment> = async (send, { signal }) => {
    await counter.transact(send.to, () => [{ type: "Incremented", data: send.data }], {
      ...deliveryOptions(send),
    });
    applied();
    await new Promise((_, reject) => signal.addEventListener("abort", () => reject(signal.reason)));
  };
  const first = startWorkflow(tally, {
    store,
    source: memorySource({ store, categories: workflowCategories(tally) }),
    handlers: { Increment: dying },
    sink: { stopTimeoutMs: 100 },
  });
  await first.handle("t1", { type: "Add", data: { n: 100 } }, { id: "add-t1" });
  await effect;
  await first.stop();
  assert.equal((await first.read("t1")).pending.length, 1, "the delivery was not recorded");
  await otherTraffic(counter);

  const deliveries: { id: string; redelivery?: boolean }[] = [];
  const second = startWorkflow(tally, {
    store,
    source: memorySource({ store, categories: workflowCategories(tally) }),
    handlers: {
      Increment: async (send) => {
        deliveries.push({ id: send.id, redelivery: send.redelivery });
        await counter.transact(
          send.to,
          () => [{ type: "Incremented", data: send.data }],
          deliveryOptions(send),
        );
      },
    },
  });
  try {
    await second.awaitIdle();
    assert.equal(await counter.query("HotCounter-1", (t) => t), 110, "100 once, plus 10 others");
    assert.deepEqual(deliveries, [{ id: "HotTally-t1#0", redelivery: true }]);
    assert.equal((await second.read("t1")).pending.length, 0);
  } finally {
    await second.stop();
  }
});

Deno.test("hot target: a retried delivery in the same runner, past the target's window, is applied once", async () => {
  const store = createMemoryStore();
  const counter = counterOf(store);
  const deliveries: { id: string; redelivery?: boolean }[] = [];
  const increment: SendHandler<AddInput, Increment> = async (send, { attempt }) => {
    deliveries.push({ id: send.id, redelivery: send.redelivery });
    await counter.transact(
      send.to,
      () => [{ type: "Incremented", data: send.data }],
      deliveryOptions(send),
    );
    if (attempt === 1) {
      // Others reach the hot target before this delivery's record fails.
      await otherTraffic(counter);
      throw new Error("the delivery's record failed");
    }
  };
  const runner = startWorkflow(tally, {
    store,
    source: memorySource({ store, categories: workflowCategories(tally) }),
    handlers: { Increment: increment },
    sink: { retry: { initialDelayMs: 1, maxDelayMs: 5 } },
  });
  try {
    await runner.handle("t2", { type: "Add", data: { n: 100 } }, { id: "add-t2" });
    await runner.awaitIdle();
    assert.equal(await counter.query("HotCounter-1", (t) => t), 110, "100 once, plus 10 others");
    assert.equal(deliveries.length, 2, "sent twice");
    assert.equal(deliveries[1].redelivery, true, "the second is flagged a redelivery");
  } finally {
    await runner.stop();
  }
});

Deno.test("hot target: a first delivery is not searched for (only possible re-sends are)", async () => {
  const store = createMemoryStore();
  const counter = counterOf(store);
  await otherTraffic(counter);
  const deliveries: { id: string; redelivery?: boolean }[] = [];
  const runner = startWorkflow(tally, {
    store,
    source: memorySource({ store, categories: workflowCategories(tally) }),
    handlers: {
      Increment: async (send) => {
        deliveries.push({ id: send.id, redelivery: send.redelivery });
        await counter.transact(
          send.to,
          () => [{ type: "Incremented", data: send.data }],
          deliveryOptions(send),
        );
      },
    },
  });
  try {
    await runner.awaitIdle(); // the runner has seen the instance stream (none yet)
    await runner.handle("t3", { type: "Add", data: { n: 100 } }, { id: "add-t3" });
    await runner.awaitIdle();
    await runner.handle("t3", { type: "Add", data: { n: 1 } }, { id: "add-t3-2" });
    await runner.awaitIdle();
    // The first was recorded before the runner first saw t3 (a runner before it may have sent
    // it); the second after, by this runner alone.
    assert.deepEqual(deliveries.map((d) => d.redelivery), [true, false]);
    assert.equal(await counter.query("HotCounter-1", (t) => t), 111);
  } finally {
    await runner.stop();
  }
});

Deno.test("decider: mayRepeat finds a key past the window, across pages, once per transact", async () => {
  const store = createMemoryStore();
  // The paged search, for stores that cannot find a key themselves (hot_target_finder.test.ts
  // covers those that can).
  Reflect.deleteProperty(store, "findIdempotencyKey");
  const counter = counterOf(store);
  const add = () => [{ type: "Incremented" as const, data: { n: 1 } }];
  await counter.transact("HotCounter-1", add, { idempotencyKey: "mine" });
  for (let i = 0; i < 1_200; i++) {
    await counter.transact("HotCounter-1", add, { idempotencyKey: `other-${i}` });
  }
  const reads: (number | undefined)[] = [];
  const readStream = store.readStream.bind(store);
  store.readStream = (stream, options) => {
    reads.push(options?.maxCount);
    return readStream(stream, options);
  };
  const again = await counter.transactEx("HotCounter-1", add, {
    idempotencyKey: "mine",
    mayRepeat: true,
  });
  assert.equal(again.duplicate, true);
  assert.equal(again.appended, 0);
  // The load, then one page (the key is in the first event).
  assert.deepEqual(reads, [undefined, 1_000]);
  // A new key searches every page and appends.
  reads.length = 0;
  const fresh = await counter.transactEx("HotCounter-1", add, {
    idempotencyKey: "new",
    mayRepeat: true,
  });
  assert.equal(fresh.duplicate, false);
  assert.deepEqual(reads, [undefined, 1_000, 201]);
  // Without mayRepeat, a key past the window is not recognised (the window's documented limit).
  const blind = await counter.transactEx("HotCounter-1", add, { idempotencyKey: "mine" });
  assert.equal(blind.duplicate, false);
  assert.equal(await counter.query("HotCounter-1", (t) => t), 1_203);
});
