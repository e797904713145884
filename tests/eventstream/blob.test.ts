// The append-blob backend against Azurite (tools/azurite.sh): the storage contract, 412 as the
// conflict, rollover at a small block limit, corrupt bytes at the right position, SAS readers,
// and two writer processes appending concurrently through the service.
import assert from "node:assert/strict";
import { ContainerSASPermissions, generateBlobSASQueryParameters } from "@azure/storage-blob";
import { blobStorage, ReadOnlyBlobStorageError } from "../../eventstream/blob.ts";
import { AppendConflictError, CorruptFrameError, encodeFrames } from "../../eventstream/mod.ts";
import { contract } from "./contract.ts";
import { credential, service, uniqueContainer } from "./azurite.ts";
import { twoWriters } from "./writers.ts";

const APPENDS = Number(Deno.env.get("IMPEL_ES_WRITER_APPENDS") ?? 300);

contract({
  name: "blob",
  async open(events) {
    const container = service.getContainerClient(uniqueContainer("contract"));
    // A small block limit, so that the suite crosses blob boundaries.
    const storage = await blobStorage({ container, maxBlocks: 7 });
    if (events?.length) await storage.append(0, events);
    return { storage, reopen: () => blobStorage({ container, maxBlocks: 7 }) };
  },
});

Deno.test("blob storage: a stale writer gets 412 as AppendConflictError, then sees the new events", async () => {
  const container = service.getContainerClient(uniqueContainer("conflict"));
  const a = await blobStorage({ container });
  const b = await blobStorage({ container });
  await a.append(0, ["a1"]);
  await b.append(1, ["b1"]).catch(() => {}); // b does not know of a1 yet: refreshes, appends
  assert.equal(await a.last(), 2);
  await a.append(2, ["a2"]);
  // b believes the blob ends where its own append left it: the append-position condition fails.
  await assert.rejects(b.append(2, ["b2"]), AppendConflictError);
  assert.equal(await b.last(), 3);
  assert.deepEqual((await b.read(0)).map((e) => e.event), ["a1", "b1", "a2"]);
  assert.equal(await b.append(3, ["b2"]), 4);
});

Deno.test("blob storage: rolls over to the next blob at the block limit, firstseq in metadata", async () => {
  const container = service.getContainerClient(uniqueContainer("rollover"));
  const storage = await blobStorage({ container, maxBlocks: 3 });
  let last = 0;
  for (let i = 0; i < 10; i++) last = await storage.append(last, [i, -i]);
  assert.deepEqual(storage.blobs(), [
    { name: "events.00000", first: 1 },
    { name: "events.00001", first: 7 },
    { name: "events.00002", first: 13 },
    { name: "events.00003", first: 19 },
  ]);
  for await (const b of container.listBlobsFlat({ includeMetadata: true })) {
    assert.ok(b.metadata?.firstseq, b.name);
  }
  const reader = await blobStorage({ container, maxBlocks: 3, readOnly: true });
  assert.deepEqual((await reader.read(5, 4)).map((e) => e.seq), [6, 7, 8, 9]);
  assert.equal((await reader.read(0, 1000)).length, 20);
  // Two writers rolling over at once: one creates the blob, the other finds it made for the same
  // event and appends to it, where the append-position condition lets only one of them in.
  last = await storage.append(await storage.append(last, ["p"]), ["q"]);
  const other = await blobStorage({ container, maxBlocks: 3 });
  const r = await Promise.allSettled([storage.append(last, ["x"]), other.append(last, ["y"])]);
  assert.equal(r.filter((x) => x.status === "fulfilled").length, 1);
  for (const x of r) {
    if (x.status === "rejected") assert.ok(x.reason instanceof AppendConflictError);
  }
  assert.equal(await reader.last(), 23); // a read gives what is known; last() looks again
  assert.equal((await reader.read(0, 1000)).length, 23);
  assert.equal(reader.blobs().length, 5);
});

Deno.test("blob storage: corrupt bytes in a blob give CorruptFrameError at the frame's position", async () => {
  const container = service.getContainerClient(uniqueContainer("corrupt"));
  await container.create();
  // A damaged copy of a stream: the same frames with one byte of the third one flipped.
  const one = encodeFrames(1, [{ a: 1 }]);
  const two = encodeFrames(2, [{ b: 2 }]);
  const three = encodeFrames(3, [{ c: 3 }]);
  three[18] ^= 0x20;
  const blob = container.getAppendBlobClient("events.00000");
  await blob.create({ metadata: { firstseq: "1" } });
  for (const block of [one, two, three]) await blob.appendBlock(block, block.length);
  await assert.rejects(blobStorage({ container }), (e: unknown) => {
    assert.ok(e instanceof CorruptFrameError);
    assert.equal(e.where, "events.00000");
    assert.equal(e.position, one.length + two.length);
    assert.equal(e.reason, "checksum");
    return true;
  });
  // Damage before the last append: opening follows the headers (the end is found, the last
  // append verified); the bad frame is the typed error when it is read, never an event.
  const other = service.getContainerClient(uniqueContainer("corrupt"));
  await other.create();
  const middle = other.getAppendBlobClient("events.00000");
  await middle.create({ metadata: { firstseq: "1" } });
  const good3 = encodeFrames(3, [{ c: 3 }]);
  const bad2 = encodeFrames(2, [{ b: 2 }]);
  bad2[18] ^= 0x20;
  for (const block of [one, bad2, good3]) await middle.appendBlock(block, block.length);
  const storage = await blobStorage({ container: other });
  assert.equal(await storage.last(), 3);
  await assert.rejects(storage.read(0), (e: unknown) => {
    assert.ok(e instanceof CorruptFrameError);
    assert.equal(e.position, one.length);
    assert.equal(e.reason, "checksum");
    return true;
  });
  await other.delete();
  await container.delete();
});

Deno.test("blob storage: a reader with a list+read SAS reads; appends are refused", async () => {
  const name = uniqueContainer("sas");
  const container = service.getContainerClient(name);
  const writer = await blobStorage({ container });
  await writer.append(0, ["a", "b"]);
  const sas = generateBlobSASQueryParameters({
    containerName: name,
    permissions: ContainerSASPermissions.parse("rl"),
    expiresOn: new Date(Date.now() + 3600_000),
  }, credential).toString();
  const { ContainerClient } = await import("@azure/storage-blob");
  const readOnly = new ContainerClient(`${container.url}?${sas}`);
  const reader = await blobStorage({ container: readOnly, readOnly: true });
  assert.deepEqual((await reader.read(0)).map((e) => e.event), ["a", "b"]);
  await writer.append(2, ["c"]);
  assert.equal(await reader.last(), 3);
  await assert.rejects(reader.append(3, ["d"]), ReadOnlyBlobStorageError);
  // Without readOnly, opening needs a write the SAS does not permit: a typed error, not a 403.
  await assert.rejects(blobStorage({ container: readOnly }), ReadOnlyBlobStorageError);
});

Deno.test(
  `blob storage: two writer processes, ${APPENDS} appends each: every event once, in one order, decided on the full state`,
  () => twoWriters(APPENDS),
);
