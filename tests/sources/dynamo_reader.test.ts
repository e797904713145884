// The DynamoDB source on the paged reader (DynamoDB Local): event-table reads retried through the
// reader (logged, in problems()), a TypeError failing the source, and a partition found while
// the source runs read from its start under a tail policy.
import assert from "node:assert/strict";
import { type DynamoDBClient, QueryCommand } from "@aws-sdk/client-dynamodb";
import type { Batch } from "../../core/batch.ts";
import { memoryCheckpoints } from "../../checkpoints/memory.ts";
import { dynamoStore } from "../../stores/dynamo.ts";
import { dynamoIndexer } from "../../stores/dynamo-indexer.ts";
import { dynamoSource } from "../../sources/dynamo.ts";
import { client, freshTables, opts, summaryAt } from "../support/dynamo.ts";

const summary = summaryAt(1_700_000_000_000);

async function until(ok: () => boolean, what: string, ms = 10_000) {
  const deadline = Date.now() + ms;
  while (!ok()) {
    assert.ok(Date.now() < deadline, `${what} within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A client whose event-table queries fail with `error()` while `failing()` says so. */
const faulty = (eventTable: string, failing: () => boolean, error: () => Error) =>
  ({
    send: (command: unknown) => {
      if (
        command instanceof QueryCommand && command.input.TableName === eventTable && failing()
      ) {
        return Promise.reject(error());
      }
      return client.send(command as QueryCommand);
    },
  }) as unknown as DynamoDBClient;

Deno.test(
  "dynamo source: event-table reads that keep failing show in problems(), since the first failure, and recover",
  opts,
  async () => {
    await using t = await freshTables({ eventTable: "events", indexTable: "index" });
    await dynamoStore(client, { tableName: t.eventTable }).append("Order-1", [
      { type: "Placed", data: { total: 3 } },
    ], 0);
    await dynamoIndexer(client, { indexTable: t.indexTable }).ingestAppends([
      summary("Order-1", 0, 1),
    ]);
    let throttle = true, throttled = 0;
    const stop = new AbortController();
    const source = dynamoSource({
      signal: stop.signal,
      client: faulty(
        t.eventTable,
        () => throttle && ++throttled > 0,
        () =>
          Object.assign(new Error("Rate of requests exceeds the allowed throughput"), {
            name: "ThrottlingException",
          }),
      ),
      indexTable: t.indexTable,
      eventTable: t.eventTable,
      group: "g",
      checkpoints: memoryCheckpoints(),
      tranches: ["0"],
      retry: { initialDelayMs: 5, maxDelayMs: 20 },
      tailSleepMs: 20,
    });
    const batches: Batch[] = [];
    const reading = (async () => {
      for await (const b of source) batches.push(b);
    })();
    try {
      await until(() => throttled >= 3 && (source.problems?.() ?? []).length > 0, "a problem");
      const [problem] = source.problems!();
      assert.equal(problem.severity, "degraded");
      assert.equal(problem.tranche, "0");
      assert.match(problem.reason, /events of Order-1.*ThrottlingException/);
      await until(() => throttled >= 6, "more failures");
      assert.equal(source.problems!()[0].since, problem.since, "since stays at the first failure");
      throttle = false;
      await until(() => batches.some((b) => b.items.length === 1), "the event once reads work");
      assert.deepEqual(source.problems!(), []);
    } finally {
      stop.abort();
      await reading;
    }
  },
);

Deno.test(
  "dynamo source: a TypeError from an event-table read is a bug: it fails the source, not retried",
  opts,
  async () => {
    await using t = await freshTables({ eventTable: "events", indexTable: "index" });
    await dynamoStore(client, { tableName: t.eventTable }).append("Order-1", [
      { type: "Placed", data: {} },
    ], 0);
    await dynamoIndexer(client, { indexTable: t.indexTable }).ingestAppends([
      summary("Order-1", 0, 1),
    ]);
    let calls = 0;
    const source = dynamoSource({
      client: faulty(
        t.eventTable,
        () => ++calls > 0,
        () => new TypeError("Cannot read properties of undefined (reading 'S')"),
      ),
      indexTable: t.indexTable,
      eventTable: t.eventTable,
      group: "g",
      checkpoints: memoryCheckpoints(),
      tranches: ["0"],
      retry: { initialDelayMs: 5, maxDelayMs: 5 },
    });
    await assert.rejects(
      async () => {
        for await (const _ of source) { /* announcement only */ }
      },
      (e) => e instanceof TypeError,
    );
    assert.equal(calls, 1, "not retried");
  },
);

for (const policy of ["whenNoCheckpoint", "startFrom"] as const) {
  Deno.test(
    `dynamo source: ${policy} "tail": a partition found while running is read from its start`,
    opts,
    async () => {
      await using t = await freshTables({ indexTable: "index" });
      await dynamoIndexer(client, { indexTable: t.indexTable }).ingestAppends([
        summary("A-1", 0, 1),
      ]);
      const stop = new AbortController();
      const source = dynamoSource({
        signal: stop.signal,
        client,
        indexTable: t.indexTable,
        group: "g",
        checkpoints: memoryCheckpoints(),
        ...(policy === "startFrom" ? { startFrom: "tail" } : { whenNoCheckpoint: "tail" }),
        tailSleepMs: 20,
        partitionRefreshMs: 100,
      });
      const seen: Batch[] = [];
      const reading = (async () => {
        for await (const b of source) seen.push(b);
      })();
      try {
        await until(() => seen.some((b) => b.tranche === "0" && b.isTail), "partition 0's tail");
        assert.deepEqual(seen.flatMap((b) => b.items), [], "partition 0 starts at its tip");
        // Written after the source started, before it finds partition "b".
        await dynamoIndexer(client, { indexTable: t.indexTable, partitionOf: () => "b" })
          .ingestAppends([summary("B-1", 0, 3)]);
        const ofB = () => seen.filter((b) => b.tranche === "b").flatMap((b) => b.items);
        await until(() => ofB().length >= 3, "B-1's events");
        assert.deepEqual(ofB().map((i) => `${i.stream}@${i.event.index}`), [
          "B-1@0",
          "B-1@1",
          "B-1@2",
        ]);
      } finally {
        stop.abort();
        await reading;
      }
    },
  );
}
