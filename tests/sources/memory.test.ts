// The in-memory event store and its source: appends with expected versions, reads, and the
// source's batches, category filter, start positions and checkpoints, alone and in a pipeline.
import assert from "node:assert/strict";
import {
  type Batch,
  ImpelError,
  InvalidArgumentError,
  InvalidStreamNameError,
  run,
  streamsSink,
  WrongExpectedVersionError,
} from "../../mod.ts";
import { memoryCheckpoints } from "../../checkpoints/memory.ts";
import {
  createMemoryStore,
  MEMORY_TRANCHE,
  memorySource,
  type MemorySourceOptions,
  type MemoryStore,
} from "../../sources/memory.ts";
import { handleToTail, test } from "../support/core.ts";

const e = (data: unknown, type = "T") => ({ type, data });
const summary = (b: Batch) => ({
  position: b.position,
  isTail: b.isTail,
  items: b.items.map((i) => `${i.stream}@${i.event.index}`),
});

/** Runs a pipeline over `options` until it is at the tail; returns what the handler saw. */
const handleAll = (options: MemorySourceOptions): Promise<string[]> =>
  handleToTail(() => memorySource(options), { timeoutMs: 2000 });

test("memory store: appends with expected versions", async (t) => {
  await t.step(
    "a new stream is at version 0; events get indexes, ids, times and sizes",
    async () => {
      const store = createMemoryStore();
      const before = Date.now();
      const r = await store.append("Order-1", [
        {
          type: "Placed",
          data: { total: 3 },
          meta: { user: "u" },
          correlationId: "c",
          causationId: "k",
        },
        { type: "Paid", data: "abc", id: "my-id" },
      ], 0);
      assert.equal(r.nextIndex, 2);
      const [placed, paid] = await store.readStream("Order-1");
      assert.equal(placed.index, 0);
      assert.equal(placed.type, "Placed");
      assert.deepEqual(placed.data, { total: 3 });
      assert.deepEqual(placed.meta, { user: "u" });
      assert.equal(placed.correlationId, "c");
      assert.equal(placed.causationId, "k");
      assert.match(placed.id, /^[0-9a-f-]{36}$/);
      assert.ok(placed.time instanceof Date && placed.time.getTime() >= before);
      assert.equal(
        placed.size,
        JSON.stringify({ total: 3 }).length + JSON.stringify({ user: "u" }).length,
      );
      assert.equal(paid.index, 1);
      assert.equal(paid.id, "my-id");
      assert.equal(paid.meta, null, "no meta reads as null");
      assert.equal(paid.size, 3);
      assert.equal(store.head, 2);
    },
  );

  await t.step(
    "a wrong expected version is a WrongExpectedVersionError and appends nothing",
    async () => {
      const store = createMemoryStore();
      await store.append("Order-1", [e(0)], 0);
      for (const expected of [0, 2]) {
        await assert.rejects(store.append("Order-1", [e(1)], expected), (err: unknown) => {
          assert.ok(err instanceof WrongExpectedVersionError);
          assert.equal(err.code, "WrongExpectedVersion");
          assert.equal(err.stream, "Order-1");
          assert.equal(err.expected, expected);
          assert.equal(err.actual, 1);
          return true;
        });
      }
      assert.equal(store.head, 1);
      assert.equal((await store.readStream("Order-1")).length, 1);
    },
  );

  await t.step("of two appends racing at the same version, exactly one wins", async () => {
    const store = createMemoryStore();
    const results = await Promise.allSettled([
      store.append("Order-1", [e("a")], 0),
      store.append("Order-1", [e("b")], 0),
    ]);
    assert.deepEqual(results.map((r) => r.status).sort(), ["fulfilled", "rejected"]);
    const lost = results.find((r) => r.status === "rejected") as PromiseRejectedResult;
    assert.ok(lost.reason instanceof WrongExpectedVersionError);
    assert.equal(store.head, 1);
  });

  await t.step('"any" appends whatever the version', async () => {
    const store = createMemoryStore();
    await store.append("Order-1", [e(0)], "any");
    const r = await store.append("Order-1", [e(1), e(2)], "any");
    assert.equal(r.nextIndex, 3);
  });

  await t.step("an empty append checks the version and changes nothing", async () => {
    const store = createMemoryStore();
    let notified = 0;
    store.subscribe(() => notified++);
    assert.deepEqual(await store.append("Order-1", [], 0), { nextIndex: 0 });
    await assert.rejects(store.append("Order-1", [], 3), WrongExpectedVersionError);
    assert.equal(store.head, 0);
    assert.equal(notified, 0);
  });

  await t.step("bad input is rejected with typed errors, before anything is appended", async () => {
    const store = createMemoryStore();
    await assert.rejects(store.append("nodash", [e(0)], 0), InvalidStreamNameError);
    await assert.rejects(store.append("Order-1", "x" as never, 0), InvalidArgumentError);
    await assert.rejects(
      store.append("Order-1", [e(0), { type: "", data: 1 }], 0),
      (err: unknown) => {
        assert.ok(err instanceof InvalidArgumentError);
        assert.match(err.field, /events\[1\]/);
        return true;
      },
    );
    await assert.rejects(store.append("Order-1", [null as never], 0), InvalidArgumentError);
    for (const v of [-1, 1.5, "0", null]) {
      await assert.rejects(store.append("Order-1", [e(0)], v as never), (err: unknown) => {
        assert.ok(err instanceof InvalidArgumentError, `expectedVersion ${v}: ${err}`);
        assert.equal(err.field, "expectedVersion");
        return true;
      });
    }
    assert.equal(store.head, 0, "nothing was appended");
  });
});

test("memory store: reads", async () => {
  const store = createMemoryStore();
  await store.append("Order-1", [e(0), e(1), e(2), e(3)], 0);
  await store.append("Order-2", [e(0, "Other")], 0);
  assert.deepEqual(
    (await store.readStream("Order-1", { fromIndex: 1, maxCount: 2 })).map((x) => x.index),
    [1, 2],
  );
  assert.deepEqual((await store.readStream("Order-1", { fromIndex: 9 })).map((x) => x.index), []);
  assert.deepEqual(await store.readStream("Order-9"), []);
  await assert.rejects(store.readStream("Order"), InvalidStreamNameError);
  await assert.rejects(store.readStream("Order-1", { fromIndex: -1 }), InvalidArgumentError);
  await assert.rejects(store.readStream("Order-1", { maxCount: 0.5 }), InvalidArgumentError);
  assert.equal((await store.readLastEvent("Order-1"))?.index, 3);
  assert.equal(await store.readLastEvent("Order-1", "Other"), undefined);
  assert.equal((await store.readLastEvent("Order-2", "Other"))?.index, 0);
  assert.deepEqual(store.readLog(3, 5).map((x) => `${x.stream}@${x.event.index}:${x.category}`), [
    "Order-1@3:Order",
    "Order-2@0:Order",
  ]);
});

test("memory source: batches of the global log", async (t) => {
  await t.step(
    "from the start, in batches of maxBatchSize, with log positions; then waits for commits",
    async () => {
      const store = createMemoryStore();
      await store.append("A-1", [e(0), e(1)], 0);
      await store.append("B-1", [e(0)], 0);
      await store.append("A-1", [e(2), e(3)], 2);
      const reader = memorySource({ store, maxBatchSize: 2 }).getReader();
      const got = [];
      for (let i = 0; i < 3; i++) got.push(summary((await reader.read()).value!));
      assert.deepEqual(got, [
        { position: 2n, isTail: false, items: ["A-1@0", "A-1@1"] },
        { position: 4n, isTail: false, items: ["B-1@0", "A-1@2"] },
        { position: 5n, isTail: true, items: ["A-1@3"] },
      ]);
      const next = reader.read();
      await store.append("B-1", [e(1)], 1);
      assert.deepEqual(summary((await next).value!), {
        position: 6n,
        isTail: true,
        items: ["B-1@1"],
      });
      await reader.cancel();
    },
  );

  await t.step("an empty store says at once that it is at the tail", async () => {
    const reader = memorySource({ store: createMemoryStore() }).getReader();
    const first = (await reader.read()).value!;
    assert.deepEqual(summary(first), { position: 0n, isTail: true, items: [] });
    assert.equal(first.tranche, MEMORY_TRANCHE);
    await reader.cancel();
  });

  await t.step("a cancelled source stops listening to the store", async () => {
    const store = createMemoryStore();
    let listeners = 0;
    const watched: MemoryStore = Object.assign(Object.create(store), {
      subscribe(listener: () => void) {
        listeners++;
        const unsubscribe = store.subscribe(listener);
        return () => {
          listeners--;
          unsubscribe();
        };
      },
    });
    const reader = memorySource({ store: watched }).getReader();
    await reader.read();
    const pending = reader.read();
    assert.equal(listeners, 1);
    await reader.cancel();
    assert.equal((await pending).done, true);
    assert.equal(listeners, 0);
  });
});

test("memory source: category filter", async () => {
  const store = createMemoryStore();
  const checkpoints = memoryCheckpoints();
  await store.append("Order-1", [e(0)], 0);
  await store.append("Invoice-1", [e(0)], 0);
  await store.append("Order-2", [e(0), e(1)], 0);
  await store.append("Shipment-1", [e(0)], 0);
  await store.append("Invoice-1", [e(1)], 1);
  const seen = await handleAll({
    store,
    checkpoints,
    group: "g",
    categories: ["Order", "Shipment"],
  });
  assert.deepEqual(seen.sort(), ["Order-1@0", "Order-2@0", "Order-2@1", "Shipment-1@0"]);
  // Filtered-out entries still move the checkpoint, up to the last one.
  assert.equal(
    await checkpoints.load({ source: "memory", tranche: MEMORY_TRANCHE, group: "g" }),
    6n,
  );
  assert.throws(() => memorySource({ store, categories: ["Order-1"] }), InvalidStreamNameError);
});

test("memory source: start positions and checkpoints", async (t) => {
  const key = { source: "orders", tranche: MEMORY_TRANCHE, group: "g" };
  const setup = async () => {
    const store = createMemoryStore();
    const checkpoints = memoryCheckpoints();
    await store.append("A-1", [e(0), e(1), e(2)], 0);
    await store.append("B-1", [e(0)], 0);
    await checkpoints.commit(key, 2n);
    return { store, checkpoints };
  };

  await t.step(
    '"checkpoint" (the default) resumes from the committed position, under the source\'s name',
    async () => {
      const { store, checkpoints } = await setup();
      assert.deepEqual(await handleAll({ store, checkpoints, group: "g", name: "orders" }), [
        "A-1@2",
        "B-1@0",
      ]);
      assert.equal(await checkpoints.load(key), 4n);
    },
  );

  await t.step('"checkpoint" without a checkpoint starts at the beginning', async () => {
    const { store, checkpoints } = await setup();
    const seen = await handleAll({ store, checkpoints, group: "other", name: "orders" });
    assert.deepEqual(seen, ["A-1@0", "A-1@1", "A-1@2", "B-1@0"]);
    assert.equal(
      await checkpoints.load({ ...key, group: "other" }),
      4n,
      "each group has its own checkpoint",
    );
    assert.equal(await checkpoints.load(key), 2n);
  });

  await t.step('"start" ignores the checkpoint', async () => {
    const { store, checkpoints } = await setup();
    const seen = await handleAll({
      store,
      checkpoints,
      group: "g",
      name: "orders",
      startFrom: "start",
    });
    assert.deepEqual(seen, ["A-1@0", "A-1@1", "A-1@2", "B-1@0"]);
  });

  await t.step('"tail" sees only what is appended after it starts', async () => {
    const { store, checkpoints } = await setup();
    const seen: string[] = [];
    const sink = streamsSink({
      statsIntervalMs: 0,
      handler: (stream, events) => void seen.push(...events.map((x) => `${stream}@${x.index}`)),
    });
    const ac = new AbortController();
    const running = run(
      memorySource({ store, checkpoints, group: "g", name: "orders", startFrom: "tail" }),
      sink,
      {
        signal: ac.signal,
      },
    );
    try {
      await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 2000 });
      await store.append("A-1", [e(3)], 3);
      await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 2000 });
    } finally {
      ac.abort();
      await running;
    }
    assert.deepEqual(seen, ["A-1@3"]);
    assert.equal(await checkpoints.load(key), 5n);
  });

  await t.step(
    "without a checkpoint store nothing is committed and reading starts at the beginning",
    async () => {
      const { store } = await setup();
      assert.deepEqual(await handleAll({ store }), ["A-1@0", "A-1@1", "A-1@2", "B-1@0"]);
    },
  );

  await t.step(
    "a checkpoint beyond any possible log position fails the pipeline with a typed error",
    async () => {
      const { store, checkpoints } = await setup();
      await checkpoints.commit(key, 2n ** 60n);
      const sink = streamsSink({ statsIntervalMs: 0, handler: () => {} });
      await assert.rejects(
        run(memorySource({ store, checkpoints, group: "g", name: "orders" }), sink),
        (err: unknown) => err instanceof ImpelError && err.code === "InvalidCheckpoint",
      );
    },
  );
});

test("memory source: invalid options are typed errors", () => {
  const store = createMemoryStore();
  const cases: Array<[string, Partial<MemorySourceOptions>]> = [
    ["store", { store: {} as never }],
    ["store", { store: undefined as never }],
    ["maxBatchSize", { maxBatchSize: 0 }],
    ["maxBatchSize", { maxBatchSize: 2.5 }],
    ["startFrom", { startFrom: "end" as never }],
  ];
  for (const [field, override] of cases) {
    assert.throws(() => memorySource({ store, ...override }), (err: unknown) => {
      assert.ok(err instanceof InvalidArgumentError, `${JSON.stringify(override)}: ${err}`);
      assert.equal(err.field, field);
      return true;
    });
  }
});
