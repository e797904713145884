// The park-store contract against DynamoDB Local (DYNAMODB_ENDPOINT, default
// http://127.0.0.1:8000), each case in a fresh table deleted afterwards; plus the store's own
// edges: conditional writes racing, an event too large for an item, a missing table.
import assert from "node:assert/strict";
import { DeleteTableCommand, ListTablesCommand } from "@aws-sdk/client-dynamodb";
import {
  createParkTable,
  dynamoParkStore,
  DynamoParkStoreError,
  ParkEventTooLargeError,
} from "../../parked/dynamo.ts";
import { InvalidArgumentError, ParkWritesError, run, streamsSink } from "../../mod.ts";
import { memoryCheckpoints } from "../../checkpoints/memory.ts";
import { createMemoryStore, memorySource } from "../../sources/memory.ts";
import { client, endpoint, opts } from "../support/dynamo.ts";
import { event, failure, parkStoreContract } from "./contract.ts";

const available = await client.send(new ListTablesCommand({ Limit: 1 })).then(
  () => true,
  () => false,
);
if (!available) {
  console.warn(`DynamoDB Local is not reachable at ${endpoint}: its park tests are ignored`);
}

async function freshTable() {
  const tableName = `parked-${crypto.randomUUID()}`;
  await createParkTable(client, tableName);
  return {
    tableName,
    store: dynamoParkStore(client, { tableName }),
    [Symbol.asyncDispose]: async () => {
      await client.send(new DeleteTableCommand({ TableName: tableName }));
    },
  };
}

parkStoreContract("dynamo park store", freshTable, { ignore: !available, sanitize: false });

const t = { ...opts, ignore: !available };

Deno.test({
  name: "dynamo park store: writers racing on one stream store each event once, in order",
  ...t,
  async fn() {
    await using f = await freshTable();
    await f.store.park("g", [{ stream: "A-1", events: [event(0)], failure: failure() }]);
    await Promise.all(Array.from({ length: 6 }, (_, w) =>
      f.store.park("g", [{
        stream: "A-1",
        events: Array.from({ length: 8 }, (_, i) => event(1 + w * 4 + i)),
      }])));
    const entry = (await f.store.get("g", "A-1"))!;
    const indexes = (await f.store.events("g", "A-1", entry.episode, 0, 1000)).map((e) => e.index);
    assert.deepEqual(indexes, Array.from({ length: 29 }, (_, i) => i), "all, once each, in order");
    assert.equal(entry.next, indexes.length);
    assert.equal(entry.events, indexes.length, "the count matches the items");
  },
});

Deno.test({
  name: "dynamo park store: a write racing a resolution is either resolved with it or not parked",
  ...t,
  async fn() {
    await using f = await freshTable();
    for (let round = 0; round < 10; round++) {
      const stream = `A-${round}`;
      await f.store.park("g", [{ stream, events: [event(0)], failure: failure() }]);
      const { episode } = (await f.store.get("g", stream))!;
      await f.store.request("g", stream, { action: "release", by: "t" });
      const c = await f.store.claim("g", stream, episode, { by: "s", until: Date.now() + 60_000 });
      const token = c!.claim!.token;
      const [outcomes, resolved] = await Promise.all([
        f.store.park("g", [{ stream, events: [event(1)] }]),
        f.store.resolve("g", stream, episode, { by: "s", token, expectedNext: 1 }),
      ]);
      if (outcomes[0] === "parked") {
        // Counted in the episode: the release must then see it and not resolve yet.
        const entry = await f.store.get("g", stream);
        if (resolved) assert.fail("resolved although an event was added: it would be lost");
        assert.equal(entry?.next, 2);
      } else {
        assert.ok(resolved, "not parked, so the resolution went first");
        assert.equal(resolved.resolution?.events, 1);
      }
    }
  },
});

Deno.test({
  name: "dynamo park store: an event too large for an item is a typed error; a missing table too",
  ...t,
  async fn() {
    await using f = await freshTable();
    await assert.rejects(
      f.store.park("g", [{
        stream: "A-1",
        events: [event(0, "x".repeat(400_000))],
        failure: failure(),
      }]),
      (e) => e instanceof ParkEventTooLargeError && /event 0 of A-1/.test(e.message),
    );
    const missing = dynamoParkStore(client, { tableName: `missing-${crypto.randomUUID()}` });
    await assert.rejects(
      missing.list("g"),
      (e) => e instanceof DynamoParkStoreError && e.code === "DynamoParkStore",
    );
    assert.throws(
      () => dynamoParkStore(client, { tableName: "x" }),
      (e) => e instanceof InvalidArgumentError && e.field === "tableName",
    );
  },
});

Deno.test({
  name: "dynamo park store: stream and group names beyond DynamoDB's key limits work throughout",
  ...t,
  async fn() {
    await using f = await freshTable();
    const stream = "Pay-" + "€".repeat(990); // 2974 bytes of UTF-8: over the 1024 of a sort key
    const group = "g".repeat(1000); // with the stream, over the 2048 of a partition key
    await f.store.park(group, [
      { stream, events: [event(0), event(1)], failure: failure() },
      { stream: "Short-1", events: [event(0)], failure: failure() },
    ]);
    const entry = (await f.store.get(group, stream))!;
    assert.equal(entry.stream, stream, "the name is kept whole");
    assert.equal(entry.group, group);
    assert.deepEqual(
      (await f.store.list(group)).map((e) => e.stream).sort(),
      [
        "Short-1",
        stream,
      ].sort(),
    );
    assert.deepEqual(
      (await f.store.events(group, stream, entry.episode, 0, 10)).map((e) => e.index),
      [0, 1],
    );
    await f.store.request(group, stream, { action: "skip", by: "alice", reason: "long" });
    const [pending] = await f.store.list(group, { requested: true });
    assert.equal(pending.stream, stream);
    const c = await f.store.claim(group, stream, entry.episode, {
      by: "s",
      until: Date.now() + 60_000,
    });
    const done = await f.store.resolve(group, stream, entry.episode, {
      by: "s",
      token: c!.claim!.token,
    });
    assert.equal(done?.state, "skipped");
    assert.equal((await f.store.get(group, stream))?.state, "skipped", "the history finds it");
    assert.deepEqual(
      (await f.store.list(group, { resolved: true })).map((e) => [e.stream, e.state]).sort(),
      [["Short-1", "parked"], [stream, "skipped"]].sort(),
    );
  },
});

Deno.test({
  name: "dynamo park store: error text over an item's size is cut, saying so",
  ...t,
  async fn() {
    await using f = await freshTable();
    const error = "Error: " + "é".repeat(300_000); // 600 KB of UTF-8
    await f.store.park("g", [{
      stream: "A-1",
      events: [event(0)],
      failure: { ...failure(), error },
    }]);
    const entry = (await f.store.get("g", "A-1"))!;
    assert.ok(new TextEncoder().encode(entry.error).length <= 16_000, "cut to 16 KB");
    assert.ok(entry.error.startsWith("Error: éé"), "the start is kept");
    assert.match(entry.error, /\[error text truncated: 600007 bytes\]$/);
    assert.equal(entry.events, 1);
  },
});

Deno.test({
  name:
    "dynamo park store: a write the table cannot take fails alone; the others of the call are stored",
  ...t,
  async fn() {
    await using f = await freshTable();
    const error = await f.store.park("g", [
      { stream: "A-1", events: [event(0)], failure: failure() },
      { stream: "Big-1", events: [event(0, "€".repeat(140_000))], failure: failure() }, // 420 KB
      { stream: "A-2", events: [event(0), event(1)], failure: failure() },
    ]).then(() => undefined, (e) => e);
    assert.ok(error instanceof ParkWritesError, `a ParkWritesError, got ${error}`);
    assert.deepEqual(error.outcomes, ["parked", undefined, "parked"]);
    assert.ok(error.errors[1] instanceof ParkEventTooLargeError);
    assert.match(String(error.errors[1]), /event 0 of Big-1 is 420\d{3} bytes/);
    assert.equal((await f.store.get("g", "A-1"))?.events, 1);
    assert.equal((await f.store.get("g", "A-2"))?.events, 2);
    assert.equal((await f.store.get("g", "Big-1"))?.events ?? 0, 0, "nothing of it stored");
  },
});

Deno.test({
  name:
    "dynamo park store in a sink: an event too large to park keeps its stream failing; the others park and flow",
  ...t,
  async fn() {
    await using f = await freshTable();
    const store = createMemoryStore();
    const checkpoints = memoryCheckpoints();
    await store.append("Big-1", [{ type: "T", data: "€".repeat(140_000) }], 0);
    await store.append("Pay-1", [{ type: "T", data: 1 }], 0);
    for (let i = 0; i < 20; i++) await store.append(`Order-${i}`, [{ type: "T", data: i }], 0);
    const handled = new Set<string>();
    const sink = streamsSink({
      group: "g",
      statsIntervalMs: 0,
      commitIntervalMs: 5,
      retry: { initialDelayMs: 1, maxDelayMs: 20 },
      handler: (stream) => {
        if (stream !== "Big-1" && stream !== "Pay-1") return void handled.add(stream);
        throw new Error(`poison ${stream}`);
      },
      failure: { kind: "park", maxAttempts: 1, store: f.store, pollMs: 50 },
    });
    const ac = new AbortController();
    const running = run(memorySource({ store, checkpoints, group: "g" }), sink, {
      signal: ac.signal,
    });
    try {
      const deadline = Date.now() + 10_000;
      while ((await f.store.get("g", "Pay-1"))?.events !== 1 || handled.size < 20) {
        if (Date.now() > deadline) assert.fail("Pay-1 was not parked beside Big-1");
        await new Promise((r) => setTimeout(r, 20));
      }
      await new Promise((r) => setTimeout(r, 200));
      const stats = sink.stats();
      const failing = stats.failing.find((x) => x.stream === "Big-1");
      assert.ok(failing, "Big-1 stays failing, visibly");
      assert.ok(
        failing.error instanceof ParkEventTooLargeError,
        `with the typed error, got ${failing.error}`,
      );
      assert.ok(stats.parked.storeFailing !== undefined, "and the store trouble shows");
      assert.equal((await f.store.get("g", "Big-1"))?.events ?? 0, 0, "nothing of it parked");
    } finally {
      ac.abort();
      await running;
    }
  },
});
