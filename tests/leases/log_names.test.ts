// One name for a slot: the reader's log lines and the lease member's name a leased tranche the same
// way, {source}/{group}/{tranche}, which is `impel leases list`'s SCOPE (<source>/<group>) and UNIT;
// and that command's usage line names every option it takes (it once left out --url).
import assert from "node:assert/strict";
import { configure, type LogRecord, reset } from "@logtape/logtape";
import { memoryCheckpoints } from "../../checkpoints/memory.ts";
import { leasesList } from "../../cli/leases.ts";
import { leasedSource } from "../../core/leased.ts";
import { pagedSource } from "../../core/reader.ts";
import { run, streamsSink } from "../../mod.ts";
import { memoryLeases } from "../../leases/memory.ts";
import { logFormatter } from "../../mod.ts";

Deno.test("leased tranches: reader and lease log lines name a slot {source}/{group}/{tranche}", async () => {
  const format = logFormatter();
  const lines: string[] = [];
  await configure({
    reset: true,
    sinks: { mem: (r: LogRecord) => lines.push(format(r)) },
    loggers: [
      { category: ["impel"], lowestLevel: "info", sinks: ["mem"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: [] },
    ],
  });
  const leases = memoryLeases();
  const stop = new AbortController();
  const source = leasedSource({
    scope: "numbers/g",
    units: ["Order-4/12"],
    leases: { store: leases, member: "m1", durationMs: 3000, heartbeatMs: 300, handoverMs: 1500 },
    stopTimeoutMs: 500,
    checkpoints: memoryCheckpoints({ leases }),
    group: "g",
    sourceName: "numbers",
    signal: stop.signal,
    reading: (tranche, checkpoints, signal) =>
      pagedSource({
        name: "numbers",
        group: "g",
        tranches: [tranche],
        checkpoints,
        readPage: (_t, position) =>
          Promise.resolve({ items: [], next: position ?? 0n, isTail: true }),
        tailSleepMs: 50,
        signal,
      }),
  });
  const sink = streamsSink({ group: "g", statsIntervalMs: 0, stopTimeoutMs: 500, handler() {} });
  const running = run(source, sink, { signal: stop.signal });
  try {
    const deadline = Date.now() + 5000;
    while (!lines.some((l) => l.includes("reading "))) {
      if (Date.now() > deadline) throw new Error(`no reading line in ${lines.join("\n")}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  } finally {
    stop.abort();
    await running;
    await source.released;
    await reset();
  }
  const slot = "numbers/g/Order-4/12";
  const acquired = lines.find((l) => l.includes(" acquired "));
  const reading = lines.find((l) => l.includes("reading "));
  assert.ok(acquired?.includes(`m1 acquired ${slot} `), acquired);
  assert.ok(reading?.includes(`reading ${slot} from`), reading);
});

Deno.test("impel leases list: the usage line names every option", () => {
  for (const option of leasesList.options) {
    assert.ok(
      leasesList.usage.includes(`--${option.name}`),
      `${leasesList.usage} leaves out --${option.name}`,
    );
  }
});
