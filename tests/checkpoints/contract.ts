// The behaviour every CheckpointStore must have, registered as tests for one store (not a test
// file itself): commits never move a checkpoint backwards, reset may; racing commits settle on
// the highest; keys are apart and listed by source and group; exact positions past 2^53; bad keys
// and positions refused; and, for stores with `tokens`, the token kept with its position. Used by
// tests/checkpoints/contract.test.ts (memory, PostgreSQL, DynamoDB) and
// tests/checkpoints/cosmos.test.ts.
import assert from "node:assert/strict";
import { ImpelError } from "../../core/errors.ts";
import type { CheckpointStore } from "../../core/checkpoints.ts";

/** A store under test and how to clean up after it. */
export interface CheckpointFixture {
  readonly store: CheckpointStore;
  close(): PromiseLike<void> | void;
}

/** Registers the contract tests for the store `make` creates (a fresh, empty one each time). */
export function checkpointStoreContract(
  name: string,
  make: () => Promise<CheckpointFixture>,
  options: { readonly sanitizeOps?: boolean; readonly sanitizeResources?: boolean } = {},
): void {
  const test = (title: string, fn: (store: CheckpointStore) => Promise<void>) =>
    Deno.test({
      name: `checkpoint store contract (${name}): ${title}`,
      ...options,
      async fn() {
        const { store, close } = await make();
        try {
          await fn(store);
        } finally {
          await close();
        }
      },
    });

  test("commit, load, never backwards; reset may; positions past 2^53 stay exact", async (s) => {
    const key = { source: "contract:src", tranche: "0", group: "g" };
    assert.equal(await s.load(key), undefined);
    await s.commit(key, 5n);
    assert.equal(await s.load(key), 5n);
    await s.commit(key, 3n);
    assert.equal(await s.load(key), 5n, "a lower position is ignored");
    await s.commit(key, 5n);
    const big = 9_007_199_254_740_993n * 1000n + 7n;
    await s.commit(key, big);
    assert.equal(await s.load(key), big);
    await s.reset(key, 2n);
    assert.equal(await s.load(key), 2n, "reset moves backwards");
    await s.commit(key, 1n);
    assert.equal(await s.load(key), 2n);
    await s.reset(key, undefined);
    assert.equal(await s.load(key), undefined);
    await s.commit(key, 0n);
    assert.equal(await s.load(key), 0n);
  });

  test("racing commits settle on the highest", async (s) => {
    const key = { source: "contract:src", tranche: "race", group: "g" };
    const positions = Array.from({ length: 24 }, (_, k) => BigInt((k * 7919) % 24));
    await Promise.all(positions.map((p) => s.commit(key, p)));
    assert.equal(await s.load(key), 23n);
  });

  test("keys are apart and listed by source and group", async (s) => {
    await s.commit({ source: "a", tranche: "0", group: "g" }, 1n);
    await s.commit({ source: "a", tranche: "1/x?#", group: "g" }, 2n);
    await s.commit({ source: "a", tranche: "0", group: "g2" }, 3n);
    await s.commit({ source: "b", tranche: "0", group: "g" }, 4n);
    const sorted = (l: Array<{ tranche: string; group: string; position: bigint }>) =>
      l.map((c) => [c.group, c.tranche, c.position]).sort((x, y) => String(x) < String(y) ? -1 : 1);
    assert.deepEqual(sorted(await s.list("a", "g")), [["g", "0", 1n], ["g", "1/x?#", 2n]]);
    assert.deepEqual(sorted(await s.list("a")), [["g", "0", 1n], ["g", "1/x?#", 2n], [
      "g2",
      "0",
      3n,
    ]]);
    assert.deepEqual(sorted(await s.list("b", "g")), [["g", "0", 4n]]);
    assert.deepEqual(await s.list("c"), []);
    assert.equal(await s.load({ source: "a", tranche: "0", group: "g2" }), 3n);
  });

  test("bad keys and positions are refused with typed errors", async (s) => {
    const refuse = async (fn: () => Promise<unknown>, code: string) => {
      await assert.rejects(async () => await fn(), (e: unknown) => {
        assert.ok(e instanceof ImpelError, `${e}`);
        assert.equal(e.code, code);
        return true;
      });
    };
    await refuse(() => s.load({ source: "", tranche: "0", group: "g" }), "InvalidCheckpointKey");
    await refuse(
      () => s.commit({ source: "a", tranche: undefined as never, group: "g" }, 1n),
      "InvalidCheckpointKey",
    );
    await refuse(() => s.commit({ source: "a", tranche: "0", group: "g" }, -1n), "InvalidPosition");
    await refuse(
      () => s.commit({ source: "a", tranche: "0", group: "g" }, 1 as never),
      "InvalidPosition",
    );
    assert.equal(await s.load({ source: "a", tranche: "0", group: "g" }), undefined);
  });

  test("with tokens: the token is kept with its position, never moved backwards", async (s) => {
    if (!s.tokens) {
      assert.equal(s.loadCheckpoint, undefined, "loadCheckpoint only with tokens");
      return;
    }
    const key = { source: "contract:src", tranche: "t", group: "g" };
    assert.equal(await s.loadCheckpoint!(key), undefined);
    await s.commitCheckpoint!(key, { position: 10n, token: '{"c":"10"}' });
    assert.deepEqual(await s.loadCheckpoint!(key), { position: 10n, token: '{"c":"10"}' });
    assert.equal(await s.load(key), 10n);
    await s.commitCheckpoint!(key, { position: 7n, token: "older" });
    assert.deepEqual(await s.loadCheckpoint!(key), { position: 10n, token: '{"c":"10"}' });
    await s.commitCheckpoint!(key, { position: 12n, token: "x".repeat(20_000) });
    assert.equal((await s.loadCheckpoint!(key))?.token?.length, 20_000);
    await s.commit(key, 15n); // a position alone: no token
    assert.deepEqual(await s.loadCheckpoint!(key), { position: 15n });
    await s.commitCheckpoint!(key, { position: 16n, token: "t16" });
    await s.reset(key, 3n);
    assert.deepEqual(await s.loadCheckpoint!(key), { position: 3n }, "reset drops the token");
    for (const token of ["", 5 as never, "y".repeat(70_000)]) {
      await assert.rejects(
        async () => await s.commitCheckpoint!(key, { position: 20n, token }),
        (e: unknown) => e instanceof ImpelError && e.code === "InvalidCheckpoint",
      );
    }
    assert.deepEqual(await s.loadCheckpoint!(key), { position: 3n });
  });
}
