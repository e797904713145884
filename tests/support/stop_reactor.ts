// A reactor process for tests/core/shutdown.test.ts, under Deno or Bun: a memory store with 5
// streams, a handler that takes 100 ms a call (or never returns with `hang`), stopped by
// stopOnSignals. Prints "ready", then on a clean stop "stopped <handled> <committed>".
import { run, stopOnSignals, streamsSink } from "../../mod.ts";
import { memoryCheckpoints } from "../../checkpoints/memory.ts";
import { createMemoryStore, MEMORY_TRANCHE, memorySource } from "../../sources/memory.ts";

const hang = (globalThis as { Deno?: { args: string[] } }).Deno?.args.includes("hang") ??
  (globalThis as unknown as { process: { argv: string[] } }).process.argv.includes("hang");
const store = createMemoryStore();
for (let s = 0; s < 5; s++) await store.append(`Order-${s}`, [{ type: "Placed", data: {} }], 0);
const checkpoints = memoryCheckpoints();
let handled = 0;
const sink = streamsSink({
  statsIntervalMs: 0,
  stopTimeoutMs: 60_000,
  handler: async () => {
    console.log("ready");
    await new Promise((r) => setTimeout(r, hang ? 3_600_000 : 100));
    handled++;
  },
});
using stop = stopOnSignals({ onSignal: (name) => console.log(`got ${name}`) });
await run(memorySource({ store, checkpoints, group: "g" }), sink, {
  signal: stop.signal,
});
const committed = await checkpoints.load({ source: "memory", tranche: MEMORY_TRANCHE, group: "g" });
console.log(`stopped ${handled} ${committed}`);
