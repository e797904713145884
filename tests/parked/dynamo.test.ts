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
import { InvalidArgumentError } from "../../mod.ts";
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
