// The behaviour every EventStore must have, registered as tests for one store (not a test file
// itself): appends at an expected version with typed conflicts, reads by index, "any", empty
// appends, concurrent writers, bad input refused before anything is written. Used by
// tests/stores/contract.test.ts (memory, MessageDB, DynamoDB) and tests/stores/cosmos.test.ts.
import assert from "node:assert/strict";
import { InvalidArgumentError } from "../../core/errors.ts";
import { type EventStore, WrongExpectedVersionError } from "../../core/store.ts";
import { InvalidStreamNameError } from "../../core/streamName.ts";

/** A store under test and how to clean up after it. */
export interface StoreFixture {
  readonly store: EventStore;
  close(): PromiseLike<void> | void;
}

/** Deno.test options for the suite's tests (a real server's client keeps sockets open). */
export interface ContractOptions {
  readonly sanitizeOps?: boolean;
  readonly sanitizeResources?: boolean;
}

let streams = 0;
/** A stream name no other test of the run uses. */
const fresh = (category = "Contract") =>
  `${category}-${Date.now().toString(36)}_${(streams++).toString(36)}_${
    crypto.randomUUID().slice(0, 8)
  }`;

/** Registers the contract tests for the store `make` creates (a fresh one each time). */
export function eventStoreContract(
  name: string,
  make: () => Promise<StoreFixture>,
  options: ContractOptions = {},
): void {
  const test = (title: string, fn: (store: EventStore) => Promise<void>) =>
    Deno.test({
      name: `event store contract (${name}): ${title}`,
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

  test("append then read back keeps order, types, data, metadata and ids", async (store) => {
    const s = fresh();
    const before = Date.now();
    const id = crypto.randomUUID(); // MessageDB takes only UUIDs
    const r1 = await store.append(s, [
      {
        type: "Placed",
        data: { total: 3, items: ["a", "é"] },
        meta: { user: "u" },
        id,
        correlationId: "c",
        causationId: "z",
      },
      { type: "Paid", data: "text" },
    ], 0);
    assert.equal(r1.nextIndex, 2);
    const r2 = await store.append(s, [{ type: "Shipped", data: 7 }], 2);
    assert.equal(r2.nextIndex, 3);
    const events = await store.readStream(s);
    assert.deepEqual(events.map((e) => [e.index, e.type]), [[0, "Placed"], [1, "Paid"], [
      2,
      "Shipped",
    ]]);
    assert.deepEqual(events.map((e) => e.data), [{ total: 3, items: ["a", "é"] }, "text", 7]);
    // Some stores keep the correlation and causation ids in the metadata too (MessageDB).
    assert.equal((events[0].meta as Record<string, unknown>).user, "u");
    assert.equal(events[1].meta ?? undefined, undefined);
    assert.equal(events[0].id, id);
    assert.equal(events[0].correlationId, "c");
    assert.equal(events[0].causationId, "z");
    assert.equal(events[1].correlationId ?? undefined, undefined);
    assert.ok(typeof events[1].id === "string" && events[1].id.length > 0, "a generated id");
    assert.notEqual(events[1].id, events[2].id);
    for (const e of events) {
      assert.ok(e.time instanceof Date && Math.abs(e.time.getTime() - before) < 60_000);
      assert.ok(e.size >= 0);
    }
    assert.ok(events[0].size > 0, "a body has a size");
    assert.deepEqual(await store.readStream(fresh()), [], "an absent stream reads empty");
  });

  test("reads from an index inside an append, with maxCount, past the end", async (store) => {
    const s = fresh();
    await store.append(s, [0, 1, 2, 3].map((n) => ({ type: "T", data: n })), 0);
    await store.append(s, [4, 5, 6].map((n) => ({ type: "T", data: n })), 4);
    const from2 = await store.readStream(s, { fromIndex: 2 });
    assert.deepEqual(from2.map((e) => [e.index, e.data]), [[2, 2], [3, 3], [4, 4], [5, 5], [6, 6]]);
    const some = await store.readStream(s, { fromIndex: 3, maxCount: 2 });
    assert.deepEqual(some.map((e) => e.index), [3, 4]);
    assert.deepEqual((await store.readStream(s, { maxCount: 1 })).map((e) => e.index), [0]);
    assert.deepEqual(await store.readStream(s, { fromIndex: 7 }), []);
    assert.deepEqual(await store.readStream(s, { fromIndex: 100 }), []);
    assert.deepEqual(await store.readStream(s, { maxCount: 0 }), []);
  });

  test("a long stream of many appends reads back whole and in order", async (store) => {
    const s = fresh();
    let version = 0;
    for (let k = 0; k < 40; k++) {
      const events = Array.from(
        { length: 1 + (k % 3) },
        (_, j) => ({ type: "N", data: version + j }),
      );
      version = (await store.append(s, events, version)).nextIndex;
    }
    const events = await store.readStream(s);
    assert.equal(events.length, version);
    assert.ok(events.every((e, k) => e.index === k && e.data === k), "contiguous, in order");
    const tail = await store.readStream(s, { fromIndex: version - 5 });
    assert.deepEqual(tail.map((e) => e.index), [0, 1, 2, 3, 4].map((k) => version - 5 + k));
  });

  test("a wrong expected version is a typed conflict with the actual version and writes nothing", async (store) => {
    const s = fresh();
    await store.append(s, [{ type: "A", data: 1 }, { type: "B", data: 2 }], 0);
    for (const expected of [0, 1, 3, 10]) {
      await assert.rejects(
        () => store.append(s, [{ type: "X", data: expected }], expected),
        (e: unknown) => {
          assert.ok(e instanceof WrongExpectedVersionError, `expected ${expected}: ${e}`);
          assert.equal(e.stream, s);
          assert.equal(e.expected, expected);
          if (e.actual !== undefined) assert.equal(e.actual, 2);
          return true;
        },
      );
    }
    assert.deepEqual((await store.readStream(s)).map((e) => e.type), ["A", "B"]);
    await assert.rejects(
      () => store.append(fresh(), [{ type: "X", data: 0 }], 1),
      WrongExpectedVersionError,
      "an absent stream is at version 0",
    );
  });

  test('"any" appends wherever the stream is; an empty append checks the version', async (store) => {
    const s = fresh();
    assert.equal((await store.append(s, [{ type: "A", data: 0 }], "any")).nextIndex, 1);
    assert.equal((await store.append(s, [{ type: "B", data: 1 }], "any")).nextIndex, 2);
    assert.equal((await store.append(s, [{ type: "C", data: 2 }], 2)).nextIndex, 3);
    assert.deepEqual((await store.readStream(s)).map((e) => e.type), ["A", "B", "C"]);
    assert.equal((await store.append(s, [], 3)).nextIndex, 3);
    assert.equal((await store.append(s, [], "any")).nextIndex, 3);
    await assert.rejects(() => store.append(s, [], 1), WrongExpectedVersionError);
    assert.equal((await store.append(fresh(), [], 0)).nextIndex, 0);
    assert.equal((await store.readStream(s)).length, 3);
  });

  test("of concurrent appends at one version exactly one wins; the rest conflict", async (store) => {
    const s = fresh();
    await store.append(s, [{ type: "Start", data: 0 }], 0);
    const writers = 6;
    const results = await Promise.allSettled(
      Array.from({ length: writers }, (_, k) => store.append(s, [{ type: "W", data: k }], 1)),
    );
    const won = results.filter((r) => r.status === "fulfilled");
    assert.equal(won.length, 1, "exactly one winner");
    for (const r of results) {
      if (r.status === "rejected") {
        assert.ok(r.reason instanceof WrongExpectedVersionError, `${r.reason}`);
      }
    }
    const events = await store.readStream(s);
    assert.equal(events.length, 2);
    // "any" writers all land, each at its own index.
    await Promise.all(
      Array.from({ length: 4 }, (_, k) => store.append(s, [{ type: "Any", data: k }], "any")),
    );
    const after = await store.readStream(s);
    assert.equal(after.length, 6);
    assert.deepEqual(after.slice(2).map((e) => e.data).sort(), [0, 1, 2, 3]);
  });

  test("bad input is refused with a typed error before anything is written", async (store) => {
    const s = fresh();
    await store.append(s, [{ type: "A", data: 0 }], 0);
    const refuse = async (
      what: string,
      fn: () => Promise<unknown>,
      type: new (...a: never[]) => Error,
    ) => {
      await assert.rejects(fn, (e: unknown) => {
        assert.ok(e instanceof type, `${what}: got ${e}`);
        return true;
      });
    };
    await refuse(
      "no dash",
      () => store.append("nodash", [{ type: "A", data: 0 }], 0),
      InvalidStreamNameError,
    );
    await refuse("empty id", () => store.readStream("Cat-"), InvalidStreamNameError);
    await refuse(
      "events not an array",
      () => store.append(s, "x" as never, 1),
      InvalidArgumentError,
    );
    await refuse(
      "empty type",
      () => store.append(s, [{ type: "", data: 0 }], 1),
      InvalidArgumentError,
    );
    await refuse("no type", () => store.append(s, [{ data: 0 } as never], 1), InvalidArgumentError);
    await refuse(
      "bigint data",
      () => store.append(s, [{ type: "B", data: 1n }], 1),
      InvalidArgumentError,
    );
    const cycle: Record<string, unknown> = {};
    cycle.self = cycle;
    await refuse(
      "cyclic meta",
      () => store.append(s, [{ type: "B", data: 0, meta: cycle }], 1),
      InvalidArgumentError,
    );
    await refuse(
      "one bad event of several",
      () => store.append(s, [{ type: "B", data: 0 }, { type: "C", data: 2n }], 1),
      InvalidArgumentError,
    );
    await refuse(
      "negative version",
      () => store.append(s, [{ type: "B", data: 0 }], -1),
      InvalidArgumentError,
    );
    await refuse(
      "fractional version",
      () => store.append(s, [{ type: "B", data: 0 }], 1.5),
      InvalidArgumentError,
    );
    await refuse(
      "version as text",
      () => store.append(s, [{ type: "B", data: 0 }], "1" as never),
      InvalidArgumentError,
    );
    await refuse(
      "negative fromIndex",
      () => store.readStream(s, { fromIndex: -1 }),
      InvalidArgumentError,
    );
    await refuse(
      "negative maxCount",
      () => store.readStream(s, { maxCount: -2 }),
      InvalidArgumentError,
    );
    assert.deepEqual((await store.readStream(s)).map((e) => e.type), ["A"], "nothing was written");
    assert.equal(
      (await store.append(s, [{ type: "B", data: 1 }], 1)).nextIndex,
      2,
      "still writable",
    );
  });
}
