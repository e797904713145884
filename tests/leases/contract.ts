// The behaviour every LeaseStore must have, registered as tests for one store (not a test file
// itself): used by tests/leases/postgres.test.ts for the memory and PostgreSQL stores.
import assert from "node:assert/strict";
import type { LeaseStore } from "../../mod.ts";

/** A store under test and how to clean up after it. */
export interface StoreFixture {
  readonly store: LeaseStore;
  close(): Promise<void> | void;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Registers the contract tests for the store `make` creates (a fresh, empty one each time).
 * `timeScale` stretches the leases and waits (300 ms leases by default) for stores whose calls
 * take tens of ms, where a round trip could eat the default margins (Cosmos over HTTP).
 */
export function leaseStoreContract(
  name: string,
  make: () => Promise<StoreFixture>,
  options: { readonly timeScale?: number } = {},
): void {
  const scale = options.timeScale ?? 1;
  const ms = (n: number) => n * scale;
  const test = (title: string, fn: (store: LeaseStore) => Promise<void>) =>
    Deno.test(`lease store contract (${name}): ${title}`, async () => {
      const { store, close } = await make();
      try {
        await fn(store);
      } finally {
        await close();
      }
    });

  test("acquire takes a free unit once; each acquisition raises the generation", async (s) => {
    const a = await s.acquire("g", "u", "a", ms(300));
    assert.equal(a?.owner, "a");
    assert.equal(a?.generation, 1n);
    assert.equal(await s.acquire("g", "u", "b", ms(300)), undefined, "held");
    assert.equal(await s.acquire("g", "u", "a", ms(300)), undefined, "not even by its owner");
    assert.equal((await s.acquire("other", "u", "b", ms(300)))?.owner, "b", "scopes are apart");
    await sleep(ms(350));
    const b = await s.acquire("g", "u", "b", ms(300));
    assert.equal(b?.generation, 2n, "expired: taken, next generation");
  });

  test("heartbeat renews held leases of the right generation only, and lists members", async (s) => {
    const a = await s.acquire("g", "u0", "a", ms(300));
    await s.acquire("g", "u1", "a", ms(300));
    const { renewed, view } = await s.heartbeat("g", "a", ms(300), [
      { unit: "u0", generation: a!.generation },
      { unit: "u1", generation: 99n },
      { unit: "u2", generation: 1n },
    ]);
    assert.deepEqual([...renewed], ["u0"]);
    assert.ok(Math.abs(view.now - Date.now()) < 5000, "the store's clock");
    await sleep(ms(200));
    await s.heartbeat("g", "a", ms(300), [{ unit: "u0", generation: a!.generation }]);
    await sleep(ms(200)); // u0 renewed, u1 not: only u1 lapsed
    assert.equal(await s.acquire("g", "u0", "b", ms(300)), undefined);
    assert.equal((await s.acquire("g", "u1", "b", ms(300)))?.owner, "b");
    const [{ members }] = await s.list("g");
    assert.deepEqual(members.map((m) => m.member), ["a"]);
    // An expired lease is not renewed even by its owner: it must be acquired again.
    await sleep(ms(350));
    const late = await s.heartbeat("g", "a", ms(300), [{ unit: "u0", generation: a!.generation }]);
    assert.deepEqual([...late.renewed], []);
  });

  test("request marks a held unit; release frees it for anyone; leave removes the member", async (s) => {
    const a = await s.acquire("g", "u", "a", 10_000);
    await s.request("g", "u", "a"); // own unit: ignored
    let [view] = await s.list("g");
    assert.equal(view.leases[0].requestedBy, undefined);
    await s.request("g", "u", "b");
    [view] = await s.list("g");
    assert.equal(view.leases[0].requestedBy, "b");
    await s.release("g", { unit: "u", generation: a!.generation + 1n }, "a"); // wrong generation
    assert.equal(await s.acquire("g", "u", "b", 10_000), undefined);
    await s.release("g", { unit: "u", generation: a!.generation }, "b"); // not the owner
    assert.equal(await s.acquire("g", "u", "b", 10_000), undefined);
    await s.release("g", { unit: "u", generation: a!.generation }, "a");
    [view] = await s.list("g");
    assert.equal(view.leases[0].owner, undefined);
    assert.equal(view.leases[0].requestedBy, undefined);
    const b = await s.acquire("g", "u", "c", 10_000);
    assert.equal(b?.generation, 2n);
    await s.heartbeat("g", "c", 10_000, []);
    await s.leave("g", "c");
    [view] = await s.list("g");
    assert.deepEqual(view.members, []);
    assert.equal(view.leases[0].owner, "c", "leaving does not release");
    assert.deepEqual((await s.list()).map((v) => v.scope), ["g"]);
    const [empty] = await s.list("nothing-here");
    assert.deepEqual([empty.leases.length, empty.members.length], [0, 0]);
  });
}
