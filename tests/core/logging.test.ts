// impel's log lines as an operator reads them: plain values on every runtime, the stack at debug.
import assert from "node:assert/strict";
import { configure, type LogRecord, reset } from "@logtape/logtape";
import { logFormatter, run, streamsSink } from "../../mod.ts";
import { createMemoryStore, memorySource } from "../../sources/memory.ts";
import { test } from "../support/core.ts";

async function capture(level: "info" | "debug", work: () => Promise<void>): Promise<string[]> {
  const format = logFormatter();
  const lines: string[] = [];
  await configure({
    reset: true,
    sinks: { mem: (r: LogRecord) => lines.push(format(r)) },
    loggers: [
      { category: ["impel"], lowestLevel: level, sinks: ["mem"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: [] },
    ],
  });
  try {
    await work();
  } finally {
    await reset();
  }
  return lines;
}

async function failOnce(): Promise<void> {
  const store = createMemoryStore();
  await store.append("Order-1", [{ type: "Placed", data: {} }], 0);
  let calls = 0;
  const sink = streamsSink({
    group: "billing",
    statsIntervalMs: 0,
    retry: { initialDelayMs: 1, maxDelayMs: 1 },
    handler: () => {
      if (++calls === 1) throw new RangeError("no such room");
    },
  });
  const ac = new AbortController();
  const running = run(memorySource({ store }), sink, { signal: ac.signal });
  await sink.monitor.awaitCompletion({ tail: true });
  ac.abort();
  await running;
}

test("logFormatter: strings bare, bigints as digits, errors by name, lists joined", () => {
  const format = logFormatter();
  const line = format({
    category: ["impel", "t"],
    level: "info",
    timestamp: 0,
    rawMessage: "",
    properties: {},
    message: [
      "",
      "billing",
      " at ",
      12n,
      " [",
      [],
      "] [",
      ["a", "b"],
      "] ",
      new TypeError("x"),
      "",
    ],
  });
  assert.match(line, /\[INF\] impel·t: billing at 12 \[\] \[a, b\] TypeError: x\n$/);
  const tricky = format({
    category: ["impel", "t"],
    level: "info",
    timestamp: 0,
    rawMessage: "",
    properties: {},
    message: [
      "",
      "Order-1\n2026 [ERR] forged",
      " ",
      { a: "x", n: 1n },
      " ",
      new Error("outer", { cause: new Error("inner") }),
      "",
    ],
  });
  assert.equal(tricky.split("\n").length, 2, "one line: the newline in the value is escaped");
  assert.match(
    tricky,
    /Order-1\\n2026 \[ERR\] forged \{"a":"x","n":"1"\} Error: outer \(cause: Error: inner\)\n$/,
  );
});

test("a handler failure logs its message at warning and its stack only at debug", async () => {
  const info = await capture("info", failOnce);
  const failed = info.filter((l) => l.includes("handler for Order-1 failed"));
  assert.equal(failed.length, 1, info.join("\n"));
  assert.match(
    failed[0],
    /billing: handler for Order-1 failed \(attempt 1\): RangeError: no such room/,
  );
  assert.equal(info.some((l) => l.includes("failed at")), false, "no stack above debug");
  const debug = await capture("debug", failOnce);
  const stack = debug.find((l) => l.includes("Order-1 failed at"));
  assert.ok(stack, debug.join("\n"));
  assert.match(
    stack,
    /RangeError: no such room[\s\S]*logging\.test\.ts/,
    "the stack names the handler's file",
  );
});
