// The Cosmos lease store against the local server (`tools/cosmos.sh start`): the shared lease
// store contract, racing acquisitions (exactly one wins), members sharing units through it, long
// unit names, and bad arguments.
import assert from "node:assert/strict";
import { createLeaseMember } from "../../core/lease.ts";
import { InvalidArgumentError } from "../../core/errors.ts";
import { cosmosLeases, leaseDocumentId } from "../../leases/cosmos.ts";
import { freshContainer, opts } from "../support/cosmos.ts";
import { leaseStoreContract } from "./contract.ts";

leaseStoreContract("cosmos", async () => {
  const t = await freshContainer("leases");
  return { store: cosmosLeases(t.container), close: () => t[Symbol.asyncDispose]() };
}, { timeScale: 3 }); // calls over HTTP take tens of ms on a busy machine

const test = (name: string, fn: () => Promise<void>) =>
  Deno.test({ name: `cosmos leases: ${name}`, ...opts, fn });

test("of members racing for one unit exactly one acquires it, each generation once", async () => {
  await using t = await freshContainer("leases");
  const store = cosmosLeases(t.container);
  for (let round = 1; round <= 3; round++) {
    const got = await Promise.all(
      ["a", "b", "c", "d"].map((m) => store.acquire("g", "u", m, 200)),
    );
    const winners = got.filter((l) => l !== undefined);
    assert.equal(winners.length, 1, `round ${round}`);
    assert.equal(winners[0]!.generation, BigInt(round));
    await new Promise((r) => setTimeout(r, 250));
  }
  // Racing requests and a release keep the document whole.
  const held = await store.acquire("g", "v", "a", 10_000);
  await Promise.all([store.request("g", "v", "b"), store.request("g", "v", "c")]);
  const [view] = await store.list("g");
  const v = view.leases.find((l) => l.unit === "v")!;
  assert.equal(v.owner, "a");
  assert.ok(v.requestedBy === "b" || v.requestedBy === "c");
  await store.release("g", held!, "a");
  assert.equal((await store.acquire("g", "v", "b", 10_000))?.generation, 2n);
});

test("three members share twelve units through the store, fairly and without overlap", async () => {
  await using t = await freshContainer("leases");
  const store = cosmosLeases(t.container);
  const units = Array.from({ length: 12 }, (_, k) => `range-${k}`);
  const owner = new Map<string, string>();
  const overlaps: string[] = [];
  const members = ["m1", "m2", "m3"].map((name) =>
    createLeaseMember({
      store,
      scope: "cosmos:events/g",
      units,
      member: name,
      durationMs: 3_000,
      heartbeatMs: 300,
      handoverMs: 1_000,
      onAcquired({ unit }) {
        if (owner.has(unit)) overlaps.push(unit);
        owner.set(unit, name);
      },
      onRevoked({ unit }) {
        if (owner.get(unit) === name) owner.delete(unit);
        return Promise.resolve();
      },
    })
  );
  const running = members.map((m) => m.start());
  try {
    const deadline = Date.now() + 20_000;
    const balanced = () => {
      const counts = ["m1", "m2", "m3"].map((m) =>
        [...owner.values()].filter((o) => o === m).length
      );
      return owner.size === 12 && counts.every((c) => c === 4);
    };
    while (!balanced() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    assert.ok(balanced(), `balanced: ${JSON.stringify([...owner])}`);
    assert.deepEqual(overlaps, []);
    // One member leaves cleanly: the other two take its units.
    await members[2].stop();
    while (
      ![...owner.values()].every((o) => o !== "m3") || owner.size !== 12 && Date.now() < deadline
    ) await new Promise((r) => setTimeout(r, 100));
    assert.equal(owner.size, 12);
    assert.ok([...owner.values()].every((o) => o !== "m3"));
    assert.deepEqual(overlaps, []);
  } finally {
    await Promise.all(members.map((m) => m.stop()));
    await Promise.all(running);
  }
});

test("units of any length and characters get valid document ids", async () => {
  await using t = await freshContainer("leases");
  const store = cosmosLeases(t.container);
  for (const unit of ["a/b?c#d\\e", "€".repeat(300), '["","FF"]']) {
    const lease = await store.acquire("g/with/slashes", unit, "a", 10_000);
    assert.equal(lease?.unit, unit);
    const [view] = await store.list("g/with/slashes");
    assert.ok(view.leases.some((l) => l.unit === unit && l.owner === "a"));
  }
  assert.equal(await leaseDocumentId("0"), "l-0");
  assert.match(await leaseDocumentId("x".repeat(300)), /^lh-[0-9a-f]{64}$/);
  assert.match(store.location, /^cosmos impel_test\/leases-/);
});

test("bad arguments are refused with typed errors", async () => {
  await using t = await freshContainer("leases");
  const store = cosmosLeases(t.container);
  await assert.rejects(() => store.acquire("", "u", "a", 1000), InvalidArgumentError);
  await assert.rejects(() => store.acquire("g", "u", "a", 0), InvalidArgumentError);
  await assert.rejects(() => store.heartbeat("g", "a", 1000, "x" as never), InvalidArgumentError);
  await assert.rejects(
    () => store.release("g", { unit: "u", generation: 1 as never }, "a"),
    InvalidArgumentError,
  );
  assert.throws(() => cosmosLeases(null as never), InvalidArgumentError);
});
