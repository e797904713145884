// The local-file backend beyond the contract: its lock, torn tails, corruption at the right byte,
// read-only readers, segments.
import assert from "node:assert/strict";
import { appendFile, readFile, truncate, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import process from "node:process";
import { InvalidArgumentError } from "../../core/errors.ts";
import {
  AppendConflictError,
  CorruptFrameError,
  crc32,
  decodeFrames,
  encodeFrames,
  fileStorage,
  FRAME_OVERHEAD,
  ReadOnlyStorageError,
  StorageLockedError,
} from "../../eventstream/mod.ts";

const temp = () => Deno.makeTempDir({ prefix: "impel-es-file-" });

Deno.test("frame: CRC-32 is the IEEE one", () => {
  assert.equal(crc32(new TextEncoder().encode("123456789")), 0xcbf43926);
  assert.equal(crc32(new Uint8Array()), 0);
});

Deno.test("frame: layout is length, sequence, rest, payload, checksum", () => {
  const bytes = encodeFrames(0x1_0000_0002, ["ab", 7]);
  const view = new DataView(bytes.buffer);
  assert.equal(view.getUint32(0, true), 4); // "ab" with quotes
  assert.equal(view.getUint32(4, true), 2);
  assert.equal(view.getUint32(8, true), 1);
  assert.equal(view.getUint32(12, true), 1); // one more frame in this append
  assert.equal(new TextDecoder().decode(bytes.subarray(16, 20)), '"ab"');
  assert.equal(view.getUint32(20, true), crc32(bytes, 0, 20));
  assert.equal(view.getUint32(FRAME_OVERHEAD + 4 + 12, true), 0);
  const { events } = decodeFrames(bytes, { where: "x", expectedSeq: 0x1_0000_0002 });
  assert.deepEqual(events.map((e) => e.event), ["ab", 7]);
});

Deno.test("frame: every flipped byte is caught, at the frame's position", () => {
  const bytes = encodeFrames(1, [{ a: 1 }, { b: "two" }, [3]]);
  const starts = [0];
  for (const e of [{ a: 1 }, { b: "two" }]) {
    starts.push(starts.at(-1)! + FRAME_OVERHEAD + JSON.stringify(e).length);
  }
  for (let i = 0; i < bytes.length; i++) {
    const copy = bytes.slice();
    copy[i] ^= 0x55;
    const frame = starts.findLast((s) => s <= i)!;
    let result;
    try {
      result = decodeFrames(copy, { where: "w", expectedSeq: 1, offset: 100 });
    } catch (e) {
      assert.ok(e instanceof CorruptFrameError, `byte ${i}: ${e}`);
      assert.equal(e.position, 100 + frame, `byte ${i}`);
      continue;
    }
    // A flipped length byte may make the frame look longer than the bytes: never an event.
    assert.ok(result.incomplete && result.events.length === 0, `byte ${i} went unnoticed`);
  }
});

Deno.test("frame: an append cut short yields none of its events", () => {
  const one = encodeFrames(1, ["a"]);
  const two = encodeFrames(2, ["b", "c", "d"]);
  const all = new Uint8Array([...one, ...two]);
  for (let cut = one.length; cut < all.length; cut++) {
    const d = decodeFrames(all.subarray(0, cut), { where: "x", expectedSeq: 1 });
    assert.deepEqual(d.events.map((e) => e.event), ["a"]);
    assert.equal(d.end, one.length);
  }
});

Deno.test("file: a second writer gets StorageLockedError; readers are not locked out", async () => {
  const dir = await temp();
  const writer = await fileStorage(dir);
  await assert.rejects(fileStorage(dir), (e: unknown) => {
    assert.ok(e instanceof StorageLockedError);
    assert.equal(e.pid, process.pid);
    assert.match(e.message, /LOCK is held by process/);
    return true;
  });
  const reader = await fileStorage(dir, { readOnly: true });
  await writer.append(0, ["a"]);
  assert.deepEqual(await reader.read(0), [{ seq: 1, event: "a" }]);
  await writer.append(1, ["b"]);
  assert.equal(await reader.last(), 2);
  await assert.rejects(reader.append(2, ["c"]), ReadOnlyStorageError);
  await writer.close();
  const next = await fileStorage(dir); // the lock was released
  assert.equal(await next.last(), 2);
  await next.close();
  await reader.close();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("file: a lock left by a dead process is taken over", async () => {
  const dir = await temp();
  const child = new Deno.Command("true").spawn();
  await child.status;
  await Deno.writeTextFile(
    `${dir}/LOCK`,
    JSON.stringify({ pid: child.pid, host: hostname() }),
  );
  const storage = await fileStorage(dir);
  assert.equal(JSON.parse(await Deno.readTextFile(`${dir}/LOCK`)).pid, process.pid);
  await storage.close();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("file (shared): two writers take turns; each append sees the other's first", async () => {
  const dir = await temp();
  const options = { fsync: "never" as const, shared: true, segmentBytes: 300 };
  const a = await fileStorage(dir, options);
  const b = await fileStorage(dir, options);
  assert.equal(await a.append(0, ["a1"]), 1);
  // b has not looked since: its append at 0 is a conflict naming where the stream is.
  await assert.rejects(b.append(0, ["b1"]), (e: unknown) => {
    assert.ok(e instanceof AppendConflictError);
    assert.equal(e.actual, 1);
    return true;
  });
  for (let i = 2; i <= 40; i += 2) {
    assert.equal(await b.append(i - 1, [`b${i}`]), i);
    assert.equal(await a.append(i, [`a${i + 1}`]), i + 1);
  }
  assert.ok(a.segments().length > 2, "they rolled over to new segments in turn");
  const reader = await fileStorage(dir, { readOnly: true });
  const all = (await reader.read(0, 100)).map((e) => e.event);
  assert.equal(all.length, 41);
  assert.deepEqual(await b.read(0, 100), await reader.read(0, 100));
  assert.equal(
    await Deno.stat(`${dir}/LOCK`).catch(() => "none"),
    "none",
    "no lock between appends",
  );
  // An exclusive writer holds the lock: a shared append waits lockWaitMs, then a typed error.
  await a.close();
  await b.close();
  const waiting = await fileStorage(dir, { ...options, lockWaitMs: 50 });
  const exclusive = await fileStorage(dir);
  const started = Date.now();
  await assert.rejects(waiting.append(41, ["w"]), StorageLockedError);
  assert.ok(Date.now() - started >= 50);
  await exclusive.close();
  assert.equal(await waiting.append(41, ["w"]), 42);
  await waiting.close();
  await reader.close();
  await assert.rejects(fileStorage(dir, { readOnly: true, shared: true }), InvalidArgumentError);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("file (shared): a torn tail and the lock of a dead writer are repaired by the next", async () => {
  const dir = await temp();
  const options = { fsync: "never" as const, shared: true };
  const a = await fileStorage(dir, options);
  await a.append(0, ["a", "b"]);
  const [seg] = (await Array.fromAsync(Deno.readDir(dir))).filter((e) => e.name.endsWith(".seg"));
  const path = `${dir}/${seg.name}`;
  const good = (await Deno.stat(path)).size;
  // What a writer killed mid-append leaves: its lock and a checksum-bad last frame.
  const child = new Deno.Command("true").spawn();
  await child.status;
  await Deno.writeTextFile(`${dir}/LOCK`, JSON.stringify({ pid: child.pid, host: hostname() }));
  const torn = encodeFrames(3, ["ccccccc"]);
  torn[torn.length - 2] ^= 0xff;
  await appendFile(path, torn);
  // A read takes the lock over and truncates; so does an append.
  assert.equal(await a.last(), 2);
  assert.equal((await Deno.stat(path)).size, good);
  await appendFile(path, torn.subarray(0, 20));
  assert.equal(await a.append(2, ["c"]), 3);
  assert.deepEqual((await a.read(0)).map((e) => e.event), ["a", "b", "c"]);
  await a.close();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("file: a torn last append is truncated on open, never read", async () => {
  const dir = await temp();
  const storage = await fileStorage(dir, { fsync: "never" });
  await storage.append(0, ["a", "b"]);
  await storage.close();
  const [seg] = (await Array.fromAsync(Deno.readDir(dir))).filter((e) => e.name.endsWith(".seg"));
  const path = `${dir}/${seg.name}`;
  const good = (await Deno.stat(path)).size;
  const torn = encodeFrames(3, ["c", "d", "e"]);
  for (const cut of [1, 15, 16, torn.length - FRAME_OVERHEAD, torn.length - 1]) {
    await appendFile(path, torn.subarray(0, cut));
    const again = await fileStorage(dir);
    assert.equal(await again.last(), 2, `cut ${cut}`);
    assert.equal((await Deno.stat(path)).size, good, `cut ${cut}`);
    assert.equal(await again.append(2, ["c"]), 3);
    assert.deepEqual((await again.read(0)).map((e) => e.event), ["a", "b", "c"]);
    await again.close();
    await truncate(path, good);
  }
  // Zeros where the last frame should be (the size grew, the data never reached the disk).
  await appendFile(path, new Uint8Array(40));
  const zeros = await fileStorage(dir);
  assert.equal(await zeros.last(), 2);
  await zeros.close();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("file: corrupt bytes give CorruptFrameError at the frame's position", async () => {
  const dir = await temp();
  const storage = await fileStorage(dir, { segmentBytes: 200, fsync: "never" });
  let last = 0;
  for (let i = 0; i < 40; i++) last = await storage.append(last, [{ i }]);
  const segments = storage.segments();
  assert.ok(segments.length > 3, `${segments.length} segments`);
  await storage.close();
  // Frame k of a segment starts at k * (FRAME_OVERHEAD + payload); {"i":N} is 7 or 8 bytes.
  const middle = segments[1];
  const bytes = await readFile(middle.path);
  const first = decodeFrames(bytes, { where: "x", expectedSeq: middle.first }).events;
  const size1 = FRAME_OVERHEAD + JSON.stringify(first[0].event).length;
  bytes[size1 + 18] ^= 1; // inside the second frame's payload
  await writeFile(middle.path, bytes);
  const again = await fileStorage(dir); // the damage is not in the last segment: opens
  await assert.rejects(again.read(0, 1000), (e: unknown) => {
    assert.ok(e instanceof CorruptFrameError);
    assert.equal(e.where, middle.path);
    assert.equal(e.position, size1);
    assert.equal(e.reason, "checksum");
    return true;
  });
  // What comes before the damage still reads.
  assert.equal((await again.read(0, middle.first)).length, middle.first);
  await again.close();
  // Damage in the middle of the last segment is not a torn tail: nothing is truncated. A bad
  // payload byte is found when it is read (open checks the headers and the last append); a bad
  // header is found at open.
  const tail = segments.at(-1)!;
  const tailBytes = await readFile(tail.path);
  const frames = decodeFrames(tailBytes, { where: "x", expectedSeq: tail.first }).events.length;
  assert.ok(frames >= 2);
  tailBytes[17] ^= 1;
  await writeFile(tail.path, tailBytes);
  const opened = await fileStorage(dir);
  assert.equal(await opened.last(), 40);
  await assert.rejects(
    opened.read(tail.first - 1),
    (e: unknown) => e instanceof CorruptFrameError && e.position === 0 && e.where === tail.path,
  );
  await opened.close();
  assert.equal((await readFile(tail.path)).length, tailBytes.length, "nothing was truncated");
  tailBytes[17] ^= 1;
  tailBytes[1] ^= 1; // the first frame's length
  await writeFile(tail.path, tailBytes);
  await assert.rejects(
    fileStorage(dir),
    (e: unknown) => e instanceof CorruptFrameError && e.position === 0 && e.where === tail.path,
  );
  assert.equal((await readFile(tail.path)).length, tailBytes.length, "nothing was truncated");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("file: a read-only reader follows the writer across new segments", async () => {
  const dir = await temp();
  const writer = await fileStorage(dir, { segmentBytes: 100, fsync: "never" });
  const reader = await fileStorage(dir, { readOnly: true });
  let last = 0;
  for (let i = 0; i < 30; i++) {
    last = await writer.append(last, [{ i }, { j: i }]);
    if (i % 7 === 0) assert.equal(await reader.last(), last);
  }
  assert.ok(writer.segments().length > 5);
  assert.equal(await reader.last(), 60);
  const seen: number[] = [];
  for (let after = 0;;) {
    const page = await reader.read(after, 13);
    if (page.length === 0) break;
    seen.push(...page.map((e) => e.seq));
    after = page.at(-1)!.seq;
  }
  assert.deepEqual(seen, Array.from({ length: 60 }, (_, i) => i + 1));
  await writer.close();
  await reader.close();
  await Deno.remove(dir, { recursive: true });
});
