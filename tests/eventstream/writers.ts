// Two writer processes (blob_writer.ts) appending to one stream on Azurite through the service,
// then the checks: every event exactly once, in one order both see, each decided on the state of
// every event before it. Run with 300 appends each by blob.test.ts (a few seconds, in the default
// suite) and 5,000 by the fault suite tests/faults/eventstream_writers.fault.ts.
import assert from "node:assert/strict";
import { blobStorage } from "../../eventstream/blob.ts";
import { service, uniqueContainer } from "./azurite.ts";

export async function twoWriters(APPENDS: number): Promise<void> {
  const name = uniqueContainer("writers");
  await service.getContainerClient(name).create();
  const barrier = await Deno.makeTempDir();
  const spawn = (writer: string) =>
    new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--quiet",
        "tests/eventstream/blob_writer.ts",
        name,
        writer,
        String(APPENDS),
        "200",
        barrier,
      ],
      stdout: "piped",
      stderr: "inherit",
    }).output();
  const outs = await Promise.all([spawn("A"), spawn("B")]);
  const results = outs.map((o) => {
    assert.equal(o.code, 0);
    return JSON.parse(new TextDecoder().decode(o.stdout)) as {
      writer: string;
      attempts: number;
      mine: number[];
    };
  });
  const storage = await blobStorage({
    container: service.getContainerClient(name),
    readOnly: true,
  });
  const all: { writer: string; n: number; sawSeq: number; sawCount: number }[] = [];
  for (let after = 0;;) {
    const page = await storage.read(after, 1000);
    if (page.length === 0) break;
    for (const e of page) all.push(e.event as (typeof all)[number]);
    after = page.at(-1)!.seq;
  }
  assert.equal(all.length, 2 * APPENDS);
  for (const [i, e] of all.entries()) {
    // Each event was decided on the state of every event before it (nothing missed, nothing extra).
    assert.equal(e.sawSeq, i, `event ${i + 1} was decided at ${e.sawSeq}`);
    assert.equal(e.sawCount, i);
  }
  for (const { writer, mine } of results) {
    const own = all.flatMap((e, i) => (e.writer === writer ? [{ n: e.n, seq: i + 1 }] : []));
    assert.deepEqual(own.map((e) => e.n), Array.from({ length: APPENDS }, (_, n) => n), writer);
    assert.deepEqual(own.map((e) => e.seq), mine, `${writer} was told the sequence numbers it got`);
  }
  const conflicts = results.reduce((n, r) => n + r.attempts, 0) - 2 * APPENDS;
  const switches = all.filter((e, i) => i > 0 && e.writer !== all[i - 1].writer).length;
  console.log(
    `${2 * APPENDS} appends, ${conflicts} conflicts retried, ${switches} changes of writer, ` +
      `${storage.blobs().length} blobs`,
  );
  // They raced: appends interleaved, or one lost races to the other until it was done (seen
  // under load: the conflicts show both were appending at once).
  assert.ok(switches > 1 || conflicts > 0, "the writers did not append at the same time");
  assert.ok(storage.blobs().length >= (2 * APPENDS) / 200, "rolled over at 200 blocks");
}
