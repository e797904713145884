// The service: catch-up, state access, appends retried on conflict, snapshots.
import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import {
  AppendAttemptsExhaustedError,
  type EventStorage,
  eventStream,
  fileSnapshots,
  fileStorage,
  memorySnapshots,
  memoryStorage,
  type Projection,
  type SnapshotStore,
  StreamNotReadyError,
} from "../../eventstream/mod.ts";
import { InvalidArgumentError } from "../../core/errors.ts";

type Event = { type: "Updated"; key: string; value: number } | { type: "Deleted"; key: string };
type Words = Readonly<Record<string, number>>;

const words: Projection<Event, Words> = {
  name: "Words-18",
  initial: {},
  apply(state, e) {
    if (e.type === "Updated") return { ...state, [e.key]: e.value };
    const { [e.key]: _, ...rest } = state;
    return rest;
  },
  save: (state) => state,
  load: (json) => {
    if (json === null || typeof json !== "object") throw new TypeError("not an object");
    return json as Words;
  },
};
const count: Projection<Event, number> = {
  name: "Count-1",
  initial: 0,
  apply: (n) => n + 1,
  save: (n) => n,
  load: (json) => json as number,
};

const start = (
  storage: EventStorage,
  extra: { snapshots?: SnapshotStore; onWarning?: (m: string) => void } = {},
) =>
  eventStream<Event, { words: Words; count: number }>({
    storage,
    projections: { words, count },
    ...extra,
  });

const bump = (key: string) => (state: { words: Words }) => {
  const value = (state.words[key] ?? 0) + 1;
  return { events: [{ type: "Updated" as const, key, value }], result: value };
};

Deno.test("service: catches up before ready; state before ready is a typed error", async () => {
  const storage = memoryStorage({
    events: [
      { type: "Updated", key: "a", value: 1 },
      { type: "Updated", key: "b", value: 5 },
      { type: "Deleted", key: "a" },
    ],
  });
  const service = start(storage);
  assert.equal(service.isReady, false);
  assert.throws(() => service.localState, StreamNotReadyError);
  await assert.rejects(service.append(() => []), StreamNotReadyError);
  await assert.rejects(service.currentState(), StreamNotReadyError);
  await service.ready;
  assert.equal(service.isReady, true);
  assert.deepEqual(service.localState, { words: { b: 5 }, count: 3 });
  assert.equal(service.sequence, 3);
  await service.close();
});

Deno.test("service: a catch-up that fails rejects ready and names the cause", async () => {
  const dir = await Deno.makeTempDir();
  const storage = await fileStorage(dir, { fsync: "never", segmentBytes: 100 });
  let last = 0;
  for (let i = 0; i < 10; i++) {
    last = await storage.append(last, [{ type: "Updated", key: "k", value: i }]);
  }
  await storage.close();
  const first =
    (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name).filter((n) => n.endsWith(".seg"))
      .sort()[0];
  const bytes = await readFile(`${dir}/${first}`);
  bytes[20] ^= 1;
  await writeFile(`${dir}/${first}`, bytes);
  const service = start(await fileStorage(dir));
  await assert.rejects(service.ready, /corrupt frame .* at byte 0 \(checksum\)/);
  assert.throws(
    () => service.localState,
    (e: unknown) => e instanceof StreamNotReadyError && /failed to catch up/.test(e.message),
  );
  await service.close();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("service: localState is immediate, currentState reads other writers' events", async () => {
  const storage = memoryStorage();
  const a = start(storage);
  const b = start(storage);
  await Promise.all([a.ready, b.ready]);
  await a.append(bump("x"));
  assert.deepEqual(b.localState.words, {});
  assert.deepEqual((await b.currentState()).words, { x: 1 });
  assert.deepEqual(b.localState.words, { x: 1 });
});

Deno.test("service: an append that conflicts calls the builder again on the newer state", async () => {
  const storage = memoryStorage();
  const a = start(storage);
  const b = start(storage);
  await Promise.all([a.ready, b.ready]);
  await a.append(bump("x"));
  await a.append(bump("x"));
  const seen: number[] = [];
  const outcome = await b.append((state, seq) => {
    seen.push(seq);
    return bump("x")(state);
  });
  assert.deepEqual(seen, [0, 2]);
  assert.equal(outcome.result, 3);
  assert.equal(outcome.attempts, 2);
  assert.equal(outcome.first, 3);
  assert.equal(outcome.last, 3);
  assert.deepEqual(storage.events().map((e) => (e as { value: number }).value), [1, 2, 3]);
  // No events: nothing appended, the result still handed back.
  const none = await b.append(() => ({ events: [], result: "nothing" }));
  assert.deepEqual(none, { result: "nothing", first: undefined, last: 3, attempts: 1 });
});

Deno.test("service: attempts are bounded; a builder that throws is not retried", async () => {
  const storage = memoryStorage();
  const service = eventStream<Event, { count: number }>({
    storage,
    projections: { count },
    maxAttempts: 3,
  });
  await service.ready;
  let calls = 0;
  await assert.rejects(
    service.append(
      (async () => {
        calls++;
        // Another writer appends between the decision and the append, every time.
        await storage.append(await storage.last(), [{ type: "Deleted", key: "z" }]);
        return [{ type: "Deleted", key: "y" }];
      }) as never,
    ),
    InvalidArgumentError, // an async builder returns a promise, not events
  );
  calls = 0;
  const racing = {
    ...storage,
    append: async (after: number, events: readonly unknown[]) => {
      await storage.append(after, [{ type: "Deleted", key: "other" }]);
      return storage.append(after, events);
    },
  };
  const raced = eventStream<Event, { count: number }>({
    storage: racing,
    projections: { count },
    maxAttempts: 3,
  });
  await raced.ready;
  await assert.rejects(
    raced.append(() => {
      calls++;
      return [{ type: "Deleted", key: "mine" }];
    }),
    (e: unknown) => e instanceof AppendAttemptsExhaustedError && e.attempts === 3,
  );
  assert.equal(calls, 3);
  assert.equal(raced.localState.count, storage.events().length);
  await assert.rejects(
    raced.append(() => {
      throw new Error("decided not to");
    }),
    /decided not to/,
  );
});

Deno.test("service: a snapshot makes a restart read only the tail", async () => {
  const dir = await Deno.makeTempDir();
  const snapshots = fileSnapshots(`${dir}/snapshots`);
  const first = start(await fileStorage(`${dir}/stream`, { fsync: "never" }), { snapshots });
  await first.ready;
  for (let i = 0; i < 500; i++) await first.append(bump(`k${i % 7}`));
  await first.saveSnapshots();
  for (let i = 0; i < 20; i++) await first.append(bump("tail"));
  const expected = first.localState;
  await first.close();

  const second = start(await fileStorage(`${dir}/stream`), { snapshots });
  await second.ready;
  assert.deepEqual(second.localState, expected);
  assert.equal(second.applied, 20);
  assert.equal(second.sequence, 520);
  await second.close();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("service: snapshots that do not parse or are of another version are ignored with a warning", async () => {
  const storage = memoryStorage({
    events: Array.from({ length: 10 }, (_, i) => ({ type: "Updated", key: "a", value: i })),
  });
  const cases: [string, string, RegExp][] = [
    ["Words", "{not json", /Words-18 ignored \(it is not JSON/],
    ["Words", JSON.stringify({ name: "Words-17", seq: 5, state: {} }), /another version/],
    ["Words", JSON.stringify({ name: "Words-18", seq: 99, state: {} }), /not in the stream/],
    ["Words", JSON.stringify({ name: "Words-18", seq: 5, state: 3 }), /load failed/],
  ];
  for (const [key, text, why] of cases) {
    const snapshots = memorySnapshots();
    await snapshots.save(key, text);
    const warnings: string[] = [];
    const service = start(storage, { snapshots, onWarning: (m: string) => warnings.push(m) });
    await service.ready;
    assert.equal(warnings.length, 1, text);
    assert.match(warnings[0], why);
    assert.deepEqual(service.localState.words, { a: 9 });
    assert.equal(service.applied, 10, "replayed from the start");
  }
  // A valid one of one projection, none for the other: each starts where it can.
  const snapshots = memorySnapshots();
  await snapshots.save("Words", JSON.stringify({ name: "Words-18", seq: 8, state: { a: 7 } }));
  const service = start(storage, { snapshots });
  await service.ready;
  assert.deepEqual(service.localState, { words: { a: 9 }, count: 10 });
});

Deno.test("service: bad projections are typed errors naming them", () => {
  const storage = memoryStorage();
  assert.throws(
    () => eventStream({ storage, projections: { w: { ...words, name: "Words" } } }),
    (e: unknown) => e instanceof InvalidArgumentError && e.field === "projections.w.name",
  );
  assert.throws(
    () => eventStream({ storage, projections: { a: words, b: { ...words, name: "Words-2" } } }),
    (e: unknown) => e instanceof InvalidArgumentError && e.field === "projections",
  );
});
