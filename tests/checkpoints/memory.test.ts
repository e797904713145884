import assert from "node:assert/strict";
import { type CheckpointKey, ImpelError } from "../../mod.ts";
import { memoryCheckpoints } from "../../checkpoints/memory.ts";
import { test } from "../support/core.ts";

const key = (tranche = "0", group = "g", source = "memory"): CheckpointKey => ({
  source,
  tranche,
  group,
});

function assertCode(code: string) {
  return (e: unknown) => {
    assert.ok(e instanceof ImpelError, `expected an ImpelError, got ${e}`);
    assert.equal(e.code, code);
    return true;
  };
}

test("load of an unknown key is undefined; commit then load returns it", async () => {
  const store = memoryCheckpoints();
  assert.equal(await store.load(key()), undefined);
  await store.commit(key(), 10n);
  assert.equal(await store.load(key()), 10n);
  // Position 0 is a real checkpoint, not "nothing".
  await store.commit(key("1"), 0n);
  assert.equal(await store.load(key("1")), 0n);
});

test("commit never moves a checkpoint backwards", async () => {
  const store = memoryCheckpoints();
  await store.commit(key(), 10n);
  await store.commit(key(), 5n);
  assert.equal(await store.load(key()), 10n);
  await store.commit(key(), 10n);
  assert.equal(await store.load(key()), 10n);
  await store.commit(key(), 11n);
  assert.equal(await store.load(key()), 11n);
  // Positions are exact beyond 2^53.
  await store.commit(key(), 2n ** 63n - 1n);
  await store.commit(key(), 2n ** 63n - 2n);
  assert.equal(await store.load(key()), 2n ** 63n - 1n);
});

test("reset moves backwards and removes", async () => {
  const store = memoryCheckpoints();
  await store.commit(key(), 10n);
  await store.reset(key(), 3n);
  assert.equal(await store.load(key()), 3n);
  await store.commit(key(), 4n);
  assert.equal(await store.load(key()), 4n);
  await store.reset(key(), undefined);
  assert.equal(await store.load(key()), undefined);
  await store.commit(key(), 1n);
  assert.equal(await store.load(key()), 1n);
});

test("keys are independent per source, tranche and group", async () => {
  const store = memoryCheckpoints();
  await store.commit(key("0", "g", "memory"), 1n);
  await store.commit(key("1", "g", "memory"), 2n);
  await store.commit(key("0", "h", "memory"), 3n);
  await store.commit(key("0", "g", "other"), 4n);
  // Parts that would collide under naive string joining stay distinct.
  await store.commit({ source: "a", tranche: "b-c", group: "d" }, 5n);
  await store.commit({ source: "a-b", tranche: "c", group: "d" }, 6n);
  assert.equal(await store.load(key("0", "g", "memory")), 1n);
  assert.equal(await store.load(key("1", "g", "memory")), 2n);
  assert.equal(await store.load(key("0", "h", "memory")), 3n);
  assert.equal(await store.load(key("0", "g", "other")), 4n);
  assert.equal(await store.load({ source: "a", tranche: "b-c", group: "d" }), 5n);
  assert.equal(await store.load({ source: "a-b", tranche: "c", group: "d" }), 6n);
});

test("list returns every checkpoint of a source, optionally of one group", async () => {
  const store = memoryCheckpoints();
  await store.commit(key("0", "g"), 1n);
  await store.commit(key("1", "g"), 2n);
  await store.commit(key("0", "h"), 3n);
  await store.commit(key("0", "g", "other"), 4n);
  const sort = (xs: Array<CheckpointKey & { position: bigint }>) =>
    xs.map((x) => `${x.source}/${x.tranche}/${x.group}=${x.position}`).sort();
  assert.deepEqual(sort(await store.list("memory", "g")), ["memory/0/g=1", "memory/1/g=2"]);
  assert.deepEqual(sort(await store.list("memory")), [
    "memory/0/g=1",
    "memory/0/h=3",
    "memory/1/g=2",
  ]);
  assert.deepEqual(await store.list("nothing"), []);
  await store.reset(key("1", "g"), undefined);
  assert.deepEqual(sort(await store.list("memory", "g")), ["memory/0/g=1"]);
});

test("the store keeps its own copy of keys and listed entries", async () => {
  const store = memoryCheckpoints();
  const k = { source: "memory", tranche: "0", group: "g" };
  await store.commit(k, 1n);
  k.tranche = "mutated";
  const [entry] = await store.list("memory");
  assert.equal(entry.tranche, "0");
  (entry as { position: bigint }).position = 99n;
  assert.equal(await store.load(key()), 1n);
});

test("bad keys and positions are rejected with typed errors", async (t) => {
  const store = memoryCheckpoints();
  const badKeys: unknown[] = [
    { source: "", tranche: "0", group: "g" },
    { source: "memory", tranche: "", group: "g" },
    { source: "memory", tranche: "0", group: "" },
    { source: "memory", tranche: "0" },
    { source: "memory", tranche: 0, group: "g" },
    null,
    undefined,
  ];
  // The async wrappers accept both a synchronous throw and a rejection: either is a typed error.
  await t.step("load, commit and reset reject bad keys", async () => {
    for (const k of badKeys) {
      const bad = k as CheckpointKey;
      const what = JSON.stringify(k) ?? "undefined";
      await assert.rejects(
        async () => await store.load(bad),
        assertCode("InvalidCheckpointKey"),
        what,
      );
      await assert.rejects(
        async () => await store.commit(bad, 1n),
        assertCode("InvalidCheckpointKey"),
        what,
      );
      await assert.rejects(
        async () => await store.reset(bad, 1n),
        assertCode("InvalidCheckpointKey"),
        what,
      );
    }
  });
  await t.step("the error names the missing part", async () => {
    await assert.rejects(async () => await store.commit(key("0", ""), 1n), /group/);
  });
  await t.step("commit and reset reject bad positions", async () => {
    for (const p of [-1n, 1, "1", undefined, null]) {
      const bad = p as bigint;
      await assert.rejects(
        async () => await store.commit(key(), bad),
        assertCode("InvalidPosition"),
        String(p),
      );
      if (p !== undefined) {
        await assert.rejects(
          async () => await store.reset(key(), bad),
          assertCode("InvalidPosition"),
          String(p),
        );
      }
    }
    assert.equal(await store.load(key()), undefined, "nothing was recorded by the rejected calls");
  });
});
