// Data a store cannot keep as JSON (a bigint, a cycle) is refused with a typed error naming the
// field, by every store, and nothing is appended. Real PostgreSQL and DynamoDB Local.
import assert from "node:assert/strict";
import { InvalidArgumentError } from "../../core/errors.ts";
import type { EventStore } from "../../core/store.ts";
import { createMemoryStore } from "../../sources/memory.ts";
import { messageDbStore } from "../../stores/messagedb.ts";
import { dynamoStore } from "../../stores/dynamo.ts";
import { poolFixture, unique } from "../support/postgres.ts";
import { client, freshTables, opts } from "../support/dynamo.ts";

const withPool = poolFixture({ max: 2 });
const cyclic: Record<string, unknown> = {};
cyclic.self = cyclic;

async function refuses(store: EventStore, stream: string) {
  for (
    const [event, field] of [
      [{ type: "T", data: { n: 1n } }, "events[0].data"],
      [{ type: "T", data: {}, meta: { at: 2n } }, "events[0].meta"],
      [{ type: "T", data: cyclic }, "events[0].data"],
    ] as const
  ) {
    await assert.rejects(
      store.append(stream, [event], 0),
      (e) => e instanceof InvalidArgumentError && e.field.startsWith(field),
      `${field} of ${JSON.stringify(Object.keys(event))}`,
    );
  }
  assert.deepEqual(await store.readStream(stream), [], "nothing appended");
  await store.append(stream, [{ type: "T", data: { n: "1" } }], 0); // the stream still appends
}

Deno.test("memory store: unserialisable data and metadata are typed errors", () =>
  refuses(createMemoryStore(), "Acct-1"));

Deno.test("messagedb store: unserialisable data and metadata are typed errors", () =>
  withPool((pool) => refuses(messageDbStore(pool), `${unique("Acct")}-1`)));

Deno.test("dynamo store: unserialisable data and metadata are typed errors", opts, async () => {
  await using t = await freshTables({ eventTable: "events" });
  await refuses(dynamoStore(client, { tableName: t.eventTable }), "Acct-1");
});
