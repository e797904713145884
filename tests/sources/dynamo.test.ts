// The DynamoDB source against DynamoDB Local (start it with `tools/dynamodb.sh start`).
import assert from "node:assert/strict";
import { DeleteItemCommand, type DynamoDBClient, QueryCommand } from "@aws-sdk/client-dynamodb";
import type { Batch, Position } from "../../core/batch.ts";
import type { StreamEvent } from "../../core/event.ts";
import { run, streamsSink } from "../../core/sink.ts";
import { InvalidArgumentError } from "../../core/errors.ts";
import { memoryCheckpoints } from "../../checkpoints/memory.ts";
import { dynamoCheckpoints } from "../../checkpoints/dynamo.ts";
import { dynamoStore } from "../../stores/dynamo.ts";
import { dynamoIndexer, epochKey } from "../../stores/dynamo-indexer.ts";
import { DynamoIndexCorruptError } from "../../stores/dynamo-index.ts";
import { runStreamsIndexer } from "../../stores/dynamo-streams.ts";
import {
  CheckpointPastTailError,
  decodePosition,
  DynamoIndexMismatchError,
  dynamoSource,
  encodePosition,
} from "../../sources/dynamo.ts";
import {
  allRecords,
  client,
  freshTables,
  opts,
  streamsClient,
  summaryAt,
} from "../support/dynamo.ts";

async function tables() {
  const t = await freshTables({
    eventTable: "events",
    indexTable: "index",
    checkpointTable: "checkpoints",
  });
  return { ...t, store: dynamoStore(client, { tableName: t.eventTable }) };
}

const summary = summaryAt(1_700_000_000_000);

/** Reads batches until `until` says stop (or the deadline passes), then cancels the stream. */
async function collect(
  stream: ReadableStream<Batch>,
  until: (batches: Batch[]) => boolean,
  ms = 15_000,
) {
  const batches: Batch[] = [];
  const reader = stream.getReader();
  const deadline = Date.now() + ms;
  try {
    while (!until(batches)) {
      assert.ok(
        Date.now() < deadline,
        `condition met within ${ms} ms (${batches.length} batches read)`,
      );
      const { value, done } = await reader.read();
      if (done) break;
      batches.push(value);
    }
  } finally {
    await reader.cancel();
  }
  return batches;
}

const lastIsTail = (batches: Batch[]) => batches.length > 0 && batches[batches.length - 1].isTail;

/**
 * Checks that each tranche's first batch only announces it (empty, not at the tail, no commit, at
 * its start position: `starts[tranche]`, default 0) and that every later batch carries a commit;
 * returns the later batches, those that carry reads.
 */
function reads(batches: Batch[], starts: Record<string, Position> = {}): Batch[] {
  const announced = new Set<string>();
  const rest: Batch[] = [];
  for (const b of batches) {
    if (announced.has(b.tranche)) {
      assert.equal(typeof b.commit, "function", `tranche ${b.tranche}: a read's batch commits`);
      rest.push(b);
      continue;
    }
    announced.add(b.tranche);
    assert.deepEqual(
      [b.items.length, b.isTail, b.commit, b.position],
      [0, false, undefined, starts[b.tranche] ?? 0n],
      `tranche ${b.tranche} is announced first, at its start`,
    );
  }
  return rest;
}

/** Reads until the stream errors; only announcements may come before the error. */
async function readUntilError(reader: ReadableStreamDefaultReader<Batch>): Promise<never> {
  for (;;) {
    const { value, done } = await reader.read();
    assert.ok(
      !done && value.items.length === 0 && !value.isTail && value.commit === undefined,
      "only an announcement comes before the error",
    );
  }
}

Deno.test("dynamo source: positions are epoch * 1e6 + offset", () => {
  assert.equal(encodePosition(0, 0), 0n);
  assert.equal(encodePosition(12, 345), 12_000_345n);
  assert.deepEqual(decodePosition(12_000_345n), { epoch: 12, offset: 345 });
  assert.deepEqual(decodePosition(encodePosition(7, 999_999)), { epoch: 7, offset: 999_999 });
});

Deno.test(
  "dynamo source: index-only batches across epochs, in order, ending at the tail",
  opts,
  async () => {
    await using t = await tables();
    const indexer = dynamoIndexer(client, { indexTable: t.indexTable, maxEpochEntries: 4 });
    // Separate calls so entries stay separate (one call coalesces a stream's appends).
    for (let round = 0; round < 3; round++) {
      await indexer.ingestAppends(["A-1", "B-1", "C-1"].map((s) => summary(s, round * 2, 2)));
    }
    const batches = reads(
      await collect(
        dynamoSource({
          client,
          indexTable: t.indexTable,
          group: "g",
          checkpoints: memoryCheckpoints(),
          chunksPerRead: 1,
        }),
        lastIsTail,
      ),
    );
    const items = batches.flatMap((b) => b.items);
    assert.equal(items.length, 18);
    for (const s of ["A-1", "B-1", "C-1"]) {
      const events = items.filter((i) => i.stream === s).map((i) => i.event);
      assert.deepEqual(events.map((e) => e.index), [0, 1, 2, 3, 4, 5]);
      assert.deepEqual(events.map((e) => e.type), ["T0", "T1", "T2", "T3", "T4", "T5"]);
      assert.equal(events[0].data, undefined);
      assert.equal(events[0].id, `${s}@0`);
      assert.equal(events[0].time.getTime(), 1_700_000_000_000);
    }
    // 9 entries, at most 4 per epoch, one chunk per transaction: [A B C] [A] | [B C] [A B] | [C].
    // With one chunk per read the source cannot tell the last chunk is the end until it reads
    // again, so an empty batch announces the tail.
    assert.deepEqual(batches.map((b) => b.position), [
      3n,
      4n,
      1_000_002n,
      1_000_004n,
      2_000_001n,
      2_000_001n,
    ]);
    assert.deepEqual(batches.map((b) => b.isTail), [false, false, false, false, false, true]);
    assert.deepEqual(batches.map((b) => b.items.length), [6, 2, 4, 4, 2, 0]);
    assert.ok(batches.every((b) => b.tranche === "0" && typeof b.commit === "function"));
  },
);

Deno.test(
  "dynamo source: with the events table, batches carry the event bodies",
  opts,
  async () => {
    await using t = await tables();
    const { store } = t;
    await store.append("Order-1", [{ type: "Placed", data: { total: 3 } }, {
      type: "Paid",
      data: { by: "card" },
    }], 0);
    await store.append("Order-2", [{ type: "Placed", data: { total: 9 } }], 0);
    await store.append("Order-1", [{ type: "Shipped", data: null, meta: { m: 1 } }], 2);
    await dynamoIndexer(client, { indexTable: t.indexTable }).ingest(
      await allRecords(t.eventTable),
    );
    const batches = reads(
      await collect(
        dynamoSource({
          client,
          indexTable: t.indexTable,
          eventTable: t.eventTable,
          group: "g",
          checkpoints: memoryCheckpoints(),
        }),
        lastIsTail,
      ),
    );
    const items = batches.flatMap((b) => b.items);
    assert.deepEqual(items.map((i) => [i.stream, i.event.index, i.event.type, i.event.data]), [
      ["Order-1", 0, "Placed", { total: 3 }],
      ["Order-1", 1, "Paid", { by: "card" }],
      ["Order-1", 2, "Shipped", null],
      ["Order-2", 0, "Placed", { total: 9 }],
    ]);
    assert.deepEqual(items[2].event.meta, { m: 1 });
    assert.match(items[0].event.id, /^[0-9a-f-]{36}$/);
  },
);

Deno.test(
  "dynamo source: resumes from the committed checkpoint, also inside a chunk",
  opts,
  async () => {
    await using t = await tables();
    const checkpoints = dynamoCheckpoints(client, { tableName: t.checkpointTable });
    const indexer = dynamoIndexer(client, { indexTable: t.indexTable, maxEpochEntries: 5 });
    await indexer.ingestAppends(Array.from({ length: 8 }, (_, k) => summary(`S-${k}`, 0, 1)));
    const source = () =>
      dynamoSource({
        client,
        indexTable: t.indexTable,
        group: "g",
        checkpoints,
        chunksPerRead: 1,
        sourceName: "idx",
      });
    const first = reads(await collect(source(), (b) => b.length === 2));
    assert.deepEqual(first[0].items.map((i) => i.stream), ["S-0", "S-1", "S-2", "S-3", "S-4"]);
    await first[0].commit!(first[0].position);
    assert.equal(await checkpoints.load({ source: "idx", tranche: "0", group: "g" }), 5n);
    // Resumes at the closed epoch's end: moves on to epoch 1.
    const second = reads(await collect(source(), lastIsTail), { "0": 5n });
    assert.deepEqual(second.flatMap((b) => b.items.map((i) => i.stream)), ["S-5", "S-6", "S-7"]);
    assert.equal(second.at(-1)!.position, 1_000_003n);
    // A position inside a chunk (e.g. after a reset) starts at that entry.
    await checkpoints.reset({ source: "idx", tranche: "0", group: "g" }, 1_000_001n);
    const third = reads(await collect(source(), lastIsTail), { "0": 1_000_001n });
    assert.deepEqual(third.flatMap((b) => b.items.map((i) => i.stream)), ["S-6", "S-7"]);
    // startFrom "start" ignores the checkpoint.
    const all = reads(
      await collect(
        dynamoSource({
          client,
          indexTable: t.indexTable,
          group: "g",
          checkpoints,
          startFrom: "start",
          sourceName: "idx",
        }),
        lastIsTail,
      ),
    );
    assert.equal(all.flatMap((b) => b.items).length, 8);
  },
);

Deno.test("dynamo source: announces the tail once, then picks up new entries", opts, async () => {
  await using t = await tables();
  const indexer = dynamoIndexer(client, { indexTable: t.indexTable });
  await indexer.ingestAppends([summary("A-1", 0, 1)]);
  const reader = dynamoSource({
    client,
    indexTable: t.indexTable,
    group: "g",
    checkpoints: memoryCheckpoints(),
    tailSleepMs: 20,
    partitionRefreshMs: 50,
  }).getReader();
  try {
    const firstTwo = [(await reader.read()).value!, (await reader.read()).value!];
    const [b1] = reads(firstTwo);
    assert.deepEqual([b1.items.length, b1.isTail, b1.position], [1, true, 1n]);
    // A new partition appears while reading: it is found, and announces its tail when empty.
    const partB = dynamoIndexer(client, { indexTable: t.indexTable, partitionOf: () => "b" });
    await partB.ingestAppends([summary("B-1", 0, 2)]);
    await indexer.ingestAppends([summary("A-1", 1, 1)]);
    const later: Batch[] = [];
    const count = (tranche: string) => later.filter((b) => b.tranche === tranche).length;
    // Partition "b" is announced before its first read's batch.
    while (count("0") < 1 || count("b") < 2) later.push((await reader.read()).value!);
    const seen = new Map<string, Batch[]>();
    for (const b of reads([...firstTwo, ...later]).slice(1)) {
      seen.set(b.tranche, [...(seen.get(b.tranche) ?? []), b]);
    }
    assert.deepEqual(seen.get("0")!.map((b) => [b.items.map((i) => i.event.index), b.isTail]), [[[
      1,
    ], true]]);
    assert.deepEqual(seen.get("b")!.map((b) => [b.items.map((i) => i.stream), b.isTail]), [[[
      "B-1",
      "B-1",
    ], true]]);
  } finally {
    await reader.cancel();
  }
  // An empty index announces the tail with an empty batch.
  await using empty = await tables();
  await dynamoIndexer(client, { indexTable: empty.indexTable, maxEpochEntries: 1 }).ingestAppends([
    summary("A-1", 0, 1),
  ]);
  const batches = reads(
    await collect(
      dynamoSource({
        client,
        indexTable: empty.indexTable,
        group: "g",
        checkpoints: memoryCheckpoints(),
        tranches: ["0", "none"],
      }),
      (bs) => bs.filter((b) => b.isTail).length === 2,
    ),
  );
  const none = batches.filter((b) => b.tranche === "none");
  assert.deepEqual(none.map((b) => [b.items.length, b.position, b.isTail]), [[0, 0n, true]]);
});

Deno.test(
  "dynamo source: announces each partition first, so waiting for the tail includes a slow one",
  opts,
  async () => {
    await using t = await tables();
    await dynamoIndexer(client, { indexTable: t.indexTable }).ingestAppends([summary("A-1", 0, 1)]);
    await dynamoIndexer(client, { indexTable: t.indexTable, partitionOf: () => "slow" })
      .ingestAppends([summary("S-1", 0, 1)]);
    // A deliberate fault: partition "slow"'s index queries hang until the gate opens.
    let open!: () => void;
    const gate = new Promise<void>((resolve) => open = resolve);
    let opened = false;
    const slowClient = {
      send: async (command: unknown) => {
        const p = command instanceof QueryCommand
          ? command.input.ExpressionAttributeValues?.[":p"]?.S
          : undefined;
        if (p?.includes("#slow#")) await gate;
        return client.send(command as QueryCommand);
      },
    } as unknown as DynamoDBClient;
    const batches: Batch[] = [];
    const openedAt = new Map<Batch, boolean>();
    const tapped = dynamoSource({
      client: slowClient,
      indexTable: t.indexTable,
      group: "g",
      checkpoints: memoryCheckpoints(),
      tranches: ["0", "slow"],
      tailSleepMs: 20,
    }).pipeThrough(
      new TransformStream<Batch, Batch>({
        transform(b, controller) {
          batches.push(b);
          openedAt.set(b, opened);
          controller.enqueue(b);
        },
      }),
    );
    const handled: string[] = [];
    const sink = streamsSink({
      handler: (stream: string) => void handled.push(stream),
      commitIntervalMs: 10,
      statsIntervalMs: 0,
    });
    const stop = new AbortController();
    const running = run(tapped, sink, { signal: stop.signal });
    try {
      // Partition "0" is read to its tail while "slow" has only been announced.
      const deadline = Date.now() + 10_000;
      while (
        !batches.some((b) => b.tranche === "0" && b.isTail) ||
        !batches.some((b) => b.tranche === "slow")
      ) {
        assert.ok(Date.now() < deadline, "partition 0 reached its tail and slow was announced");
        await new Promise((r) => setTimeout(r, 10));
      }
      // The gate opens later; waiting for the tail must not end before "slow"'s read is handled.
      const timer = setTimeout(() => {
        opened = true;
        open();
      }, 200);
      try {
        await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 10_000 });
      } finally {
        clearTimeout(timer);
      }
      assert.ok(opened, "the tail was awaited until the slow partition's first read returned");
      assert.deepEqual([...handled].sort(), ["A-1", "S-1"]);
    } finally {
      open(); // a reader still held at the gate would keep the run from draining
      stop.abort();
      await running;
    }
    const slow = batches.filter((b) => b.tranche === "slow");
    assert.equal(openedAt.get(slow[0]), false, "slow is announced before its first read returns");
    assert.deepEqual(reads(slow).flatMap((b) => b.items.map((i) => i.stream)), ["S-1"]);
    assert.deepEqual(
      reads(batches.filter((b) => b.tranche === "0")).flatMap((b) => b.items.map((i) => i.stream)),
      ["A-1"],
    );
  },
);

for (const consistentRead of [true, false]) {
  Deno.test(
    `dynamo source: indexed events missing from the table fail their stream only (consistentRead ${consistentRead})`,
    opts,
    async () => {
      await using t = await tables();
      await t.store.append("A-1", [{ type: "T", data: 1 }], 0);
      await t.store.append("B-1", [{ type: "T", data: 2 }], 0);
      await dynamoIndexer(client, { indexTable: t.indexTable }).ingestAppends([
        summary("A-1", 0, 3),
        summary("B-1", 0, 1),
      ]);
      // Counts the consistent reads of the events table (DynamoDB Local is always consistent,
      // so only the request says whether the re-read happened).
      let consistentReads = 0;
      const counting = {
        send: (command: unknown) => {
          const input = (command as QueryCommand).input;
          if (
            command instanceof QueryCommand && input.TableName === t.eventTable &&
            input.ConsistentRead === true
          ) consistentReads++;
          return client.send(command as QueryCommand);
        },
      } as unknown as DynamoDBClient;
      const batches = await collect(
        dynamoSource({
          client: counting,
          indexTable: t.indexTable,
          eventTable: t.eventTable,
          group: "g",
          checkpoints: memoryCheckpoints(),
          consistentRead,
        }),
        lastIsTail,
      );
      // Eventual reads are retried consistently, once, for the stream whose events are missing.
      if (!consistentRead) assert.ok(consistentReads > 0, "A-1 was re-read consistently");
      const items = reads(batches).flatMap((b) => b.items);
      assert.deepEqual(
        items.map((i) => [`${i.stream}@${i.event.index}`, i.invalid?.constructor.name]),
        [
          ["A-1@0", undefined],
          ["A-1@1", "DynamoIndexMismatchError"],
          ["A-1@2", "DynamoIndexMismatchError"],
          ["B-1@0", undefined],
        ],
      );
      const invalid = items[1].invalid;
      assert.ok(invalid instanceof DynamoIndexMismatchError && invalid.stream === "A-1");
      assert.equal(items[3].event.data, 2);
    },
  );
}

Deno.test(
  "dynamo source: the open epoch's last chunk deleted is an error, not a tail",
  opts,
  async () => {
    await using t = await tables();
    const indexer = dynamoIndexer(client, { indexTable: t.indexTable });
    for (const s of ["A-1", "B-1"]) {
      await t.store.append(s, [{ type: "T", data: 1 }], 0);
      await indexer.ingestAppends([summary(s, 0, 1)]);
    }
    assert.equal((await indexer.tip("0")).offset, 2);
    await client.send(
      new DeleteItemCommand({
        TableName: t.indexTable,
        Key: { p: { S: epochKey("0", 0) }, i: { N: "1" } },
      }),
    );
    const source = dynamoSource({
      client,
      indexTable: t.indexTable,
      eventTable: t.eventTable,
      group: "g",
      checkpoints: memoryCheckpoints(),
      tailSleepMs: 20,
    });
    const reader = source.getReader();
    const seen: string[] = [];
    // The partition stops as damaged (failing in problems()) rather than sitting at the tail.
    let pending = reader.read();
    const deadline = Date.now() + 10_000;
    for (;;) {
      const r = await Promise.race([pending, new Promise<void>((r) => setTimeout(r, 50))]);
      if (r !== undefined) {
        assert.ok(!r.done, "the source goes on; only the partition stops");
        seen.push(...r.value.items.map((i) => `${i.stream}@${i.event.index}`));
        pending = reader.read();
        continue;
      }
      const problem = source.problems!().find((p) => p.tranche === "0");
      if (problem !== undefined) {
        assert.equal(problem.severity, "failing");
        assert.match(
          problem.reason,
          new RegExp(`${DynamoIndexCorruptError.name}: .*entries 1 to 1 are missing`),
        );
        break;
      }
      assert.ok(Date.now() < deadline, `the partition stops; saw ${seen}`);
    }
    await reader.cancel();
    assert.deepEqual(seen, ["A-1@0"]);
  },
);

Deno.test(
  "dynamo source: retries transient read failures, errors on permanent ones",
  opts,
  async () => {
    await using t = await tables();
    await dynamoIndexer(client, { indexTable: t.indexTable }).ingestAppends([summary("A-1", 0, 2)]);
    // A deliberate fault: the first two chunk queries fail as a dropped connection would.
    let failures = 2;
    const chunkQuery = (command: unknown) =>
      command instanceof QueryCommand &&
      command.input.ExpressionAttributeValues?.[":p"]?.S?.startsWith("$epoch#") === true;
    const flaky = {
      send: (command: unknown) => {
        if (chunkQuery(command) && failures-- > 0) {
          return Promise.reject(
            new TypeError("fetch failed"),
          );
        }
        return client.send(command as QueryCommand);
      },
    } as unknown as DynamoDBClient;
    const batches = reads(
      await collect(
        dynamoSource({
          client: flaky,
          indexTable: t.indexTable,
          group: "g",
          checkpoints: memoryCheckpoints(),
          retryMinMs: 5,
        }),
        lastIsTail,
      ),
    );
    assert.equal(failures, -1, "the failed queries were retried");
    assert.deepEqual(batches.flatMap((b) => b.items.map((i) => i.event.index)), [0, 1]);

    const reader = dynamoSource({
      client,
      indexTable: `missing-${crypto.randomUUID()}`,
      tranches: ["0"],
      group: "g",
      checkpoints: memoryCheckpoints(),
    }).getReader();
    await assert.rejects(
      () => readUntilError(reader),
      (e) => (e as Error).name === "ResourceNotFoundException",
    );
  },
);

Deno.test(
  "dynamo source: starts at the tip when asked, and refuses a checkpoint past it",
  opts,
  async () => {
    await using t = await tables();
    const indexer = dynamoIndexer(client, { indexTable: t.indexTable, maxEpochEntries: 2 });
    await indexer.ingestAppends([summary("A-1", 0, 1), summary("B-1", 0, 1), summary("C-1", 0, 1)]);
    const tip = await indexer.tip("0");
    const checkpoints = memoryCheckpoints();
    const options = {
      client,
      indexTable: t.indexTable,
      group: "g",
      checkpoints,
      tranches: ["0"],
      tailSleepMs: 20,
    };
    const reader = dynamoSource({ ...options, whenNoCheckpoint: "tail" }).getReader();
    try {
      const first = (await reader.read()).value!;
      assert.deepEqual(
        [first.items.length, first.isTail, first.position],
        [0, true, encodePosition(tip.epoch, tip.offset)],
      );
      assert.equal(typeof first.commit, "function", "the tail start is committed at once");
      await indexer.ingestAppends([summary("D-1", 0, 1)]);
      let next: Batch;
      do next = (await reader.read()).value!; while (next.items.length === 0);
      assert.deepEqual(next.items.map((i) => i.stream), ["D-1"], "only what came after the tip");
    } finally {
      await reader.cancel();
    }
    const key = { source: `dynamo:${t.indexTable}`, tranche: "0", group: "g" };
    await checkpoints.reset(key, encodePosition(tip.epoch + 3, 0));
    await assert.rejects(
      () => readUntilError(dynamoSource(options).getReader()),
      (e) => e instanceof CheckpointPastTailError && e.tranche === "0",
    );
  },
);

Deno.test("dynamo source: rejects bad options with typed errors", () => {
  const base = { client, indexTable: "index-x", group: "g", checkpoints: memoryCheckpoints() };
  assert.throws(() => dynamoSource({ ...base, group: "" }), InvalidArgumentError);
  assert.throws(() => dynamoSource({ ...base, indexTable: "x" }), InvalidArgumentError);
  assert.throws(() => dynamoSource({ ...base, tranches: [] }), InvalidArgumentError);
  assert.throws(() => dynamoSource({ ...base, tranches: [""] }), InvalidArgumentError);
  assert.throws(() => dynamoSource({ ...base, chunksPerRead: 0 }), InvalidArgumentError);
  assert.throws(() => dynamoSource({ ...base, trackedStreams: -1 }), InvalidArgumentError);
  assert.throws(() => dynamoSource({ ...base, checkpoints: {} as never }), InvalidArgumentError);
});

// The whole way: writers append to the store, the streams runner indexes the table's DynamoDB
// Stream, the source reads the index (and the bodies), the scheduler runs the handler, and
// checkpoints go to DynamoDB.
function pipeline(t: Awaited<ReturnType<typeof tables>>, seen: Map<string, number[]>) {
  const stop = new AbortController();
  const indexer = dynamoIndexer(client, { indexTable: t.indexTable, maxEpochEntries: 60 });
  const indexing = runStreamsIndexer({
    client,
    streamsClient,
    eventTable: t.eventTable,
    indexer,
    signal: stop.signal,
    pollIntervalMs: 20,
  });
  const checkpoints = dynamoCheckpoints(client, { tableName: t.checkpointTable });
  const sink = streamsSink({
    handler: (stream: string, events: readonly StreamEvent[]) => {
      const list = seen.get(stream) ?? [];
      for (const e of events) {
        assert.deepEqual(e.data, { stream, n: e.index });
        list.push(e.index);
      }
      seen.set(stream, list);
    },
    maxConcurrentStreams: 16,
    commitIntervalMs: 100,
    statsIntervalMs: 0,
  });
  const source = dynamoSource({
    client,
    indexTable: t.indexTable,
    eventTable: t.eventTable,
    group: "reactor",
    checkpoints,
    tailSleepMs: 20,
    partitionRefreshMs: 100,
    signal: stop.signal,
  });
  const running = run(source, sink, { signal: stop.signal });
  const handled = () => [...seen.values()].reduce((n, xs) => n + xs.length, 0);
  return {
    checkpoints,
    indexer,
    /** Waits until the handler has seen `count` events in total. */
    async until(count: number, ms = 30_000) {
      const deadline = Date.now() + ms;
      while (handled() < count) {
        assert.ok(Date.now() < deadline, `handled ${handled()} of ${count} events in time`);
        await sink.monitor.awaitCompletion({
          tail: true,
          timeoutMs: Math.max(1, deadline - Date.now()),
        });
        if (handled() < count) await new Promise((r) => setTimeout(r, 50));
      }
    },
    async stop() {
      stop.abort();
      await running;
      await indexing;
    },
  };
}

/** Appends events `from..to` (exclusive) to each stream, in appends of 2-6 events, 8 writers at once. */
async function write(
  store: ReturnType<typeof dynamoStore>,
  streams: string[],
  from: number,
  to: number,
) {
  const work = streams.map((stream) => ({ stream, next: from }));
  await Promise.all(Array.from({ length: 8 }, async (_, w) => {
    for (const item of work.filter((_, k) => k % 8 === w)) {
      while (item.next < to) {
        const count = Math.min(to - item.next, 2 + ((item.next + item.stream.length) % 5));
        const events = Array.from({ length: count }, (_, k) => ({
          type: "Counted",
          data: { stream: item.stream, n: item.next + k },
        }));
        await store.append(item.stream, events, item.next);
        item.next += count;
      }
    }
  }));
}

const streams100 = Array.from({ length: 100 }, (_, k) => `Counter-${k}`);

Deno.test(
  "dynamo pipeline: 2000 events over 100 streams reach the handler completely and in order",
  opts,
  async () => {
    await using t = await tables();
    const seen = new Map<string, number[]>();
    const p = pipeline(t, seen);
    try {
      // Writers run while the pipeline tails: appends, indexing and reading interleave.
      await write(t.store, streams100, 0, 20);
      await p.until(2000);
      // Give any duplicate a chance to show up before checking there is none.
      await new Promise((r) => setTimeout(r, 200));
    } finally {
      await p.stop();
    }
    assert.equal(seen.size, 100);
    const expected = Array.from({ length: 20 }, (_, k) => k);
    for (const s of streams100) {
      assert.deepEqual(
        seen.get(s),
        expected,
        `${s} complete, in order, once`,
      );
    }
    // 2000 events in appends of 2-6 events, 60 entries an epoch: several epochs were crossed, and
    // the final checkpoint is the index's tip.
    const tip = await p.indexer.tip("0");
    assert.ok(tip.epoch >= 1, `epochs rolled over (tip at epoch ${tip.epoch})`);
    const position = await p.checkpoints.load({
      source: `dynamo:${t.indexTable}`,
      tranche: "0",
      group: "reactor",
    });
    assert.equal(position, encodePosition(tip.epoch, tip.offset));
  },
);

Deno.test("dynamo pipeline: stops, then resumes from the DynamoDB checkpoint", opts, async () => {
  await using t = await tables();
  const first = new Map<string, number[]>();
  const streams = streams100.slice(0, 40);
  await write(t.store, streams, 0, 10);
  const run1 = pipeline(t, first);
  try {
    await run1.until(400);
  } finally {
    await run1.stop();
  }
  const key = { source: `dynamo:${t.indexTable}`, tranche: "0", group: "reactor" };
  const stopped = await run1.checkpoints.load(key);
  assert.ok(stopped !== undefined && stopped > 0n, "a checkpoint was committed on stop");

  // Appended while nothing runs; the indexer and the source both resume where they were.
  await write(t.store, streams, 10, 25);
  const second = new Map<string, number[]>();
  const run2 = pipeline(t, second);
  try {
    await run2.until(600);
    await new Promise((r) => setTimeout(r, 200));
  } finally {
    await run2.stop();
  }
  for (const s of streams) {
    assert.deepEqual(first.get(s), Array.from({ length: 10 }, (_, k) => k), `${s}: first run`);
    // Nothing handled before the stop is handled again; nothing after it is missed.
    assert.deepEqual(
      second.get(s),
      Array.from({ length: 15 }, (_, k) => 10 + k),
      `${s}: resumed run`,
    );
  }
  assert.ok((await run2.checkpoints.load(key))! > stopped!);
});
