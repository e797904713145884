// Cosmos checkpoints against the local server (`tools/cosmos.sh start`): the shared checkpoint
// contract (with tokens), and commits fenced by the Cosmos leases of the same container: held,
// expired, taken over, released, the wrong scope or unit; renewals after fenced commits.
import assert from "node:assert/strict";
import { StaleCommitError } from "../../core/checkpoints.ts";
import { InvalidArgumentError } from "../../core/errors.ts";
import { cosmosCheckpoints } from "../../checkpoints/cosmos.ts";
import { cosmosLeases } from "../../leases/cosmos.ts";
import { freshContainer, opts } from "../support/cosmos.ts";
import { checkpointStoreContract } from "./contract.ts";

checkpointStoreContract("cosmos", async () => {
  const t = await freshContainer("checkpoints");
  return { store: cosmosCheckpoints(t.container), close: () => t[Symbol.asyncDispose]() };
}, opts);

const test = (name: string, fn: () => Promise<void>) =>
  Deno.test({ name: `cosmos checkpoints: ${name}`, ...opts, fn });

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test("fenced commits: recorded while the lease is held, refused once it lapsed or moved", async () => {
  await using t = await freshContainer("checkpoints");
  const leases = cosmosLeases(t.container);
  const checkpoints = cosmosCheckpoints(t.container);
  assert.equal(checkpoints.fenceLocation, leases.location);
  const scope = "cosmos:events/g";
  const key = { source: "cosmos:events", tranche: "range-0", group: "g" };
  const a = await leases.acquire(scope, "range-0", "a", 1_500);
  const fence = { scope, unit: "range-0", owner: "a", generation: a!.generation };
  await checkpoints.commitCheckpoint(key, { position: 10n, token: "t10" }, fence);
  assert.deepEqual(await checkpoints.loadCheckpoint(key), { position: 10n, token: "t10" });
  // The lease's etag changed with the commit: the owner still renews it.
  const beat = await leases.heartbeat(scope, "a", 1_500, [{
    unit: "range-0",
    generation: a!.generation,
  }]);
  assert.deepEqual([...beat.renewed], ["range-0"]);
  await checkpoints.commit(key, 12n, fence);
  assert.equal(await checkpoints.load(key), 12n);
  // Lapsed: refused, nothing recorded.
  await sleep(1_700);
  await assert.rejects(() => checkpoints.commit(key, 13n, fence), StaleCommitError);
  // Taken over: the old owner's commit is refused, the new owner's recorded.
  const b = await leases.acquire(scope, "range-0", "b", 5_000);
  await assert.rejects(() => checkpoints.commit(key, 14n, fence), StaleCommitError);
  const fenceB = { scope, unit: "range-0", owner: "b", generation: b!.generation };
  await checkpoints.commit(key, 15n, fenceB);
  assert.equal(await checkpoints.load(key), 15n);
  // Released: refused.
  await leases.release(scope, b!, "b");
  await assert.rejects(() => checkpoints.commit(key, 16n, fenceB), StaleCommitError);
  assert.equal(await checkpoints.load(key), 15n);
  // No lease at all for the unit.
  await assert.rejects(
    () => checkpoints.commit({ ...key, tranche: "range-9" }, 1n, { ...fenceB, unit: "range-9" }),
    StaleCommitError,
  );
});

test("fences of another scope or unit are refused as bad arguments", async () => {
  await using t = await freshContainer("checkpoints");
  const checkpoints = cosmosCheckpoints(t.container);
  const key = { source: "cosmos:events", tranche: "range-0", group: "g" };
  const fence = { scope: "cosmos:events/g", unit: "range-0", owner: "a", generation: 1n };
  await assert.rejects(
    () => checkpoints.commit(key, 1n, { ...fence, unit: "range-1" }),
    InvalidArgumentError,
  );
  await assert.rejects(
    () => checkpoints.commit(key, 1n, { ...fence, scope: "other/g" }),
    InvalidArgumentError,
  );
  await assert.rejects(
    () => checkpoints.commit(key, 1n, { ...fence, generation: -1n }),
    InvalidArgumentError,
  );
  assert.throws(() => cosmosCheckpoints(undefined as never), InvalidArgumentError);
});

test("racing fenced commits of the owner settle on the highest", async () => {
  await using t = await freshContainer("checkpoints");
  const leases = cosmosLeases(t.container);
  const checkpoints = cosmosCheckpoints(t.container);
  const scope = "cosmos:events/g";
  const key = { source: "cosmos:events", tranche: "r", group: "g" };
  const a = await leases.acquire(scope, "r", "a", 30_000);
  const fence = { scope, unit: "r", owner: "a", generation: a!.generation };
  await Promise.all(
    Array.from(
      { length: 8 },
      (_, k) => checkpoints.commitCheckpoint(key, { position: BigInt(k), token: `t${k}` }, fence),
    ),
  );
  assert.deepEqual(await checkpoints.loadCheckpoint(key), { position: 7n, token: "t7" });
});
