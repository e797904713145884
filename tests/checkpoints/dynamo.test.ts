// DynamoDB checkpoints against DynamoDB Local (start it with `tools/dynamodb.sh start`).
import assert from "node:assert/strict";
import { InternalServerError } from "@aws-sdk/client-dynamodb";
import { ImpelError } from "../../core/errors.ts";
import { dynamoCheckpoints, type DynamoClient } from "../../checkpoints/dynamo.ts";
import { client, freshTables, opts } from "../support/dynamo.ts";

async function table() {
  const t = await freshTables({ tableName: "checkpoints" });
  return { ...t, store: dynamoCheckpoints(client, { tableName: t.tableName }) };
}

Deno.test("dynamo checkpoints: commit, load, never backwards, reset", opts, async () => {
  await using t = await table();
  const { store } = t;
  const key = { source: "dynamo:idx", tranche: "0", group: "g" };
  assert.equal(await store.load(key), undefined);
  await store.commit(key, 5n);
  assert.equal(await store.load(key), 5n);
  await store.commit(key, 3n);
  assert.equal(await store.load(key), 5n, "a lower position is ignored");
  await store.commit(key, 5n);
  // Positions beyond 2^53 stay exact.
  const big = 9_007_199_254_740_993n * 1000n + 7n;
  await store.commit(key, big);
  assert.equal(await store.load(key), big);
  await store.reset(key, 2n);
  assert.equal(await store.load(key), 2n, "reset moves backwards");
  await store.commit(key, 1n);
  assert.equal(await store.load(key), 2n);
  await store.reset(key, undefined);
  assert.equal(await store.load(key), undefined);
  await store.commit(key, 1n);
  assert.equal(await store.load(key), 1n);
});

Deno.test("dynamo checkpoints: racing commits settle on the highest", opts, async () => {
  await using t = await table();
  const { store } = t;
  const key = { source: "s", tranche: "t", group: "g" };
  const positions = Array.from({ length: 40 }, (_, k) => BigInt((k * 7919) % 40));
  await Promise.all(positions.map((p) => store.commit(key, p)));
  assert.equal(await store.load(key), 39n);
});

Deno.test("dynamo checkpoints: keys are separate and list by source and group", opts, async () => {
  await using t = await table();
  const { store } = t;
  await store.commit({ source: "a", tranche: "0", group: "g" }, 1n);
  await store.commit({ source: "a", tranche: "1", group: "g" }, 2n);
  await store.commit({ source: "a", tranche: "0", group: "g2" }, 3n);
  // A group whose name starts like another's is not mixed up with it.
  await store.commit({ source: "a", tranche: "0", group: 'g"' }, 4n);
  await store.commit({ source: "b", tranche: "0", group: "g" }, 5n);
  const byGroup = (await store.list("a", "g")).map((x) => [x.tranche, x.group, x.position]).sort();
  assert.deepEqual(byGroup, [["0", "g", 1n], ["1", "g", 2n]]);
  const all = (await store.list("a")).map((x) => [x.tranche, x.group, x.position]).sort();
  assert.deepEqual(all, [["0", 'g"', 4n], ["0", "g", 1n], ["0", "g2", 3n], ["1", "g", 2n]]);
  assert.equal(await store.load({ source: "b", tranche: "0", group: "g" }), 5n);
  assert.deepEqual(await store.list("c"), []);
});

Deno.test(
  "dynamo checkpoints: bad keys and positions, and a missing table, fail with typed errors",
  opts,
  async () => {
    await using t = await table();
    const { store } = t;
    await assert.rejects(
      () => store.commit({ source: "", tranche: "0", group: "g" }, 1n),
      ImpelError,
    );
    await assert.rejects(
      () => store.commit({ source: "s", tranche: "0", group: "g" }, -1n),
      ImpelError,
    );
    const missing = dynamoCheckpoints(client, { tableName: `missing-${crypto.randomUUID()}` });
    await assert.rejects(
      () => missing.load({ source: "s", tranche: "0", group: "g" }),
      (e) => e instanceof ImpelError && e.code === "DynamoCheckpoint",
    );
  },
);

Deno.test(
  "dynamo checkpoints: a [group, tranche] over the 1 024-byte sort key is keyed by digest",
  opts,
  async () => {
    await using t = await table();
    const { store } = t;
    // A partition id the indexer accepts (1 020 bytes), and a long group.
    const tranche = "Tenant".padEnd(1020, "t");
    const group = "g".repeat(1100);
    const keys = [
      { source: "s", tranche, group: "g" },
      { source: "s", tranche: "0", group },
      { source: "s", tranche, group },
      { source: "s", tranche: "0", group: "g" },
    ];
    for (const [k, key] of keys.entries()) await store.commit(key, BigInt(k + 1));
    for (const [k, key] of keys.entries()) assert.equal(await store.load(key), BigInt(k + 1));
    await store.commit(keys[0], 0n);
    assert.equal(await store.load(keys[0]), 1n, "never backwards");
    const pairs = (list: Array<{ group: string; tranche: string; position: bigint }>) =>
      list.map((c) => `${c.group.length}/${c.tranche.length}=${c.position}`).sort();
    assert.deepEqual(pairs(await store.list("s")), [
      "1/1020=1",
      "1/1=4",
      "1100/1020=3",
      "1100/1=2",
    ]);
    assert.deepEqual(pairs(await store.list("s", group)), ["1100/1020=3", "1100/1=2"]);
    assert.deepEqual(pairs(await store.list("s", "g")), ["1/1020=1", "1/1=4"]);
    await store.reset(keys[2], 9n);
    assert.equal(await store.load(keys[2]), 9n);
    await store.reset(keys[2], undefined);
    assert.equal(await store.load(keys[2]), undefined);
  },
);

// A deliberate fault: DynamoDB Local answers a write that waited too long on an item's lock
// with this error (seen in CI on the racing commits above); the store sends it again.
const lockTimeout = () =>
  new InternalServerError({
    message: "The request processing has failed because of an unknown error, exception or " +
      "failure. timed out waiting for a lock (will succeed in actual DynamoDB)",
    $metadata: { httpStatusCode: 500 },
  });

/** The shared client, but the first `failures` calls (or every call) fail with `error()`. */
function flaky(failures: number, error: () => Error) {
  const seen = { calls: 0 };
  const wrapped: DynamoClient = {
    send(command: object, options?: object) {
      seen.calls++;
      if (seen.calls <= failures) return Promise.reject(error());
      return client.send(command as never, options as never);
    },
  };
  return { client: wrapped, seen };
}

Deno.test(
  "dynamo checkpoints: DynamoDB Local's lock timeout (InternalServerError) is retried; a client error is not",
  opts,
  async () => {
    await using t = await table();
    const key = { source: "s", tranche: "t", group: "g" };
    const f = flaky(3, lockTimeout);
    const store = dynamoCheckpoints(f.client, { tableName: t.tableName });
    await store.commit(key, 7n);
    assert.equal(f.seen.calls, 4, "three failures, then the commit");
    assert.equal(await t.store.load(key), 7n);
    const loads = flaky(2, lockTimeout);
    assert.equal(await dynamoCheckpoints(loads.client, { tableName: t.tableName }).load(key), 7n);
    assert.equal(loads.seen.calls, 3);
    // A request DynamoDB refuses as it is fails at once, with the typed error.
    const invalid = flaky(
      Infinity,
      () =>
        Object.assign(new Error("One or more parameter values were invalid"), {
          name: "ValidationException",
          $metadata: { httpStatusCode: 400 },
        }),
    );
    await assert.rejects(
      () => dynamoCheckpoints(invalid.client, { tableName: t.tableName }).commit(key, 8n),
      (e) => e instanceof ImpelError && e.code === "DynamoCheckpoint",
    );
    assert.equal(invalid.seen.calls, 1);
    // A lock that never frees fails after a few seconds, with the last error as the cause.
    const stuck = flaky(Infinity, lockTimeout);
    const began = Date.now();
    await assert.rejects(
      () => dynamoCheckpoints(stuck.client, { tableName: t.tableName }).commit(key, 8n),
      (e) =>
        e instanceof ImpelError && e.code === "DynamoCheckpoint" &&
        e.cause instanceof InternalServerError,
    );
    const took = Date.now() - began;
    assert.ok(took >= 2_500 && took < 5_000, `gave up after ${took} ms`);
    assert.ok(stuck.seen.calls > 3, `${stuck.seen.calls} calls`);
    assert.equal(await t.store.load(key), 7n);
  },
);
