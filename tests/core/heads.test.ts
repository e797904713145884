// awaitCompletion with a source that knows its heads: it waits for them, and says so loudly when
// the source cannot tell them.
import assert from "node:assert/strict";
import { createOwnership, ImpelError, run, streamsSink } from "../../mod.ts";
import { createMemoryStore, memorySource } from "../../sources/memory.ts";
import { ev, test } from "../support/core.ts";

test("awaitCompletion({ tail: true }) waits until every tranche reaches the head the source names", async () => {
  const store = createMemoryStore();
  await store.append("Order-1", [{ type: "Placed", data: {} }], 0);
  let handled = 0;
  const sink = streamsSink({
    statsIntervalMs: 0,
    handler: (_s, events) => void (handled += events.length),
  });
  // A head one past what is in the store: complete only once a second event is handled.
  const source = Object.assign(memorySource({ store }), {
    heads: () => Promise.resolve(new Map([["all", 2n]])),
  });
  const ac = new AbortController();
  const running = run(source, sink, { signal: ac.signal });
  let resolved = false;
  const waiting = sink.monitor.awaitCompletion({ tail: true, timeoutMs: 5000 }).then(() =>
    resolved = true
  );
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(handled, 1);
  assert.equal(resolved, false, "at the tail, but short of the head");
  await store.append("Order-2", [{ type: "Placed", data: {} }], 0);
  await waiting;
  assert.equal(handled, 2);
  await sink.monitor.awaitCompletion(); // without tail: heads are not asked for
  ac.abort();
  await running;
});

test("awaitCompletion({ tail: true }) rejects with HeadUnknown when the source cannot tell its heads", async () => {
  const store = createMemoryStore();
  const sink = streamsSink({ statsIntervalMs: 0, handler: () => {} });
  const source = Object.assign(memorySource({ store }), {
    heads: () => Promise.reject(new Error("database unreachable")),
  });
  const ac = new AbortController();
  const running = run(source, sink, { signal: ac.signal });
  await assert.rejects(
    sink.monitor.awaitCompletion({ tail: true, timeoutMs: 5000 }),
    (e: unknown) =>
      e instanceof ImpelError && e.code === "HeadUnknown" && /database unreachable/.test(e.message),
  );
  ac.abort();
  await running;
});

test("awaitCompletion({ tail: true }) stops waiting for a tranche's head once the tranche is revoked", async () => {
  const sink = streamsSink({ statsIntervalMs: 0, handler: () => {} });
  const owned = createOwnership("p0");
  const writer = sink.writable.getWriter();
  // A source that says p0 goes to 10 while this member has read it to 1 only.
  sink.watchSource(() => [], () => Promise.resolve(new Map([["p0", 10n]])));
  await writer.write({
    tranche: "p0",
    position: 1n,
    isTail: true,
    items: [{ stream: "A-1", event: ev(0) }],
    ownership: owned.ownership,
  });
  let resolved = false;
  const waiting = sink.monitor.awaitCompletion({ tail: true, timeoutMs: 5000 }).then(() =>
    resolved = true
  );
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(resolved, false, "short of p0's head");
  await owned.revoke(); // another member has p0 now
  await waiting;
  await sink.stop();
});
