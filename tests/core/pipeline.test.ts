// One name wires everything: checkpoints, sink, stats, metrics. Disagreements are refused.
import assert from "node:assert/strict";
import {
  createCodec,
  InvalidArgumentError,
  LeaseTimingError,
  pipeline,
  run,
  streamsSink,
} from "../../mod.ts";
import { createMemoryStore, memorySource } from "../../sources/memory.ts";
import { memoryCheckpoints } from "../../checkpoints/memory.ts";
import { createMetrics } from "../../observability/metrics.ts";
import { test, within } from "../support/core.ts";

type Event = { type: "CheckedIn"; data: { room: number } };

test("pipeline: the name is the group of checkpoints, stats and metrics; a codec types the handler", async () => {
  const store = createMemoryStore();
  const checkpoints = memoryCheckpoints();
  const metrics = createMetrics({ defaultMetrics: false });
  const rooms: number[] = [];
  const greeter = pipeline({
    name: "greeter",
    source: ({ group }) => memorySource({ store, checkpoints, group }),
    checkpoints,
    metrics,
    codec: createCodec<Event>({ CheckedIn: {} }),
    handler: (_stream, events) => void rooms.push(...events.map((e) => e.data.room)),
    statsIntervalMs: 0,
    commitIntervalMs: 10,
  });
  assert.equal(greeter.sink.stats().group, "greeter");
  const ac = new AbortController();
  const running = greeter.run({ signal: ac.signal });
  await store.append("Guest-ana", [{ type: "CheckedIn", data: { room: 12 } }], 0);
  await greeter.sink.monitor.awaitCompletion({ tail: true, timeoutMs: 5000 });
  ac.abort();
  await running;
  assert.deepEqual(rooms, [12]);
  const saved = await checkpoints.list("memory");
  assert.deepEqual(saved.map((c) => [c.group, c.position]), [["greeter", 1n]]);
  const text = await metrics.metrics();
  assert.match(text, /impel_scheduler_events_handled_total\{group="greeter"\} 1/);
  assert.match(text, /impel_source_items_total\{group="greeter",source="memory",tranche="all"\} 1/);
  await assert.rejects(greeter.run(), InvalidArgumentError, "a pipeline runs once");
});

test("pipeline: a group given twice, a source of another group, an unnamed source with metrics are refused", async () => {
  const store = createMemoryStore();
  const handler = () => {};
  assert.throws(
    () =>
      pipeline({ name: "a", group: "b", source: () => memorySource({ store }), handler } as never),
    (e) => e instanceof InvalidArgumentError && e.field === "group",
  );
  assert.throws(
    () => pipeline({ name: "", source: () => memorySource({ store }), handler }),
    (e) => e instanceof InvalidArgumentError && e.field === "name",
  );
  const other = pipeline({
    name: "billing",
    source: () => memorySource({ store, group: "billing-old" }),
    handler,
    statsIntervalMs: 0,
  });
  await assert.rejects(
    other.run(),
    (e) => e instanceof InvalidArgumentError && /billing-old/.test(e.message),
  );
  await other.sink.done; // stopped, not left running
  const unnamed = pipeline({
    name: "plain",
    source: ({ signal }) =>
      new ReadableStream({ pull: () => new Promise(() => {}) }, { signal } as never),
    metrics: createMetrics({ defaultMetrics: false }),
    handler,
    statsIntervalMs: 0,
  });
  await assert.rejects(
    unnamed.run(),
    (e) => e instanceof InvalidArgumentError && e.field === "sourceName",
  );
});

test("run: a sink and a source of different groups are refused; a defaulted sink group only warns", async () => {
  const store = createMemoryStore();
  const sink = streamsSink({ group: "billing", handler: () => {}, statsIntervalMs: 0 });
  await assert.rejects(
    run(memorySource({ store, group: "shipping" }), sink),
    (e) =>
      e instanceof InvalidArgumentError && /"billing"/.test(e.message) &&
      /"shipping"/.test(e.message),
  );
  const stopped = await within(sink.done, 2000);
  assert.equal(stopped.timedOut, undefined, "a refused run leaves its sink stopped");
  // The sink's group left to the default: it runs (as before), with a warning.
  const loose = streamsSink({ handler: () => {}, statsIntervalMs: 0 });
  const ac = new AbortController();
  const running = run(memorySource({ store, group: "shipping" }), loose, { signal: ac.signal });
  await loose.monitor.awaitCompletion({ tail: true, timeoutMs: 5000 });
  ac.abort();
  await running;
  // A source that names no group runs with any sink.
  const any = streamsSink({ group: "x", handler: () => {}, statsIntervalMs: 0 });
  const ac2 = new AbortController();
  const running2 = run(memorySource({ store }), any, { signal: ac2.signal });
  await any.monitor.awaitCompletion({ tail: true, timeoutMs: 5000 });
  ac2.abort();
  await running2;
});

test("pipeline: a leased source whose hand-over is shorter than twice the sink's stop timeout is refused", async () => {
  const store = createMemoryStore();
  // What a leased source's leases() reports (messageDbSource({ leases })): its hand-over time.
  const leased = () =>
    Object.assign(memorySource({ store }), { leases: () => ({ handoverMs: 20_000 }) });
  const tight = pipeline({ name: "g", source: leased, handler: () => {}, stopTimeoutMs: 15_000 });
  await assert.rejects(
    tight.run(),
    (e) => e instanceof LeaseTimingError && e.stopTimeoutMs === 15_000 && e.handoverMs === 20_000,
  );
  const ok = pipeline({ name: "g", source: leased, handler: () => {}, statsIntervalMs: 0 });
  const ac = new AbortController();
  const running = ok.run({ signal: ac.signal });
  await ok.sink.monitor.awaitCompletion({ tail: true, timeoutMs: 5000 });
  ac.abort();
  await running;
});
