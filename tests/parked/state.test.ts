// What a member keeps per parked stream (issue 12): every member holds every parked stream of its
// group, so the error text it keeps in memory (for stats and health) is cut to 256 bytes; the
// store keeps the whole text.
import assert from "node:assert/strict";
import { run, streamsSink } from "../../mod.ts";
import { memoryParkStore } from "../../parked/memory.ts";
import { createMemoryStore, memorySource } from "../../sources/memory.ts";

async function until(what: string, cond: () => boolean | Promise<boolean>, ms = 10_000) {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const long = "Error: declined\n" + "    at handler (file:///app/reactor.ts:10:5)\n".repeat(200);
const bytes = (s: string) => new TextEncoder().encode(s).length;

Deno.test("parked: a member keeps at most 256 bytes of a parked stream's error; the store the whole", async () => {
  const park = memoryParkStore();
  // One parked before the sink starts (loaded), one parked by it.
  await park.park("g", [{
    stream: "Old-1",
    events: [{ index: 0, type: "T", data: 0, meta: null, id: "e0", time: new Date(), size: 1 }],
    failure: { error: long, attempts: 3, firstFailedAt: 0, lastFailedAt: 1 },
  }]);
  const events = createMemoryStore();
  const sink = streamsSink({
    group: "g",
    statsIntervalMs: 0,
    commitIntervalMs: 5,
    retry: { initialDelayMs: 1 },
    failure: { kind: "park", maxAttempts: 1, store: park, pollMs: 20 },
    handler: (stream) => {
      if (stream === "New-1") throw new Error(long.slice("Error: ".length));
    },
  });
  const ac = new AbortController();
  const running = run(memorySource({ store: events, group: "g" }), sink, { signal: ac.signal });
  try {
    await events.append("New-1", [{ type: "T", data: 0 }], 0);
    await until("both parked", () => sink.stats().parked.streams === 2);
    await until("New-1 stored", async () => (await park.get("g", "New-1"))?.events === 1);
    for (const p of sink.stats().parked.oldest) {
      assert.ok(bytes(p.error) <= 256, `${p.stream}: ${bytes(p.error)} bytes kept`);
      assert.ok(p.error.startsWith("Error: declined\n    at handler"), p.error);
      assert.match(p.error, /\[error text truncated: \d+ bytes\]$/);
    }
    for (const stream of ["Old-1", "New-1"]) {
      const stored = (await park.get("g", stream))!;
      assert.ok(stored.error.length > 9_000, `${stream}: the store keeps the whole text`);
    }
  } finally {
    ac.abort();
    await running;
  }
});
