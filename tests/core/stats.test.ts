// The scheduler's view of its streams: each stream with work in exactly one state.
import assert from "node:assert/strict";
import { streamsSink } from "../../mod.ts";
import { batchBuilder, test } from "../support/core.ts";

const batch = batchBuilder({ isTail: false, size: 10 });

test(
  "stats: streams, events and bytes by state (active, ready, buffered behind a gap)",
  async () => {
    let release!: () => void;
    const blocked = new Promise<void>((r) => (release = r));
    const sink = streamsSink({
      maxConcurrentStreams: 1,
      statsIntervalMs: 0,
      handler: (stream) => stream === "A-1" ? blocked : undefined,
    });
    const writer = sink.writable.getWriter();
    await writer.write(batch(1, [["C-1", 0]])); // C-1 handled: its write position is now 1
    await writer.write(batch(2, [["A-1", 0], ["A-1", 1], ["B-1", 0], ["C-1", 3]]));
    const { states, bufferedEvents } = sink.stats();
    assert.deepEqual(
      states.active,
      { streams: 1, events: 0, bytes: 0 },
      "A-1 runs with both its events",
    );
    assert.deepEqual(
      states.ready,
      { streams: 1, events: 1, bytes: 10 },
      "B-1 waits for a free slot",
    );
    assert.deepEqual(
      states.buffered,
      { streams: 1, events: 1, bytes: 10 },
      "C-1 waits for 1 and 2",
    );
    assert.deepEqual(states.failing, { streams: 0, events: 0, bytes: 0 });
    assert.deepEqual(states.stuck, { streams: 0, events: 0, bytes: 0 });
    assert.equal(bufferedEvents, 2);
    release();
    await sink.stop();
    writer.releaseLock();
  },
);
