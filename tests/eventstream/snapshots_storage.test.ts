// Snapshots kept in the stream's own storage (`snapshots: "storage"`): files beside the segments,
// block blobs beside the append blobs on Azurite. A restart reads only the tail; a snapshot that
// does not parse or is of another version is ignored with a warning and the stream replayed; a
// read-only storage loads them and refuses to save; on blobs and shared files a slower writer
// never replaces a newer snapshot with an older one.
import assert from "node:assert/strict";
import { readdir, readFile, writeFile } from "node:fs/promises";
import {
  type EventStorage,
  eventStream,
  fileStorage,
  memoryStorage,
  ReadOnlyStorageError,
} from "../../eventstream/mod.ts";
import { blobStorage, ReadOnlyBlobStorageError } from "../../eventstream/blob.ts";
import { InvalidArgumentError } from "../../core/errors.ts";
import { service as azurite, uniqueContainer } from "./azurite.ts";

type Event = { word: string };
type Words = Readonly<Record<string, number>>;

const start = (storage: EventStorage, onWarning?: (m: string) => void, version = 1) =>
  eventStream<Event, { words: Words; count: number }>({
    storage,
    snapshots: "storage",
    onWarning,
    projections: {
      words: {
        name: `Words-${version}`,
        initial: {},
        apply: (s, e) => ({ ...s, [e.word]: (s[e.word] ?? 0) + 1 }),
        save: (s) => s,
        load: (json) => {
          if (json === null || typeof json !== "object") throw new TypeError("not an object");
          return json as Words;
        },
      },
      count: { name: "Count-1", initial: 0, apply: (n) => n + 1, save: (n) => n, load: Number },
    },
  });

/** 200 events, a snapshot, 15 more; a restart reads only the 15; then damage and versions. */
async function restarts(
  open: () => Promise<EventStorage>,
  snapshot: { read(key: string): Promise<string>; write(key: string, text: string): Promise<void> },
) {
  const first = start(await open());
  await first.ready;
  for (let i = 0; i < 200; i++) await first.append(() => [{ word: `w${i % 5}` }]);
  await first.saveSnapshots();
  for (let i = 0; i < 15; i++) await first.append(() => [{ word: "tail" }]);
  const expected = first.localState;
  await first.close();
  assert.equal(JSON.parse(await snapshot.read("Words")).seq, 200);
  assert.equal(JSON.parse(await snapshot.read("Count")).state, 200);

  const warnings: string[] = [];
  const second = start(await open(), (m) => warnings.push(m));
  await second.ready;
  assert.deepEqual(second.localState, expected);
  assert.equal(second.applied, 15, "read only the tail");
  assert.equal(warnings.length, 0, warnings.join("; "));
  await second.close();

  // A snapshot that does not parse: ignored with a warning, that projection replays.
  const good = await snapshot.read("Words");
  await snapshot.write("Words", good.slice(0, 20));
  const third = start(await open(), (m) => warnings.push(m));
  await third.ready;
  assert.deepEqual(third.localState, expected);
  assert.equal(third.applied, 215, "replayed from the start");
  assert.equal(warnings.length, 1);
  assert.match(warnings[0], /Words-1 ignored \(it is not JSON/);
  await third.close();

  // A new version of the projection ignores the old one's snapshot, replays, then saves its own.
  await snapshot.write("Words", good);
  warnings.length = 0;
  const fourth = start(await open(), (m) => warnings.push(m), 2);
  await fourth.ready;
  assert.deepEqual(fourth.localState, expected);
  assert.equal(fourth.applied, 215);
  assert.equal(warnings.length, 1);
  assert.match(warnings[0], /Words-2 ignored \(it is of "Words-1", another version/);
  await fourth.saveSnapshots();
  await fourth.close();
  const saved = JSON.parse(await snapshot.read("Words"));
  assert.equal(saved.name, "Words-2");
  assert.equal(saved.seq, 215);
}

Deno.test("snapshots in file storage: beside the segments, a restart reads only the tail", async () => {
  const dir = await Deno.makeTempDir();
  const path = (key: string) => `${dir}/${key}.snapshot.json`;
  await restarts(() => fileStorage(dir, { fsync: "never" }), {
    read: (key) => readFile(path(key), "utf8"),
    write: (key, text) => writeFile(path(key), text),
  });
  const names = (await readdir(dir)).sort();
  assert.deepEqual(names, [
    "00000000000000000001.seg",
    "Count.snapshot.json",
    "Words.snapshot.json",
  ]);
  // A reader loads them (reads only the tail) and may not save.
  const reader = start(await fileStorage(dir, { readOnly: true }), () => {}, 2);
  await reader.ready;
  assert.equal(reader.applied, 0);
  await assert.rejects(reader.saveSnapshots(), ReadOnlyStorageError);
  await reader.close();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("snapshots in shared file storage: a writer that is behind does not replace a newer one", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/Words.snapshot.json`;
  const open = async () => start(await fileStorage(dir, { fsync: "never", shared: true }));
  const behind = await open();
  const ahead = await open();
  await Promise.all([behind.ready, ahead.ready]);
  for (const word of ["a", "b", "c"]) await ahead.append(() => [{ word }]);
  await ahead.saveSnapshots();
  await behind.saveSnapshots(); // its state is at 0: the snapshot at 3 stays
  assert.equal(JSON.parse(await readFile(path, "utf8")).seq, 3);
  // One that lies beyond the stream (a stream restored from an older copy) is replaced.
  await writeFile(path, JSON.stringify({ name: "Words-1", seq: 99, state: {} }));
  await behind.saveSnapshots();
  assert.equal(JSON.parse(await readFile(path, "utf8")).seq, 0);
  await ahead.saveSnapshots();
  assert.deepEqual(JSON.parse(await readFile(path, "utf8")), {
    name: "Words-1",
    seq: 3,
    state: { a: 1, b: 1, c: 1 },
  });
  await behind.close();
  await ahead.close();
  await assert.rejects(readFile(`${dir}/LOCK`), { code: "ENOENT" }, "the lock was let go");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("snapshots in blob storage: block blobs beside the stream, a restart reads only the tail", async () => {
  const container = azurite.getContainerClient(uniqueContainer("snapshots"));
  const blob = (key: string) => container.getBlockBlobClient(`words/snapshots/${key}.json`);
  const open = () => blobStorage({ container, prefix: "words/", maxBlocks: 50 });
  await restarts(open, {
    read: async (key) => new TextDecoder().decode(await blob(key).downloadToBuffer()),
    write: async (key, text) => {
      const bytes = new TextEncoder().encode(text);
      await blob(key).upload(bytes, bytes.length);
    },
  });
  const names: string[] = [];
  for await (const item of container.listBlobsFlat()) names.push(item.name);
  assert.deepEqual(
    names.filter((n) => n.includes("snapshots")).sort(),
    ["words/snapshots/Count.json", "words/snapshots/Words.json"],
  );
  assert.equal(names.filter((n) => n.startsWith("words/events.")).length, 5, "215 blocks by 50");

  // A writer whose state is behind (sequence 215 here, then the other appends more and saves)
  // does not replace the newer snapshot with its older one.
  const behind = start(await open(), () => {}, 2);
  const ahead = start(await open(), () => {}, 2);
  await Promise.all([behind.ready, ahead.ready]);
  await ahead.append(() => [{ word: "late" }]);
  await ahead.saveSnapshots();
  await behind.saveSnapshots();
  assert.equal(
    JSON.parse(new TextDecoder().decode(await blob("Words").downloadToBuffer())).seq,
    216,
  );
  await behind.close();
  await ahead.close();
  // A read-only storage loads the snapshots and refuses to save.
  const reader = start(
    await blobStorage({ container, prefix: "words/", readOnly: true }),
    () => {},
    2,
  );
  await reader.ready;
  assert.equal(reader.applied, 0);
  assert.equal(reader.localState.words.late, 1);
  await assert.rejects(reader.saveSnapshots(), ReadOnlyBlobStorageError);
  await reader.close();
  await container.delete();
});

Deno.test("snapshots in blob storage: one beyond the stream is replaced by the next save, never loaded later", async () => {
  const container = azurite.getContainerClient(uniqueContainer("stale-snapshot"));
  const blob = container.getBlockBlobClient("snapshots/Count.json");
  const first = start(await blobStorage({ container }));
  await first.ready;
  for (const word of ["a", "b", "c"]) await first.append(() => [{ word }]);
  await first.close();
  // Left from another history of the stream (its blobs restored or made anew): at 10, count 1000.
  const stale = JSON.stringify({ name: "Count-1", seq: 10, state: 1000 });
  await blob.upload(stale, stale.length);
  const warnings: string[] = [];
  const second = start(await blobStorage({ container }), (m) => warnings.push(m));
  await second.ready;
  assert.equal(second.localState.count, 3);
  assert.match(warnings.join(), /Count-1 ignored \(its sequence number 10 is not in the stream/);
  await second.saveSnapshots();
  assert.equal(JSON.parse((await blob.downloadToBuffer()).toString()).seq, 3);
  for (let i = 0; i < 10; i++) await second.append(() => [{ word: "d" }]);
  await second.close();
  const third = start(await blobStorage({ container }));
  await third.ready;
  assert.equal(third.localState.count, 13, "the stale snapshot at 10 is not loaded at 13");
  await third.close();
  await container.delete();
});

Deno.test('snapshots: "storage" on storage that keeps none is a typed error', () => {
  const storage: EventStorage = {
    name: "bare",
    read: () => Promise.resolve([]),
    last: () => Promise.resolve(0),
    append: () => Promise.resolve(0),
    close: () => Promise.resolve(),
  };
  assert.throws(() => start(storage), (e: unknown) => {
    assert.ok(e instanceof InvalidArgumentError);
    assert.match(e.message, /snapshots.*bare keeps no snapshots/);
    return true;
  });
  // Memory storage keeps them in memory, for tests of a restart in one process.
  const memory = memoryStorage();
  const service = start(memory);
  assert.ok(service);
  return service.ready.then(async () => {
    await service.append(() => [{ word: "a" }]);
    await service.saveSnapshots();
    assert.equal(JSON.parse(memory.snapshots.texts.get("Words")!).seq, 1);
    await service.close();
  });
});
