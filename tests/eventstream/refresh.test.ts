// The service's background refresh (`refreshMs`): two services over one stream (memory, files,
// blobs on Azurite), the reader's localState follows the writer's appends without a
// currentState() call; a failed refresh is a typed error on localState until a read succeeds;
// refreshes never overlap an append's reads (one reader); close() stops them.
import assert from "node:assert/strict";
import { readdir, writeFile } from "node:fs/promises";
import {
  CorruptFrameError,
  encodeFrames,
  type EventStorage,
  eventStream,
  type EventStreamService,
  fileStorage,
  memoryStorage,
  StreamRefreshError,
} from "../../eventstream/mod.ts";
import { blobStorage } from "../../eventstream/blob.ts";
import { InvalidArgumentError } from "../../core/errors.ts";
import { service as azurite, uniqueContainer } from "./azurite.ts";
import { sleep } from "../support/core.ts";

type Event = { word: string };
type State = { count: number; words: Readonly<Record<string, number>> };

const start = (storage: EventStorage, refreshMs?: number) =>
  eventStream<Event, State>({
    storage,
    refreshMs,
    projections: {
      count: { name: "Count-1", initial: 0, apply: (n) => n + 1 },
      words: {
        name: "Words-1",
        initial: {},
        apply: (s, e) => ({ ...s, [e.word]: (s[e.word] ?? 0) + 1 }),
      },
    },
  });

/** Waits until `service.localState` has `count` events (the refresh's doing: nothing else reads). */
async function untilCount(service: EventStreamService<Event, State>, count: number) {
  const deadline = Date.now() + 10_000;
  while (service.localState.count < count) {
    if (Date.now() > deadline) {
      throw new Error(`localState stayed at ${service.localState.count} of ${count}`);
    }
    await sleep(5);
  }
}

/** A writer appends; a reader with refreshMs follows in localState alone. */
async function follows(
  writer: EventStreamService<Event, State>,
  reader: EventStreamService<Event, State>,
) {
  await Promise.all([writer.ready, reader.ready]);
  for (const word of ["a", "b", "a"]) await writer.append(() => [{ word }]);
  await untilCount(reader, 3);
  assert.deepEqual(reader.localState, writer.localState);
  assert.deepEqual(reader.localState.words, { a: 2, b: 1 });
  assert.equal(reader.sequence, 3);
  assert.equal(reader.refreshError, undefined);
  // And it keeps following.
  await writer.append(() => [{ word: "c" }, { word: "c" }]);
  await untilCount(reader, 5);
  assert.deepEqual(reader.localState.words, { a: 2, b: 1, c: 2 });
}

Deno.test("refresh: a memory stream's second service follows the first's appends", async () => {
  const storage = memoryStorage();
  const writer = start(storage);
  const reader = start(storage, 5);
  await follows(writer, reader);
  await reader.close();
  await writer.close();
});

Deno.test("refresh: a read-only file service follows the writer's appends", async () => {
  const dir = await Deno.makeTempDir();
  const writer = start(await fileStorage(dir, { fsync: "never" }));
  await writer.ready;
  const reader = start(await fileStorage(dir, { readOnly: true }), 5);
  await follows(writer, reader);
  await reader.close();
  await writer.close();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("refresh: two writer services on one blob stream follow each other", async () => {
  const container = azurite.getContainerClient(uniqueContainer("refresh"));
  const a = start(await blobStorage({ container }), 10);
  const b = start(await blobStorage({ container }), 10);
  await follows(a, b);
  // The other way round, and appends of both: each sees every event without asking.
  await b.append(() => [{ word: "b" }]);
  await untilCount(a, 6);
  await Promise.all([a.append(() => [{ word: "x" }]), b.append(() => [{ word: "y" }])]);
  await Promise.all([untilCount(a, 8), untilCount(b, 8)]);
  assert.deepEqual(a.localState, b.localState);
  assert.deepEqual(a.localState.words, { a: 2, b: 2, c: 2, x: 1, y: 1 });
  await a.close();
  await b.close();
  await container.delete();
});

/**
 * Memory storage with a switch to make every call fail (a deliberate fault), counting calls in
 * flight at once and calls made.
 */
function watched() {
  const inner = memoryStorage();
  let failing = false;
  let inFlight = 0;
  const counts = { calls: 0, maxInFlight: 0 };
  const wrap = <A extends unknown[], T>(fn: (...args: A) => Promise<T>) => async (...args: A) => {
    counts.calls++;
    inFlight++;
    counts.maxInFlight = Math.max(counts.maxInFlight, inFlight);
    try {
      await sleep(1); // so that overlapping calls would be seen overlapping
      if (failing) throw new Error("storage unreachable");
      return await fn(...args);
    } finally {
      inFlight--;
    }
  };
  const storage: EventStorage = {
    name: "watched",
    read: wrap((after: number, max?: number) => inner.read(after, max)),
    last: wrap(() => inner.last()),
    append: wrap((after: number, events: readonly unknown[]) => inner.append(after, events)),
    close: () => Promise.resolve(),
  };
  return { inner, storage, counts, fail: (on: boolean) => void (failing = on) };
}

Deno.test("refresh: a failed refresh is StreamRefreshError on localState until a read succeeds", async () => {
  const w = watched();
  const service = start(w.storage, 2);
  await service.ready;
  await w.inner.append(0, [{ word: "a" }]);
  await untilCount(service, 1);
  w.fail(true);
  const deadline = Date.now() + 5000;
  while (service.refreshError === undefined && Date.now() < deadline) await sleep(2);
  assert.match(String(service.refreshError), /storage unreachable/);
  assert.throws(() => service.localState, (e: unknown) => {
    assert.ok(e instanceof StreamRefreshError);
    assert.match((e.cause as Error).message, /storage unreachable/);
    return true;
  });
  // The refresh keeps trying; once the storage answers it catches up and clears the error.
  await w.inner.append(1, [{ word: "b" }]);
  w.fail(false);
  while (service.refreshError !== undefined && Date.now() < deadline) await sleep(2);
  assert.equal(service.refreshError, undefined);
  await untilCount(service, 2);
  assert.deepEqual(service.localState.words, { a: 1, b: 1 });
  await service.close();
});

Deno.test("refresh: a corrupt frame seen by the refresh of a file reader is surfaced", async () => {
  const dir = await Deno.makeTempDir();
  const writer = await fileStorage(dir, { fsync: "never" });
  await writer.append(0, [{ word: "a" }]);
  await writer.close();
  const reader = start(await fileStorage(dir, { readOnly: true }), 5);
  await reader.ready;
  // The next append's frame, with a payload byte flipped, at the end of the segment.
  const [segment] = (await readdir(dir)).filter((n) => n.endsWith(".seg"));
  const path = `${dir}/${segment}`;
  const frame = encodeFrames(2, [{ word: "bbbbbbbb" }]);
  frame[frame.length - 5] ^= 1;
  const size = (await Deno.stat(path)).size;
  await writeFile(path, frame, { flag: "a" });
  const deadline = Date.now() + 5000;
  while (reader.refreshError === undefined && Date.now() < deadline) await sleep(5);
  const error = reader.refreshError;
  assert.ok(error instanceof CorruptFrameError, String(error));
  assert.equal(error.where, path);
  assert.equal(error.position, size);
  assert.throws(() => reader.localState, StreamRefreshError);
  await assert.rejects(reader.currentState(), CorruptFrameError);
  await reader.close();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("refresh: never overlaps an append's reads; close() stops it", async () => {
  const w = watched();
  const a = start(w.storage, 1);
  const other = start(w.inner);
  await Promise.all([a.ready, other.ready]);
  // Another writer keeps appending, so that a's appends conflict and catch up while refreshes run.
  for (let i = 0; i < 30; i++) {
    await other.append(() => [{ word: "o" }]);
    await a.append(() => [{ word: "a" }]);
  }
  assert.equal(w.counts.maxInFlight, 1, "two storage calls of one service at once");
  assert.deepEqual((await a.currentState()).words, { o: 30, a: 30 });
  await a.close();
  const calls = w.counts.calls;
  await sleep(30);
  assert.equal(w.counts.calls, calls, "storage calls after close()");
  await other.close();
});

Deno.test("refresh: refreshMs must be a positive integer", () => {
  for (const refreshMs of [0, -1, 1.5, "10" as unknown as number]) {
    assert.throws(() => start(memoryStorage(), refreshMs), InvalidArgumentError, String(refreshMs));
  }
});
