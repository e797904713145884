// runStreamsIndexer through an outage of DynamoDB (against DynamoDB Local; the outage is a
// streams client that fails its calls for a while, as a server that is down does). The fault
// suite (tests/faults/dynamo.fault.ts) found the runner giving up after maxAttempts failed
// connections, about 30 s into an outage, where the reactor's source carries on: transient
// failures are now retried for as long as they last, and only others count towards maxAttempts.
import assert from "node:assert/strict";
import type { DynamoDBStreamsClient } from "@aws-sdk/client-dynamodb-streams";
import { dynamoStore } from "../../stores/dynamo.ts";
import { dynamoIndexer } from "../../stores/dynamo-indexer.ts";
import { runStreamsIndexer } from "../../stores/dynamo-streams.ts";
import { client, freshTables, opts, streamsClient } from "../support/dynamo.ts";

/** A streams client whose calls fail with `error()` while `failing()` says so. */
function failingStreams(failing: () => boolean, error: () => Error): DynamoDBStreamsClient {
  return {
    send: (command: Parameters<DynamoDBStreamsClient["send"]>[0]) =>
      failing() ? Promise.reject(error()) : streamsClient.send(command),
  } as DynamoDBStreamsClient;
}

const refused = () =>
  Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:8000"), { code: "ECONNREFUSED" });

Deno.test("dynamo streams runner: rides out an outage longer than maxAttempts", opts, async () => {
  await using t = await freshTables({ events: "events", index: "index" });
  const store = dynamoStore(client, { tableName: t.events });
  await store.append("Outage-1", [{ type: "T", data: 0 }], 0);
  let outage = false, failures = 0, indexed = 0;
  // Down once the first event is indexed, for 4 calls: twice maxAttempts (2) in a row.
  const streams = failingStreams(() => {
    const down = outage && failures < 4;
    if (down) failures++;
    return down;
  }, refused);
  const stop = new AbortController();
  const running = runStreamsIndexer({
    client,
    streamsClient: streams,
    eventTable: t.events,
    indexer: dynamoIndexer(client, { indexTable: t.index }),
    signal: stop.signal,
    pollIntervalMs: 20,
    maxAttempts: 2,
    onIngest: (r) => {
      indexed += r.events;
      outage = true;
    },
  });
  let outcome: unknown = "running";
  running.then(() => outcome = "resolved", (e) => outcome = e);
  const until = async (done: () => boolean) => {
    const deadline = Date.now() + 30_000;
    while (!done() && outcome === "running" && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  await until(() => outage);
  await store.append("Outage-1", [{ type: "T", data: 1 }], 1);
  await until(() => indexed >= 2);
  stop.abort();
  await running.catch(() => {});
  assert.equal(outcome, "resolved", `the runner ended while running: ${outcome}`);
  assert.equal(failures, 4, "the outage happened");
  assert.equal(indexed, 2, "both events indexed once the streams answered again");
});

Deno.test(
  "dynamo streams runner: a failure that is not transient still ends it",
  opts,
  async () => {
    await using t = await freshTables({ events: "events", index: "index" });
    const invalid = () =>
      Object.assign(new Error("The shard iterator is not valid"), {
        name: "ValidationException",
        $metadata: { httpStatusCode: 400 },
      });
    let calls = 0;
    const streams = failingStreams(() => ++calls > 2, invalid);
    const started = Date.now();
    await assert.rejects(
      runStreamsIndexer({
        client,
        streamsClient: streams,
        eventTable: t.events,
        indexer: dynamoIndexer(client, { indexTable: t.index }),
        pollIntervalMs: 20,
        maxAttempts: 2,
      }),
      (e: Error) => e.name === "ValidationException",
    );
    assert.ok(Date.now() - started < 10_000, "given up after maxAttempts, not retried on");
  },
);
