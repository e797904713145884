// The DynamoDB indexer against DynamoDB Local (start it with `tools/dynamodb.sh start`).
import assert from "node:assert/strict";
import {
  DeleteItemCommand,
  DescribeTableCommand,
  GetItemCommand,
  PutItemCommand,
  QueryCommand,
} from "@aws-sdk/client-dynamodb";
import { DescribeStreamCommand } from "@aws-sdk/client-dynamodb-streams";
import { InvalidArgumentError } from "../../core/errors.ts";
import { dynamoStore } from "../../stores/dynamo.ts";
import {
  decodeEntries,
  dynamoIndexer,
  epochKey,
  type IndexEntry,
  type IngestResult,
  listPartitions,
  partitionSlot,
} from "../../stores/dynamo-indexer.ts";
import { runStreamsIndexer } from "../../stores/dynamo-streams.ts";
import {
  allRecords,
  client,
  freshTables,
  opts,
  streamsClient,
  summaryAt,
} from "../support/dynamo.ts";

async function tables() {
  const t = await freshTables({ eventTable: "events", indexTable: "index" });
  return { ...t, store: dynamoStore(client, { tableName: t.eventTable }) };
}

interface Epoch {
  entries: IndexEntry[];
  closed: boolean;
  count?: number;
}

/** The whole index of a partition, epoch by epoch, read straight from the table. */
async function readIndex(indexTable: string, partition = "0"): Promise<Epoch[]> {
  const epochs: Epoch[] = [];
  for (let epoch = 0;; epoch++) {
    const res = await client.send(
      new QueryCommand({
        TableName: indexTable,
        KeyConditionExpression: "p = :p",
        ExpressionAttributeValues: { ":p": { S: epochKey(partition, epoch) } },
        ConsistentRead: true,
      }),
    );
    const items = res.Items ?? [];
    if (items.length === 0) return epochs;
    const header = items.find((item) => item.i.N === "1000000");
    const entries: IndexEntry[] = [];
    let expectOffset = 0;
    for (const item of items) {
      if (item.i.N === "1000000") continue;
      assert.equal(Number(item.i.N), expectOffset, "chunks are contiguous");
      const chunk = decodeEntries(item.j.S!);
      assert.equal(chunk.length, Number(item.c.N));
      entries.push(...chunk);
      expectOffset += chunk.length;
    }
    epochs.push({
      entries,
      closed: header?.closed?.BOOL === true,
      count: header ? Number(header.c.N) : undefined,
    });
  }
}

/** The spans indexed per stream, merged: stream -> [index, next, types]. */
function spansByStream(epochs: Epoch[]) {
  const out = new Map<string, { next: number; types: string[] }>();
  for (const e of epochs.flatMap((x) => x.entries)) {
    const s = out.get(e.stream) ?? { next: 0, types: [] };
    assert.equal(e.index, s.next, `${e.stream} entries are contiguous and in order`);
    assert.equal(e.types.length, e.next - e.index);
    s.next = e.next;
    s.types.push(...e.types);
    out.set(e.stream, s);
  }
  return out;
}

const summary = summaryAt(1000);

Deno.test(
  "dynamo indexer: stream records become ordered entries; replays change nothing",
  opts,
  async () => {
    await using t = await tables();
    const { store, indexTable, eventTable } = t;
    for (let round = 0; round < 3; round++) {
      for (const s of ["A-1", "B-1", "C-1"]) {
        await store.append(s, [{ type: `${s}:${round}a`, data: round }, {
          type: `${s}:${round}b`,
          data: round,
        }], round * 2);
      }
    }
    const records = await allRecords(eventTable);
    assert.ok(records.length >= 9, "tip and append records");
    const indexer = dynamoIndexer(client, { indexTable });
    const first = await indexer.ingest(records);
    assert.equal(first.events, 18);
    assert.equal(first.duplicateEvents, 0);
    const index = await readIndex(indexTable);
    assert.equal(index.length, 1);
    assert.equal(index[0].closed, false);
    // Consecutive appends of a stream within one batch coalesce into one entry.
    assert.deepEqual(index[0].entries.map((e) => [e.stream, e.index, e.next]), [["A-1", 0, 6], [
      "B-1",
      0,
      6,
    ], ["C-1", 0, 6]]);
    assert.deepEqual(index[0].entries[1].types, [
      "B-1:0a",
      "B-1:0b",
      "B-1:1a",
      "B-1:1b",
      "B-1:2a",
      "B-1:2b",
    ]);
    assert.ok(index[0].entries[0].time > Date.now() - 60_000);

    // Replaying the same records, all of them or a shuffled overlap, indexes nothing new.
    const again = await indexer.ingest(records);
    assert.deepEqual(again, {
      entries: 0,
      events: 0,
      duplicateEvents: 18,
      gaps: 0,
      epochsClosed: 0,
      parked: 0,
      malformed: 0,
      dropped: 0,
    });
    const shuffled = [...records.slice(4), ...records.slice(0, 6)].reverse();
    assert.equal((await indexer.ingest(shuffled)).entries, 0);
    // A fresh indexer (a new Lambda container) keeps nothing in memory and still drops them.
    assert.equal((await dynamoIndexer(client, { indexTable }).ingest(records)).entries, 0);
    assert.deepEqual(await readIndex(indexTable), index);

    // New appends after a replay carry on from where the index is.
    await store.append("A-1", [{ type: "late", data: 1 }], 6);
    const more = await indexer.ingest(await allRecords(eventTable));
    assert.equal(more.events, 1);
    assert.equal(more.duplicateEvents, 18);
    const after = await readIndex(indexTable);
    assert.deepEqual(after[0].entries.at(-1), {
      ...after[0].entries.at(-1)!,
      stream: "A-1",
      index: 6,
      next: 7,
      types: ["late"],
    });
    assert.deepEqual(await indexer.tip("0"), {
      epoch: 0,
      offset: 4,
      bytes: (await indexer.tip("0")).bytes,
      streams: 3,
    });
  },
);

Deno.test("dynamo indexer: partial overlaps are trimmed to what is new", opts, async () => {
  await using t = await tables();
  const indexer = dynamoIndexer(client, { indexTable: t.indexTable });
  await indexer.ingestAppends([summary("A-1", 0, 3)]);
  const r = await indexer.ingestAppends([summary("A-1", 1, 4), summary("A-1", 0, 2)]);
  assert.equal(r.events, 2);
  assert.equal(r.duplicateEvents, 2 + 2);
  const spans = spansByStream(await readIndex(t.indexTable));
  assert.deepEqual(spans.get("A-1"), { next: 5, types: ["T0", "T1", "T2", "T3", "T4"] });
});

Deno.test(
  "dynamo indexer: a gapped append is parked, never indexed across the hole; others carry on",
  opts,
  async () => {
    await using t = await tables();
    const strict = dynamoIndexer(client, { indexTable: t.indexTable });
    await strict.ingestAppends([summary("A-1", 0, 2)]);
    // onGap "error" (default): the gapped append is parked and its stream parked from there on;
    // the valid B-1 append of the same batch is indexed.
    const r = await strict.ingestAppends([summary("B-1", 0, 1), summary("A-1", 4, 1)]);
    assert.deepEqual([r.entries, r.events, r.gaps, r.parked], [1, 1, 1, 1]);
    const parked = await strict.parked();
    assert.deepEqual(parked.map((p) => [p.stream, p.index, p.next]), [["A-1", 4, 5]]);
    assert.match(parked[0].reason, /index gap: expected an append at version 2, got one at 4/);
    // The appends that fill the hole are still indexed; the parked one and later ones are not.
    const fill = await strict.ingestAppends([summary("A-1", 2, 2), summary("A-1", 4, 1)]);
    assert.deepEqual([fill.events, fill.parked], [2, 1]);
    const late = await strict.ingestAppends([summary("A-1", 5, 1)]);
    assert.deepEqual([late.events, late.parked], [0, 1]);
    assert.deepEqual(
      (await readIndex(t.indexTable)).flatMap((e) => e.entries).map((e) => [e.stream, e.index]),
      [["A-1", 0], ["B-1", 0], ["A-1", 2]],
    );
    // A gap at the very start of a stream is a gap too.
    assert.equal((await strict.ingestAppends([summary("C-1", 3, 1)])).gaps, 1);

    // Appends are taken in the order given: one given before the append that fills its hole
    // stays a gap (it used to be sorted into place and indexed).
    const order = await strict.ingestAppends([summary("E-1", 1, 1), summary("E-1", 0, 1)]);
    assert.deepEqual([order.events, order.gaps, order.parked], [1, 1, 1]);

    // onGap "warn" needs the events table, to confirm a gapped append before indexing it.
    assert.throws(
      () => dynamoIndexer(client, { indexTable: t.indexTable, onGap: "warn" }),
      (e: unknown) => e instanceof InvalidArgumentError && e.field === "eventTable",
    );
    // The gapped appends are parked without parking their stream, so the real appends that
    // fill the hole are indexed (they used to be dropped as duplicates), and feeding the parked
    // records again once the hole is filled indexes them: the events table confirms them.
    const lenient = dynamoIndexer(client, {
      indexTable: t.indexTable,
      eventTable: t.eventTable,
      onGap: "warn",
    });
    for (const [at, n] of [[0, 1], [1, 2], [3, 1], [4, 1]]) {
      await t.store.append("D-1", Array.from({ length: n }, () => ({ type: "T", data: 1 })), at);
    }
    const records = (await allRecords(t.eventTable)).filter((r) =>
      r.dynamodb?.NewImage?.p?.S === "D-1" && r.dynamodb.NewImage.i?.N !== "-1"
    );
    const at = (i: number) => records.filter((r) => r.dynamodb?.NewImage?.i?.N === String(i));
    await lenient.ingest(at(0));
    const w = await lenient.ingest([...at(3), ...at(4)]);
    assert.deepEqual([w.events, w.gaps, w.parked], [0, 2, 2]);
    const real = await lenient.ingest(at(1));
    assert.deepEqual([real.events, real.duplicateEvents], [2, 0]);
    const again = await lenient.ingest([...at(3), ...at(4)]);
    assert.deepEqual([again.events, again.gaps, again.parked], [2, 0, 0]);
    assert.deepEqual(spansByStream(await readIndex(t.indexTable)).get("D-1")?.next, 5);
    // Indexed now: their parked records are gone.
    assert.ok(!(await lenient.parked()).some((p) => p.stream === "D-1"));
  },
);

Deno.test(
  'dynamo indexer: under onGap "warn" a replayed forged item never takes the real append\'s place',
  opts,
  async () => {
    await using t = await tables();
    const ix = dynamoIndexer(client, {
      indexTable: t.indexTable,
      eventTable: t.eventTable,
      onGap: "warn",
    });
    const item = (i: number, n: number, type: string, ts: string) => ({
      p: { S: "F-1" },
      i: { N: String(i) },
      n: { N: String(n) },
      ts: { N: ts },
      e: { L: Array.from({ length: n - i }, () => ({ M: { t: { S: type }, id: { S: "f" } } })) },
    });
    const record = (image: Record<string, unknown>) => ({
      eventName: "INSERT",
      dynamodb: { NewImage: image },
    });
    await t.store.append("F-1", [{ type: "Real", data: 0 }, { type: "Real", data: 1 }], 0);
    await ix.ingest(
      (await allRecords(t.eventTable)).filter((r) => r.dynamodb?.NewImage?.i?.N === "0"),
    );
    // Another writer's item at version 3, past the stream's tip (2): a gap, parked.
    const forged = item(3, 4, "Forged", "5");
    await client.send(new PutItemCommand({ TableName: t.eventTable, Item: forged }));
    assert.deepEqual((await ix.ingest([record(forged)])).gaps, 1);
    // The real append at 2 fills the hole; the replayed forged record would now follow on, but
    // the events table does not confirm it (it ends past the tip): it stays parked.
    await t.store.append("F-1", [{ type: "Real", data: 2 }], 2);
    const real2 = (await allRecords(t.eventTable)).filter((r) =>
      r.dynamodb?.NewImage?.i?.N === "2"
    );
    assert.equal((await ix.ingest(real2)).events, 1);
    const replay = await ix.ingest([record(forged)]);
    assert.deepEqual([replay.events, replay.parked], [0, 1]);
    // The operator removes the forged item; the real append at 3 is written and indexed.
    await client.send(
      new DeleteItemCommand({
        TableName: t.eventTable,
        Key: { p: { S: "F-1" }, i: { N: "3" } },
      }),
    );
    await t.store.append("F-1", [{ type: "Real", data: 3 }, { type: "Real", data: 4 }], 3);
    const real3 = (await allRecords(t.eventTable)).filter((r) =>
      r.eventName === "INSERT" && r.dynamodb?.NewImage?.i?.N === "3" &&
      r.dynamodb.NewImage.n?.N === "5"
    );
    assert.equal((await ix.ingest(real3)).events, 2, "the real append is indexed whole");
    // Another replay of the forged record changes nothing.
    assert.deepEqual((await ix.ingest([record(forged)])).events, 0);
    const spans = spansByStream(await readIndex(t.indexTable)).get("F-1");
    assert.deepEqual(spans, { next: 5, types: ["Real", "Real", "Real", "Real", "Real"] });
    assert.deepEqual(await ix.parked(), [], "the gap is resolved");
  },
);

Deno.test("dynamo indexer: epochs close at the entry limit and roll over", opts, async () => {
  await using t = await tables();
  const indexer = dynamoIndexer(client, { indexTable: t.indexTable, maxEpochEntries: 3 });
  const appends = Array.from({ length: 8 }, (_, k) => summary(`S-${k}`, 0, 1));
  const r = await indexer.ingestAppends(appends);
  assert.equal(r.entries, 8);
  assert.equal(r.epochsClosed, 2);
  const index = await readIndex(t.indexTable);
  assert.deepEqual(index.map((e) => [e.entries.length, e.closed, e.count]), [[3, true, 3], [
    3,
    true,
    3,
  ], [2, false, undefined]]);
  assert.deepEqual(
    index.flatMap((e) => e.entries.map((x) => x.stream)),
    appends.map((a) => a.stream),
  );
  // An epoch filled exactly stays open until an entry does not fit.
  await indexer.ingestAppends([summary("S-8", 0, 1)]);
  assert.deepEqual((await indexer.tip("0")).epoch, 2);
  await indexer.ingestAppends([summary("S-9", 0, 1)]);
  const tip = await indexer.tip("0");
  assert.deepEqual([tip.epoch, tip.offset, tip.streams], [3, 1, 1]);
  assert.deepEqual((await readIndex(t.indexTable)).map((e) => e.entries.length), [3, 3, 3, 1]);
});

Deno.test("dynamo indexer: epochs close at the stream-count and byte limits", opts, async () => {
  await using t = await tables();
  const byStreams = dynamoIndexer(client, {
    indexTable: t.indexTable,
    maxEpochStreams: 2,
    partitionOf: () => "s",
  });
  // Entries of streams already in the epoch do not count again.
  await byStreams.ingestAppends([summary("A-1", 0, 1), summary("B-1", 0, 1)]);
  await byStreams.ingestAppends([summary("A-1", 1, 1), summary("B-1", 1, 1), summary("C-1", 0, 1)]);
  // A stream of an earlier epoch counts again in the next one.
  await byStreams.ingestAppends([summary("A-1", 2, 1)]);
  await byStreams.ingestAppends([summary("D-1", 0, 1), summary("C-1", 1, 1)]);
  const s = await readIndex(t.indexTable, "s");
  assert.deepEqual(s.map((e) => e.entries.map((x) => `${x.stream}@${x.index}`)), [
    ["A-1@0", "B-1@0", "A-1@1", "B-1@1"],
    ["C-1@0", "A-1@2"],
    ["D-1@0", "C-1@1"],
  ]);
  assert.deepEqual(s.map((e) => e.closed), [true, true, false]);

  const byBytes = dynamoIndexer(client, {
    indexTable: t.indexTable,
    maxEpochBytes: 120,
    partitionOf: () => "b",
  });
  const r = await byBytes.ingestAppends([
    summary("Long-1", 0, 5, "TypeName"),
    summary("Long-2", 0, 5, "TypeName"),
  ]);
  assert.equal(r.epochsClosed, 1);
  const b = await readIndex(t.indexTable, "b");
  assert.deepEqual(b.map((e) => e.entries.map((x) => x.stream)), [["Long-1"], ["Long-2"]]);
  // An entry bigger than the limit still goes into an (empty) epoch of its own.
  const huge = await byBytes.ingestAppends([summary("Long-3", 0, 40, "TypeName")]);
  assert.equal(huge.entries, 1);
  assert.deepEqual((await readIndex(t.indexTable, "b")).map((e) => e.entries.length), [1, 1, 1]);
});

Deno.test(
  "dynamo indexer: two indexers on the same records index each span once",
  opts,
  async () => {
    await using t = await tables();
    const appends = Array.from(
      { length: 60 },
      (_, k) => summary(`S-${k % 12}`, Math.floor(k / 12) * 2, 2),
    );
    const a = dynamoIndexer(client, { indexTable: t.indexTable, maxEpochEntries: 7 });
    const b = dynamoIndexer(client, { indexTable: t.indexTable, maxEpochEntries: 7 });
    // Like two Lambda invocations retrying overlapping batches of the same shard.
    const results: IngestResult[] = await Promise.all([
      a.ingestAppends(appends.slice(0, 36)),
      b.ingestAppends(appends),
      a.ingestAppends(appends),
    ]);
    assert.equal(
      results.reduce((n, r) => n + r.events, 0),
      120,
      "every event indexed exactly once in total",
    );
    const spans = spansByStream(await readIndex(t.indexTable));
    assert.equal(spans.size, 12);
    for (const [, s] of spans) assert.equal(s.next, 10);
  },
);

Deno.test(
  "dynamo indexer: partitions are separate sequences, listed in the index",
  opts,
  async () => {
    await using t = await tables();
    const indexer = dynamoIndexer(client, {
      indexTable: t.indexTable,
      partitionOf: (s) => s.startsWith("A") ? "a" : "b",
    });
    await indexer.ingestAppends([summary("A-1", 0, 1), summary("B-1", 0, 1), summary("A-2", 0, 1)]);
    assert.deepEqual(
      (await readIndex(t.indexTable, "a")).flatMap((e) => e.entries.map((x) => x.stream)),
      ["A-1", "A-2"],
    );
    assert.deepEqual(
      (await readIndex(t.indexTable, "b")).flatMap((e) => e.entries.map((x) => x.stream)),
      ["B-1"],
    );
    assert.deepEqual(await listPartitions(client, t.indexTable), ["a", "b"]);
    // One item per partition, at its slot: no set to outgrow.
    const { Item } = await client.send(
      new GetItemCommand({
        TableName: t.indexTable,
        Key: { p: { S: "$partitions" }, i: { N: String(await partitionSlot("a")) } },
      }),
    );
    assert.equal(Item?.pt?.S, "a");
    assert.throws(
      () => dynamoIndexer(client, { indexTable: t.indexTable, maxEpochEntries: 0 }),
      InvalidArgumentError,
    );
    assert.throws(
      () => dynamoIndexer(client, { indexTable: t.indexTable, maxEpochEntries: 1_000_001 }),
      InvalidArgumentError,
    );
    // A partition the index cannot key parks the record instead of stopping the indexer.
    const bad = dynamoIndexer(client, { indexTable: t.indexTable, partitionOf: () => "" });
    const parked = await bad.ingestAppends([summary("A-3", 0, 1)]);
    assert.equal(parked.parked, 1);
    assert.equal(parked.entries, 0);
  },
);

Deno.test(
  "dynamo indexer: the streams runner tails the table and resumes from its shard progress",
  opts,
  async () => {
    await using t = await tables();
    const { store, eventTable, indexTable } = t;
    const indexer = dynamoIndexer(client, { indexTable });
    let indexed = 0;
    let waiter: (() => void) | undefined;
    const onIngest = (r: IngestResult) => {
      indexed += r.events;
      waiter?.();
    };
    const until = async (events: number) => {
      const deadline = Date.now() + 20_000;
      while (indexed < events) {
        assert.ok(Date.now() < deadline, `indexed ${indexed} of ${events} events in time`);
        await new Promise<void>((resolve) => {
          waiter = resolve;
          setTimeout(resolve, 200);
        });
      }
    };
    const stop = new AbortController();
    const running = runStreamsIndexer({
      client,
      streamsClient,
      eventTable,
      indexer,
      signal: stop.signal,
      pollIntervalMs: 20,
      onIngest,
    });
    for (let k = 0; k < 10; k++) {
      await store.append(`Run-${k % 3}`, [{ type: "T", data: k }], "any");
    }
    await until(10);
    stop.abort();
    await running;

    // Restarted, the runner skips what its progress records instead of replaying from the start.
    indexed = 0;
    let duplicates = 0;
    const stop2 = new AbortController();
    const running2 = runStreamsIndexer({
      client,
      streamsClient,
      eventTable,
      indexer,
      signal: stop2.signal,
      pollIntervalMs: 20,
      onIngest: (r) => {
        duplicates += r.duplicateEvents;
        onIngest(r);
      },
    });
    for (let k = 10; k < 15; k++) {
      await store.append(`Run-${k % 3}`, [{ type: "T", data: k }], "any");
    }
    await until(5);
    stop2.abort();
    await running2;
    assert.equal(duplicates, 0);
    const spans = spansByStream(await readIndex(indexTable));
    assert.deepEqual([...spans].map(([s, x]) => [s, x.next]).sort(), [["Run-0", 5], ["Run-1", 5], [
      "Run-2",
      5,
    ]]);
  },
);

Deno.test(
  "dynamo indexer: the runner parks a gapped stream and carries on with the others",
  opts,
  async () => {
    await using t = await tables();
    const { store, eventTable, indexTable } = t;
    await store.append("Gap-1", [{ type: "A", data: 0 }, { type: "B", data: 1 }], 0);
    await store.append("Gap-1", [{ type: "C", data: 2 }], 2);
    await store.append("Other-1", [{ type: "A", data: 0 }], 0);
    const records = await allRecords(eventTable);
    const lost = records.find((r) => r.eventName === "INSERT" && r.dynamodb?.Keys?.i?.N === "0")!;
    const { Table } = await client.send(new DescribeTableCommand({ TableName: eventTable }));
    const { StreamDescription } = await streamsClient.send(
      new DescribeStreamCommand({ StreamArn: Table!.LatestStreamArn }),
    );
    assert.equal(StreamDescription!.Shards!.length, 1);
    // Pretend an earlier run passed the first append without indexing it: its record is lost.
    await client.send(
      new PutItemCommand({
        TableName: indexTable,
        Item: {
          p: { S: `$shard#${eventTable}#${StreamDescription!.Shards![0].ShardId}` },
          i: { N: "0" },
          seq: { S: lost.dynamodb!.SequenceNumber! },
          done: { BOOL: false },
        },
      }),
    );
    const indexer = dynamoIndexer(client, { indexTable });
    const stop = new AbortController();
    const timer = setTimeout(() => stop.abort(), 15_000);
    let indexed = 0;
    try {
      await runStreamsIndexer({
        client,
        streamsClient,
        eventTable,
        indexer,
        signal: stop.signal,
        pollIntervalMs: 20,
        onIngest: (r) => {
          indexed += r.events;
          if (indexed >= 1) stop.abort();
        },
      });
    } finally {
      clearTimeout(timer);
    }
    assert.deepEqual([...spansByStream(await readIndex(indexTable)).keys()], ["Other-1"]);
    const parked = await indexer.parked();
    assert.deepEqual(parked.map((p) => [p.stream, p.index]), [["Gap-1", 2]]);
    assert.match(parked[0].reason, /expected an append at version 0, got one at 2/);
  },
);
