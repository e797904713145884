// Runs against the PostgreSQL server prepared by tools/postgres.sh (database with the MessageDB
// schema); IMPEL_PG_URL overrides the default postgres://postgres@127.0.0.1:5432/impel_test.
import assert from "node:assert/strict";
import { InvalidArgumentError } from "../../core/errors.ts";
import { WrongExpectedVersionError } from "../../core/store.ts";
import { InvalidStreamNameError } from "../../core/streamName.ts";
import { MessageDbSetupError, messageDbStore } from "../../stores/messagedb.ts";
import { poolFixture, unique } from "../support/postgres.ts";

const withPool = poolFixture({ max: 4 });

Deno.test("messagedb store: append then read keeps order, data, metadata and ids", () =>
  withPool(async (pool) => {
    const store = messageDbStore(pool);
    const stream = `${unique("Order")}-1`;
    const id = crypto.randomUUID();
    const before = Date.now();
    const first = await store.append(stream, [
      { type: "Placed", data: { total: 3, lines: ["a", "b"] }, id },
      {
        type: "Paid",
        data: [1, 2, 3],
        meta: { user: "u1" },
        correlationId: "corr",
        causationId: "cause",
      },
    ], 0);
    assert.equal(first.nextIndex, 2);
    const second = await store.append(stream, [{ type: "Shipped", data: "parcel" }], 2);
    assert.equal(second.nextIndex, 3);

    const events = await store.readStream(stream);
    assert.deepEqual(events.map((e) => [e.index, e.type]), [[0, "Placed"], [1, "Paid"], [
      2,
      "Shipped",
    ]]);
    assert.equal(events[0].id, id);
    assert.deepEqual(events[0].data, { total: 3, lines: ["a", "b"] });
    assert.equal(events[0].meta, null);
    assert.deepEqual(events[1].data, [1, 2, 3]); // an array survives as JSON, not as a PG array
    assert.deepEqual(events[1].meta, { user: "u1", correlationId: "corr", causationId: "cause" });
    assert.equal(events[1].correlationId, "corr");
    assert.equal(events[1].causationId, "cause");
    assert.equal(events[2].data, "parcel");
    // MessageDB stores UTC without a zone; the event time must not be shifted by the local zone.
    assert.ok(
      Math.abs(events[0].time.getTime() - before) < 60_000,
      `time ${events[0].time.toISOString()}`,
    );
    assert.ok(events.every((e) => e.size > 0));

    assert.deepEqual(
      (await store.readStream(stream, { fromIndex: 1, maxCount: 1 })).map((e) => e.index),
      [1],
    );
    assert.deepEqual(await store.readStream(`${unique("Order")}-none`), []);
  }));

Deno.test("messagedb store: readStream pages through long streams", () =>
  withPool(async (pool) => {
    const store = messageDbStore(pool, { readBatchSize: 7 });
    const stream = `${unique("Long")}-1`;
    await store.append(
      stream,
      Array.from({ length: 30 }, (_, i) => ({ type: "E", data: { i } })),
      0,
    );
    const all = await store.readStream(stream);
    assert.deepEqual(all.map((e) => e.index), Array.from({ length: 30 }, (_, i) => i));
    assert.deepEqual(
      all.map((e) => (e.data as { i: number }).i),
      Array.from({ length: 30 }, (_, i) => i),
    );
    const some = await store.readStream(stream, { fromIndex: 5, maxCount: 10 });
    assert.deepEqual(some.map((e) => e.index), Array.from({ length: 10 }, (_, i) => i + 5));
  }));

Deno.test("messagedb store: a wrong expected version is a typed conflict and writes nothing", () =>
  withPool(async (pool) => {
    const store = messageDbStore(pool);
    const stream = `${unique("Seat")}-12A`;
    await store.append(stream, [{ type: "Reserved", data: {} }, { type: "Held", data: {} }], 0);

    await assert.rejects(
      store.append(stream, [{ type: "A", data: {} }, { type: "B", data: {} }], 0),
      (e) =>
        e instanceof WrongExpectedVersionError && e.expected === 0 && e.actual === 2 &&
        e.stream === stream,
    );
    await assert.rejects(
      store.append(stream, [{ type: "A", data: {} }], 5),
      (e) =>
        e instanceof WrongExpectedVersionError && e.code === "WrongExpectedVersion" &&
        e.actual === 2,
    );
    // an empty append still checks the version
    await assert.rejects(store.append(stream, [], 1), WrongExpectedVersionError);
    assert.equal((await store.append(stream, [], 2)).nextIndex, 2);
    assert.equal((await store.readStream(stream)).length, 2);

    assert.equal((await store.append(stream, [{ type: "C", data: {} }], "any")).nextIndex, 3);
    assert.equal((await store.append(stream, [{ type: "D", data: {} }], 3)).nextIndex, 4);
  }));

Deno.test("messagedb store: of concurrent appends at the same version exactly one wins", () =>
  withPool(async (pool) => {
    const store = messageDbStore(pool);
    const stream = `${unique("Race")}-1`;
    const outcomes = await Promise.allSettled(
      Array.from(
        { length: 8 },
        (_, i) => store.append(stream, [{ type: "W", data: { i } }, { type: "X", data: { i } }], 0),
      ),
    );
    const won = outcomes.filter((o) => o.status === "fulfilled");
    assert.equal(won.length, 1);
    for (const o of outcomes) {
      if (o.status === "rejected") {
        assert.ok(o.reason instanceof WrongExpectedVersionError, String(o.reason));
      }
    }
    const events = await store.readStream(stream);
    assert.equal(events.length, 2);
    // both events of the winner, contiguous
    assert.deepEqual(events[0].data, events[1].data);
  }));

Deno.test("messagedb store: bad arguments are rejected before reaching the database", () =>
  withPool(async (pool) => {
    const store = messageDbStore(pool);
    await assert.rejects(
      store.append("nodash", [{ type: "T", data: {} }], 0),
      InvalidStreamNameError,
    );
    await assert.rejects(store.append("-x", [{ type: "T", data: {} }], 0), InvalidStreamNameError);
    await assert.rejects(store.readStream("Cat"), InvalidStreamNameError);
    await assert.rejects(
      store.append("Ok-1", [{ type: "T", data: {}, id: "not-a-uuid" }], 0),
      (e) => e instanceof InvalidArgumentError && e.field === "events[0].id",
    );
    await assert.rejects(store.append("Ok-1", [{ type: "", data: {} }], 0), InvalidArgumentError);
    await assert.rejects(store.append("Ok-1", [{ type: "T", data: {} }], -1), InvalidArgumentError);
    await assert.rejects(
      store.append("Ok-1", [{ type: "T", data: {}, meta: [1], correlationId: "c" }], 0),
      InvalidArgumentError,
    );
    assert.throws(() => messageDbStore(pool, { readBatchSize: 0 }), InvalidArgumentError);
  }));

Deno.test("messagedb store: a connection without message_store on its search path gets a setup error", () =>
  withPool(async (pool) => {
    const store = messageDbStore(pool);
    await assert.rejects(
      store.append(`${unique("Path")}-1`, [{ type: "T", data: {} }], 0),
      (e) => e instanceof MessageDbSetupError && /search_path/.test(e.message),
    );
  }, { options: "-c search_path=public" }));
