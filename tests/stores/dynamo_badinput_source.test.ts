// DynamoDB under bad input (issue 21), the reading side: a bad record fails its stream, not the
// source; a damaged index is detected, never silently followed. Against DynamoDB Local; the
// damage is real items written straight into the tables.
import assert from "node:assert/strict";
import { type AttributeValue, PutItemCommand } from "@aws-sdk/client-dynamodb";
import type { Batch } from "../../core/batch.ts";
import { EventDecodeError } from "../../core/codec.ts";
import type { StreamFailure } from "../../core/failure.ts";
import { run, streamsSink } from "../../core/sink.ts";
import { InvalidStreamNameError } from "../../core/streamName.ts";
import { sleep } from "../../core/tranches.ts";
import { memoryCheckpoints } from "../../checkpoints/memory.ts";
import { dynamoStore } from "../../stores/dynamo.ts";
import {
  encodeEntries,
  EPOCH_FACTOR,
  epochKey,
  type IndexEntry,
  PARTITIONS_KEY,
  tipKey,
} from "../../stores/dynamo-index.ts";
import { DynamoIndexOrderError, dynamoSource, encodePosition } from "../../sources/dynamo.ts";
import { client, freshTables, opts } from "../support/dynamo.ts";

const put = (TableName: string, Item: Record<string, AttributeValue>) =>
  client.send(new PutItemCommand({ TableName, Item }));

const entry = (stream: string, index: number, next: number, type = "T"): IndexEntry => ({
  stream,
  index,
  next,
  types: Array.from({ length: next - index }, () => type),
  time: 1_700_000_000_000,
});

/** One chunk of an index as written by hand: entries at `start`, `c` as given (default right). */
interface Chunk {
  readonly start: number;
  readonly entries?: readonly IndexEntry[];
  readonly count?: number;
  readonly json?: string;
}

/** Writes partition "0" of an index by hand: per epoch its chunks and end marker (count). */
async function writeIndex(
  indexTable: string,
  epochs: readonly { chunks: readonly Chunk[]; closedAt?: number }[],
) {
  await put(indexTable, { p: { S: PARTITIONS_KEY }, i: { N: "0" }, ps: { SS: ["0"] } });
  for (const [epoch, { chunks, closedAt }] of epochs.entries()) {
    for (const c of chunks) {
      await put(indexTable, {
        p: { S: epochKey("0", epoch) },
        i: { N: String(c.start) },
        j: { S: c.json ?? encodeEntries(c.entries ?? []) },
        c: { N: String(c.count ?? c.entries?.length ?? 0) },
      });
    }
    if (closedAt !== undefined) {
      await put(indexTable, {
        p: { S: epochKey("0", epoch) },
        i: { N: String(EPOCH_FACTOR) },
        closed: { BOOL: true },
        c: { N: String(closedAt) },
      });
    }
  }
}

async function tables() {
  const t = await freshTables({ eventTable: "events", indexTable: "index" }, "ddbbad-");
  return { ...t, store: dynamoStore(client, { tableName: t.eventTable }) };
}

/** Runs a reactor with the deadLetter policy until `done` holds; returns what it saw. */
async function react(
  source: ReadableStream<Batch>,
  done: (seen: string[], parked: StreamFailure[]) => boolean,
  stop: AbortController,
) {
  const seen: string[] = [];
  const parked: StreamFailure[] = [];
  const sink = streamsSink({
    statsIntervalMs: 0,
    retry: { initialDelayMs: 1 },
    failure: { kind: "deadLetter", maxAttempts: 2, deadLetter: (f) => void parked.push(f) },
    handler: (stream, events) => void seen.push(...events.map((e) => `${stream}@${e.index}`)),
  });
  const running = run(source, sink, { signal: stop.signal });
  const deadline = Date.now() + 15_000;
  try {
    while (!done(seen, parked)) {
      assert.ok(Date.now() < deadline, `done in time; saw ${seen}, parked ${parked.length}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  } finally {
    stop.abort();
    await running;
  }
  return { seen, parked };
}

Deno.test(
  "dynamo bad input: an undecodable body and a name without an id fail their streams only",
  opts,
  async () => {
    await using t = await tables();
    const { store } = t;
    await store.append("Good-1", [{ type: "T", data: 1 }, { type: "T", data: 2 }], 0);
    await store.append("Bad-1", [{ type: "T", data: 1 }], 0);
    // Another writer's event whose body is not JSON.
    await put(t.eventTable, {
      p: { S: "Bad-1" },
      i: { N: "1" },
      n: { N: "3" },
      ts: { N: "0" },
      e: {
        L: [
          { M: { t: { S: "T" }, id: { S: "x1" }, d: { S: "{not json" } } },
          { M: { t: { S: "T" }, id: { S: "x2" }, d: { S: "3" } } },
        ],
      },
    });
    // ... which moved the tip as the store does, so that the item is the stream's.
    await put(t.eventTable, { p: { S: "Bad-1" }, i: { N: "-1" }, n: { N: "3" } });
    await store.append("Good-2", [{ type: "T", data: 1 }], 0);
    // A plain read of the stream names the bad event with a typed error, not a SyntaxError.
    await assert.rejects(
      () => store.readStream("Bad-1"),
      (e: unknown) => e instanceof EventDecodeError && e.index === 1,
    );
    await writeIndex(t.indexTable, [{
      chunks: [{
        start: 0,
        entries: [
          entry("Good-1", 0, 2),
          entry("Bad-1", 0, 3),
          entry("Cat", 0, 1),
          entry("Good-2", 0, 1),
        ],
      }],
    }]);
    const checkpoints = memoryCheckpoints();
    const stop = new AbortController();
    const source = dynamoSource({
      client,
      indexTable: t.indexTable,
      eventTable: t.eventTable,
      group: "reactor",
      checkpoints,
      tailSleepMs: 20,
      signal: stop.signal,
    });
    const { seen, parked } = await react(
      source,
      (seen, parked) => seen.length >= 5 && parked.length >= 2,
      stop,
    );
    // Bad-1's bad event goes to the dead letter, as a handler error would, and its stream moves
    // on; the other streams never notice.
    assert.deepEqual(seen.sort(), ["Bad-1@0", "Bad-1@2", "Good-1@0", "Good-1@1", "Good-2@0"]);
    const byStream = new Map(parked.map((f) => [f.stream, f]));
    assert.ok(byStream.get("Bad-1")!.error instanceof EventDecodeError);
    assert.match(String(byStream.get("Bad-1")!.error), /not JSON/);
    assert.equal(byStream.get("Bad-1")!.events[0].index, 1);
    assert.equal(
      byStream.get("Bad-1")!.events[0].data,
      "{not json",
      "the raw body, for the dead letter",
    );
    assert.ok(byStream.get("Cat")!.error instanceof InvalidStreamNameError);
    // The partition moved on past both: its checkpoint is the end of the chunk.
    const position = await checkpoints.load({
      source: `dynamo:${t.indexTable}`,
      tranche: "0",
      group: "reactor",
    });
    assert.equal(position, encodePosition(0, 4));
  },
);

Deno.test(
  "dynamo bad input: event attributes of the wrong type fail their stream, nothing made up",
  opts,
  async () => {
    await using t = await tables();
    const { store } = t;
    await store.append("Good-1", [{ type: "T", data: 1 }], 0);
    // Another writer's append: a numeric type, then a numeric body, then a good event.
    await put(t.eventTable, {
      p: { S: "Odd-1" },
      i: { N: "0" },
      n: { N: "3" },
      ts: { N: "0" },
      e: {
        L: [
          { M: { t: { N: "7" }, id: { S: "x0" }, d: { S: "1" } } },
          { M: { t: { S: "T" }, id: { S: "x1" }, d: { N: "3" } } },
          { M: { t: { S: "T" }, id: { S: "x2" }, d: { S: "4" } } },
        ],
      },
    });
    await put(t.eventTable, { p: { S: "Odd-1" }, i: { N: "-1" }, n: { N: "3" } });
    // A plain read names the first bad event; with onInvalid each bad one is handed over typed
    // and only the good one is returned.
    await assert.rejects(
      () => store.readStream("Odd-1"),
      (e: unknown) => e instanceof EventDecodeError && e.index === 0 && /no type/.test(e.message),
    );
    const invalid: [number, string][] = [];
    const read = await store.readStream("Odd-1", {
      onInvalid: (event, error) => invalid.push([event.index, error.message]),
    });
    assert.deepEqual(read.map((e) => [e.index, e.type, e.data]), [[2, "T", 4]]);
    assert.deepEqual(invalid.map(([k]) => k), [0, 1]);
    assert.match(invalid[0][1], /no type/);
    assert.match(invalid[1][1], /data \(d\) is neither JSON text nor binary/);
    await writeIndex(t.indexTable, [{
      chunks: [{ start: 0, entries: [entry("Odd-1", 0, 3), entry("Good-1", 0, 1)] }],
    }]);
    const stop = new AbortController();
    const source = dynamoSource({
      client,
      indexTable: t.indexTable,
      eventTable: t.eventTable,
      group: "reactor",
      checkpoints: memoryCheckpoints(),
      tailSleepMs: 20,
      signal: stop.signal,
    });
    const { seen, parked } = await react(
      source,
      (seen, parked) => seen.length >= 2 && parked.length >= 2,
      stop,
    );
    // The handler never sees a made-up event (type "" or data undefined): each bad one goes to
    // the dead letter on its own, the good one after them is handled, and Good-1 carries on.
    assert.deepEqual(seen.sort(), ["Good-1@0", "Odd-1@2"]);
    assert.deepEqual(parked.map((f) => [f.stream, f.events.map((e) => e.index)]), [
      ["Odd-1", [0]],
      ["Odd-1", [1]],
    ]);
    assert.ok(parked.every((f) => f.error instanceof EventDecodeError));
  },
);

/**
 * Reads index-only batches until partition "0" stops as damaged (within 10 s): the source goes
 * on, the partition shows in problems() as failing. Returns that problem's reason and the items.
 */
async function readError(indexTable: string, chunksPerRead = 20, consistentRead = true) {
  const source = dynamoSource({
    client,
    indexTable,
    group: "g",
    checkpoints: memoryCheckpoints(),
    tailSleepMs: 20,
    chunksPerRead,
    partitionRefreshMs: 50,
    consistentRead,
  });
  const reader = source.getReader();
  const items: string[] = [];
  const sizes: number[] = [];
  const deadline = Date.now() + 10_000;
  let pending = reader.read();
  const next = () => Promise.race([pending, sleep(50).then(() => undefined)]);
  const take = (r: ReadableStreamReadResult<Batch>) => {
    assert.ok(!r.done, "the source goes on; only the partition stops");
    items.push(...r.value.items.map((i) => `${i.stream}@${i.event.index}`));
    sizes.push(...r.value.items.map((i) => i.event.size));
    pending = reader.read();
  };
  try {
    while (Date.now() < deadline) {
      const stopped = source.problems!().find((p) => p.tranche === "0");
      if (stopped !== undefined) {
        assert.equal(stopped.severity, "failing");
        // What was read before the damage is handed on, then nothing more.
        for (let r = await next(); r !== undefined; r = await next()) take(r);
        return { reason: stopped.reason, items, sizes };
      }
      const r = await next();
      if (r !== undefined) take(r);
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
  assert.fail(`the partition was not stopped; it read ${items}`);
}

const corrupt = (reason: string, pattern: RegExp) => {
  assert.match(reason, /stopped reading: DynamoIndexCorruptError: index partition 0, /);
  assert.match(reason, pattern);
};

Deno.test(
  "dynamo bad input: a chunk with an extra entry is an overlap error, not a skipped event",
  opts,
  async () => {
    for (const chunksPerRead of [20, 1]) {
      await using t = await tables();
      await writeIndex(t.indexTable, [{
        chunks: [
          { start: 0, entries: [entry("A-1", 0, 1), entry("B-1", 0, 1), entry("X-1", 0, 1)] },
          { start: 2, entries: [entry("C-1", 0, 1)] },
        ],
      }]);
      const { reason, items } = await readError(t.indexTable, chunksPerRead);
      corrupt(reason, /overlaps the one before, which ends at 3/);
      assert.ok(!items.includes("C-1@0"), "nothing after the damage is delivered as if whole");
    }
  },
);

Deno.test(
  "dynamo bad input: a miscounted or missing epoch end marker is an error, not a silent tail",
  opts,
  async () => {
    {
      await using t = await tables();
      await writeIndex(t.indexTable, [
        { chunks: [{ start: 0, entries: [entry("A-1", 0, 1), entry("B-1", 0, 1)] }], closedAt: 3 },
        { chunks: [{ start: 0, entries: [entry("C-1", 0, 1)] }] },
      ]);
      const { reason } = await readError(t.indexTable);
      corrupt(reason, /end marker counts 3 entries but the chunks end at 2/);
    }
    {
      await using t = await tables();
      await writeIndex(t.indexTable, [
        { chunks: [{ start: 0, entries: [entry("A-1", 0, 1), entry("B-1", 0, 1)] }] },
        { chunks: [{ start: 0, entries: [entry("C-1", 0, 1)] }] },
      ]);
      await put(t.indexTable, {
        p: { S: tipKey("0") },
        i: { N: "0" },
        ep: { N: "1" },
        o: { N: "1" },
        b: { N: "0" },
        s: { N: "1" },
      });
      const { reason, items } = await readError(t.indexTable);
      corrupt(reason, /no end marker but the partition's tip is at epoch 1/);
      assert.deepEqual(items, ["A-1@0", "B-1@0"], "epoch 0 is read before the damage shows");
    }
  },
);

Deno.test(
  "dynamo bad input: a chunk with an entry removed is an error, not a stall",
  opts,
  async () => {
    {
      // The count still says two.
      await using t = await tables();
      await writeIndex(t.indexTable, [{
        chunks: [{ start: 0, entries: [entry("A-1", 0, 1)], count: 2 }],
      }]);
      corrupt((await readError(t.indexTable)).reason, /holds 1 entries but its count says 2/);
    }
    {
      // Count edited too: the hole shows against the next chunk.
      await using t = await tables();
      await writeIndex(t.indexTable, [{
        chunks: [
          { start: 0, entries: [entry("A-1", 0, 1)] },
          { start: 2, entries: [entry("C-1", 0, 1)] },
        ],
      }]);
      corrupt((await readError(t.indexTable)).reason, /entries 1 to 1 are missing/);
    }
  },
);

Deno.test(
  "dynamo bad input: with eventual reads a hole in a complete epoch is an error, not a wait",
  opts,
  async () => {
    {
      // The end marker is visible: the epoch is complete, so the hole is damage.
      await using t = await tables();
      await writeIndex(t.indexTable, [{
        chunks: [
          { start: 0, entries: [entry("A-1", 0, 1, "€€€")] },
          { start: 2, entries: [entry("C-1", 0, 1)] },
        ],
        closedAt: 3,
      }, { chunks: [{ start: 0, entries: [entry("D-1", 0, 1)] }] }]);
      // One chunk per read: A-1 is delivered before the hole is met.
      const { reason, items, sizes } = await readError(t.indexTable, 1, false);
      corrupt(reason, /entries 1 to 1 are missing \(the epoch is complete\)/);
      assert.deepEqual(items, ["A-1@0"]);
      // Index-only events are sized in UTF-8 bytes, like bodies.
      assert.deepEqual(sizes, [9]);
    }
    {
      // No end marker, but the tip has moved past the epoch.
      await using t = await tables();
      await writeIndex(t.indexTable, [{
        chunks: [
          { start: 0, entries: [entry("A-1", 0, 1)] },
          { start: 2, entries: [entry("C-1", 0, 1)] },
        ],
      }, { chunks: [{ start: 0, entries: [entry("D-1", 0, 1)] }] }]);
      await put(t.indexTable, {
        p: { S: tipKey("0") },
        i: { N: "0" },
        ep: { N: "1" },
        o: { N: "1" },
        b: { N: "0" },
        s: { N: "1" },
      });
      corrupt((await readError(t.indexTable, 20, false)).reason, /entries 1 to 1 are missing/);
    }
  },
);

Deno.test(
  "dynamo bad input: undecodable chunk JSON or a short types list is a typed error",
  opts,
  async () => {
    {
      await using t = await tables();
      await writeIndex(t.indexTable, [{ chunks: [{ start: 0, json: '[["A-1",0,1,', count: 1 }] }]);
      corrupt((await readError(t.indexTable)).reason, /does not parse/);
    }
    {
      await using t = await tables();
      await writeIndex(t.indexTable, [{
        chunks: [{ start: 0, json: '[["A-1",0,3,["T"],5]]', count: 1 }],
      }]);
      corrupt((await readError(t.indexTable)).reason, /entry 0 is not \[stream, index, next/);
    }
  },
);

Deno.test(
  "dynamo bad input: a damaged partition stops alone; the other partitions carry on",
  opts,
  async () => {
    await using t = await tables();
    // Partition 0 has a hole after its first entry; partition 1 is whole.
    await writeIndex(t.indexTable, [{
      chunks: [
        { start: 0, entries: [entry("A-1", 0, 1)] },
        { start: 2, entries: [entry("C-1", 0, 1)] },
      ],
    }]);
    await put(t.indexTable, { p: { S: PARTITIONS_KEY }, i: { N: "0" }, ps: { SS: ["0", "1"] } });
    const chunk = (start: number, entries: IndexEntry[]) =>
      put(t.indexTable, {
        p: { S: epochKey("1", 0) },
        i: { N: String(start) },
        j: { S: encodeEntries(entries) },
        c: { N: String(entries.length) },
      });
    await chunk(0, [entry("P-1", 0, 1), entry("P-2", 0, 1)]);
    const checkpoints = memoryCheckpoints();
    const stop = new AbortController();
    const source = dynamoSource({
      client,
      indexTable: t.indexTable,
      group: "reactor",
      checkpoints,
      tailSleepMs: 20,
      chunksPerRead: 1, // A-1 is read (and committed) before the hole is met
      signal: stop.signal,
    });
    const seen = new Set<string>();
    const sink = streamsSink({
      statsIntervalMs: 0,
      commitIntervalMs: 20,
      handler: (stream, events) => events.forEach((e) => seen.add(`${stream}@${e.index}`)),
    });
    let ended: unknown = "running";
    const running = run(source, sink, { signal: stop.signal }).then(
      () => ended = "resolved",
      (e) => ended = e,
    );
    const until = async (what: string, cond: () => boolean) => {
      const deadline = Date.now() + 10_000;
      while (!cond()) {
        assert.ok(Date.now() < deadline, `${what}; saw ${[...seen]}`);
        await sleep(20);
      }
    };
    try {
      await until("both partitions read", () => seen.has("A-1@0") && seen.has("P-2@0"));
      await until("partition 0 stopped", () => source.problems!().some((p) => p.tranche === "0"));
      const [problem] = source.problems!();
      assert.equal(problem.severity, "failing");
      assert.match(problem.reason, /DynamoIndexCorruptError: .*entries 1 to 1 are missing/);
      // Partition 1 goes on reading what is indexed after the damage was found.
      await chunk(2, [entry("P-3", 0, 1)]);
      await until("partition 1 carries on", () => seen.has("P-3@0"));
      assert.equal(ended, "running", "the pipeline is not failed by one partition");
      assert.ok(!seen.has("C-1@0"), "nothing past the damage is delivered");
      const key = (tranche: string) => ({
        source: `dynamo:${t.indexTable}`,
        tranche,
        group: "reactor",
      });
      await until("checkpoints", () => sink.stats().tranches.length === 2);
      await sleep(100);
      assert.equal(await checkpoints.load(key("0")), encodePosition(0, 1), "before the damage");
      assert.equal(await checkpoints.load(key("1")), encodePosition(0, 3));
    } finally {
      stop.abort();
      await running;
    }
  },
);

Deno.test(
  "dynamo bad input: an index that skips or repeats a stream's versions fails that stream only",
  opts,
  async () => {
    for (const bodies of [false, true]) {
      await using t = await tables();
      if (bodies) {
        const data = (s: string, n: number) =>
          Array.from({ length: n }, (_, k) => ({ type: "T", data: `${s}${k}` }));
        await t.store.append("A-1", data("a", 6), 0);
        await t.store.append("B-1", data("b", 3), 0);
        await t.store.append("C-1", data("c", 4), 0);
      }
      // A-1 skips version 2, then repeats 1 to 2 (nothing new: its next event reports it);
      // C-1's second entry overlaps its first by one; B-1 is whole.
      await writeIndex(t.indexTable, [{
        chunks: [
          { start: 0, entries: [entry("A-1", 0, 2), entry("B-1", 0, 1), entry("C-1", 0, 2)] },
          { start: 3, entries: [entry("A-1", 3, 4), entry("B-1", 1, 2), entry("C-1", 1, 4)] },
          { start: 6, entries: [entry("A-1", 1, 3), entry("B-1", 2, 3)] },
          { start: 8, entries: [entry("A-1", 4, 6)] },
        ],
      }]);
      const stop = new AbortController();
      const checkpoints = memoryCheckpoints();
      const source = dynamoSource({
        client,
        indexTable: t.indexTable,
        eventTable: bodies ? t.eventTable : undefined,
        group: "reactor",
        checkpoints,
        tailSleepMs: 20,
        chunksPerRead: 1, // A-1's repeat, then its next entry in a later read
        signal: stop.signal,
      });
      const { seen, parked } = await react(
        source,
        (seen, parked) => seen.length >= 10 && parked.length >= 3,
        stop,
      );
      // Each damaged place goes to the dead letter of its stream, in the stream's order; every
      // other event is handled once; B-1 never notices.
      assert.deepEqual(seen.sort(), [
        "A-1@0",
        "A-1@1",
        "A-1@3",
        "A-1@5",
        "B-1@0",
        "B-1@1",
        "B-1@2",
        "C-1@0",
        "C-1@1",
        "C-1@3",
      ]);
      const failures = parked.map((f) => {
        assert.ok(f.error instanceof DynamoIndexOrderError, String(f.error));
        return [f.stream, f.events.map((e) => e.index), f.error.kind, f.error.expected];
      });
      assert.deepEqual(failures.sort(), [
        ["A-1", [2], "gap", 2],
        ["A-1", [4], "repeat", 4],
        ["C-1", [2], "repeat", 2],
      ]);
      const at = (stream: string, index: number) =>
        parked.find((f) => f.stream === stream && f.events[0].index === index)!;
      const skipped = at("A-1", 2).error as DynamoIndexOrderError;
      assert.match(
        skipped.message,
        /offset 3: .*"A-1" starts at version 3 .* versions 2 to 2 are missing/,
      );
      if (bodies) {
        // The repeat is reported on a real event, which the dead letter receives whole.
        assert.equal(at("A-1", 4).events[0].data, "a4");
        assert.equal(at("C-1", 2).events[0].data, "c2");
      }
    }
  },
);
