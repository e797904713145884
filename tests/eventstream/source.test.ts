// The event stream as a source feeding streamsSink, with file checkpoints, stop and resume.
import assert from "node:assert/strict";
import { run, type StreamEvent, streamsSink } from "../../mod.ts";
import { fileCheckpoints } from "../../checkpoints/file.ts";
import { eventStream, eventStreamSource, fileStorage } from "../../eventstream/mod.ts";

type Event = { type: "Added"; n: number };

Deno.test("source: streamsSink sees every event once in order; stop and resume from the checkpoint", async () => {
  const dir = await Deno.makeTempDir();
  const storage = await fileStorage(`${dir}/stream`, { fsync: "never" });
  const service = eventStream<Event, { sum: number }>({
    storage,
    projections: { sum: { name: "Sum-1", initial: 0, apply: (s, e) => s + e.n } },
  });
  await service.ready;
  for (let i = 1; i <= 250; i++) await service.append(() => [{ type: "Added", n: i }]);
  const checkpoints = fileCheckpoints(`${dir}/checkpoints.json`);
  const key = { source: `eventstream:${storage.name}`, tranche: "all", group: "summer" };

  const pass = async (expected: number, expectTail: () => Promise<void>) => {
    const seen: StreamEvent[] = [];
    const sink = streamsSink({
      statsIntervalMs: 0,
      commitIntervalMs: 10,
      handler: (stream, events) => {
        assert.equal(stream, "EventStream-all");
        seen.push(...events);
      },
    });
    const ac = new AbortController();
    const source = eventStreamSource({
      storage,
      checkpoints,
      group: "summer",
      tailSleepMs: 20,
      pageSize: 64,
    });
    const running = run(source, sink, { signal: ac.signal });
    try {
      await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 5000 });
      await expectTail();
      // What was appended at the tail is read on the next poll, after a tail sleep.
      const deadline = Date.now() + 5000;
      while (seen.length < expected && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 10));
      }
      await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 5000 });
    } finally {
      ac.abort();
      await running;
    }
    return seen;
  };

  const first = await pass(260, async () => {
    // Appended while the source is at the tail: read on the next poll.
    for (let i = 251; i <= 260; i++) await service.append(() => [{ type: "Added", n: i }]);
  });
  assert.deepEqual(first.map((e) => e.index), Array.from({ length: 260 }, (_, i) => i));
  assert.deepEqual(
    first.map((e) => (e.data as Event).n),
    Array.from({ length: 260 }, (_, i) => i + 1),
  );
  assert.equal(first[0].type, "Added");
  assert.equal(first[0].id, "1");
  assert.equal(
    await checkpoints.load(key),
    260n,
    "checkpoint = sequence of the last event handled",
  );

  for (let i = 261; i <= 300; i++) await service.append(() => [{ type: "Added", n: i }]);
  const second = await pass(40, () => Promise.resolve());
  assert.deepEqual(second.map((e) => e.index), Array.from({ length: 40 }, (_, i) => 260 + i));
  assert.equal(await checkpoints.load(key), 300n);
  await service.close();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("source: bad options are typed errors", () => {
  assert.throws(() => eventStreamSource({} as never), /storage must be EventStorage/);
  assert.throws(
    () =>
      eventStreamSource({
        storage: {
          name: "x",
          read: () => Promise.resolve([]),
          last: () => Promise.resolve(0),
        } as never,
        stream: "nodash",
      }),
    /nodash/,
  );
});
