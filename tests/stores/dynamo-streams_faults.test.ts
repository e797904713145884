// runStreamsIndexer under the faults that tests/faults/dynamo.fault.ts found it failing, against
// DynamoDB Local:
// - an outage of DynamoDB (a streams client that fails its calls for a while, as a server that
//   is down does): the runner gave up after maxAttempts failed connections, about 30 s into it,
//   where the reactor's source carries on. Transient failures are now retried for as long as they
//   last; only others count towards maxAttempts.
// - restarts: progress was recorded once a whole read (up to 1000 records) was indexed, so that
//   an indexer killed more often than that takes (seconds on a loaded DynamoDB Local) started
//   over every time. A read is now indexed and recorded `recordsPerIngest` records at a time.
// - a stop during start-up: a signal aborted while the runner described the events table was
//   missed, and the runner went on indexing until killed.
import assert from "node:assert/strict";
import type { DynamoDBStreamsClient } from "@aws-sdk/client-dynamodb-streams";
import { dynamoStore } from "../../stores/dynamo.ts";
import { type DynamoIndexer, dynamoIndexer } from "../../stores/dynamo-indexer.ts";
import { runStreamsIndexer } from "../../stores/dynamo-streams.ts";
import { withTimeout } from "../../core/timeout.ts";
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

Deno.test(
  "dynamo streams runner: progress is recorded a slice of a read at a time",
  opts,
  async () => {
    await using t = await freshTables({ events: "events", index: "index" });
    const store = dynamoStore(client, { tableName: t.events });
    // 12 appends to new streams: 24 records (each append's item and its stream's tip), one read.
    const streams = Array.from({ length: 12 }, (_, k) => `Slice-${k}`);
    // One at a time: DynamoDB Local's transactions only slow each other down.
    for (const [k, stream] of streams.entries()) {
      await store.append(stream, [{ type: "T", data: k }], 0);
    }
    const counting = (sizes: number[]): DynamoIndexer => {
      const indexer = dynamoIndexer(client, { indexTable: t.index });
      return {
        ...indexer,
        ingest: (records) => (sizes.push(records.length), indexer.ingest(records)),
      };
    };
    // Stopped after its first slice, as a kill right after it would leave it.
    const first: number[] = [];
    const stop = new AbortController();
    await runStreamsIndexer({
      client,
      streamsClient,
      eventTable: t.events,
      indexer: counting(first),
      signal: stop.signal,
      pollIntervalMs: 20,
      recordsPerIngest: 8,
      onIngest: () => stop.abort(),
    });
    assert.deepEqual(first, [8], "one slice of 8 records, then the stop");
    // Restarted, it reads on after that slice: nothing is indexed twice.
    const second: number[] = [];
    let events = 0, duplicates = 0;
    const stop2 = new AbortController();
    await runStreamsIndexer({
      client,
      streamsClient,
      eventTable: t.events,
      indexer: counting(second),
      signal: stop2.signal,
      pollIntervalMs: 20,
      recordsPerIngest: 8,
      onIngest: (r) => {
        events += r.events;
        duplicates += r.duplicateEvents;
        if (second.reduce((a, b) => a + b, 0) >= 16) stop2.abort();
      },
    });
    assert.deepEqual(second, [8, 8], "the other 16 records, in two slices");
    assert.equal(duplicates, 0, "nothing redone");
    assert.equal(events, 8, "the events of the records the first run did not get to");
  },
);

Deno.test("dynamo streams runner: a stop while it starts is not missed", opts, async () => {
  await using t = await freshTables({ events: "events", index: "index" });
  const stop = new AbortController();
  const running = runStreamsIndexer({
    client,
    streamsClient,
    eventTable: t.events,
    indexer: dynamoIndexer(client, { indexTable: t.index }),
    signal: stop.signal,
  });
  stop.abort(); // while the runner waits for the table's description
  await withTimeout(running, 10_000, "the runner's stop");
});
