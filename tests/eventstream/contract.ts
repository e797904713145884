// The storage contract, run against every backend (memory, files): the same assertions, so that
// the service and the source can rely on any of them alike.
import assert from "node:assert/strict";
import { InvalidArgumentError } from "../../core/errors.ts";
import {
  AppendConflictError,
  type EventStorage,
  StorageClosedError,
} from "../../eventstream/mod.ts";

/** A backend under test: `open` gives fresh storage, `reopen` the same stream again. */
export interface Backend {
  readonly name: string;
  open(
    events?: readonly unknown[],
  ): Promise<{ storage: EventStorage; reopen(): Promise<EventStorage> }>;
}

export function contract(backend: Backend): void {
  const t = (what: string, fn: () => Promise<void>) =>
    Deno.test(`${backend.name} storage: ${what}`, fn);

  t("starts empty, appends number from 1, reads in order", async () => {
    const { storage } = await backend.open();
    assert.equal(await storage.last(), 0);
    assert.deepEqual(await storage.read(0), []);
    assert.equal(await storage.append(0, [{ w: "a" }, { w: "b" }]), 2);
    assert.equal(await storage.append(2, [{ w: "c" }]), 3);
    assert.deepEqual(await storage.read(0), [
      { seq: 1, event: { w: "a" } },
      { seq: 2, event: { w: "b" } },
      { seq: 3, event: { w: "c" } },
    ]);
    assert.deepEqual((await storage.read(1, 1)).map((e) => e.seq), [2]);
    assert.deepEqual(await storage.read(3), []);
    await storage.close();
  });

  t("an append at a stale position is a conflict and writes nothing", async () => {
    const { storage } = await backend.open(["x"]);
    await assert.rejects(storage.append(0, ["y"]), (e: unknown) => {
      assert.ok(e instanceof AppendConflictError);
      assert.equal(e.expected, 0);
      assert.equal(e.actual, 1);
      return true;
    });
    await assert.rejects(storage.append(5, ["y"]), AppendConflictError);
    assert.deepEqual((await storage.read(0)).map((e) => e.event), ["x"]);
    assert.equal(await storage.append(1, []), 1);
    await storage.close();
  });

  t("concurrent appends at the same position: exactly one wins", async () => {
    const { storage } = await backend.open();
    const results = await Promise.allSettled(
      Array.from({ length: 5 }, (_, i) => storage.append(0, [i])),
    );
    assert.equal(results.filter((r) => r.status === "fulfilled").length, 1);
    for (const r of results) {
      if (r.status === "rejected") assert.ok(r.reason instanceof AppendConflictError);
    }
    assert.equal(await storage.last(), 1);
    await storage.close();
  });

  t("starts from given events and keeps them across a reopen", async () => {
    const { storage, reopen } = await backend.open([1, "two", { three: [3] }, null]);
    assert.equal(await storage.last(), 4);
    await storage.append(4, [5]);
    await storage.close();
    const again = await reopen();
    assert.deepEqual((await again.read(0)).map((e) => e.event), [
      1,
      "two",
      { three: [3] },
      null,
      5,
    ]);
    await again.close();
  });

  t("pages through many appends", async () => {
    const { storage } = await backend.open();
    let last = 0;
    for (let i = 0; i < 300; i++) last = await storage.append(last, [i, `${i}`]);
    assert.equal(last, 600);
    const seen: number[] = [];
    for (let after = 0;;) {
      const page = await storage.read(after, 77);
      if (page.length === 0) break;
      assert.ok(page.length <= 77);
      for (const e of page) seen.push(e.seq);
      after = page.at(-1)!.seq;
    }
    assert.deepEqual(seen, Array.from({ length: 600 }, (_, i) => i + 1));
    await storage.close();
  });

  t("bad input is a typed error naming it", async () => {
    const { storage } = await backend.open();
    await assert.rejects(
      storage.append(-1, [1]),
      (e: unknown) => e instanceof InvalidArgumentError && e.field === "after",
    );
    await assert.rejects(
      storage.append(0, [1n]),
      (e: unknown) => e instanceof InvalidArgumentError && e.field === "events[0]",
    );
    await assert.rejects(storage.append(0, [undefined]), InvalidArgumentError);
    await assert.rejects(
      storage.read(0, 0),
      (e: unknown) => e instanceof InvalidArgumentError && e.field === "maxCount",
    );
    assert.equal(await storage.last(), 0);
    await storage.close();
    await assert.rejects(storage.read(0), StorageClosedError);
    await assert.rejects(storage.append(0, [1]), StorageClosedError);
  });
}
