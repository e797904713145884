// The periodic source over an in-memory "table": items that vanish and come back, content that
// reverts, crawl data that can never be hashed, and when crawls happen.
import assert from "node:assert/strict";
import { type Batch, run, streamsSink } from "../../mod.ts";
import { memoryCheckpoints } from "../../checkpoints/memory.ts";
import { type PeriodicItem, PeriodicItemError, periodicSource } from "../../sources/periodic.ts";

async function until(ok: () => boolean, what: string, ms = 10_000) {
  const deadline = Date.now() + ms;
  while (!ok()) {
    assert.ok(Date.now() < deadline, `${what} within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

Deno.test("periodic source: an item that vanishes and comes back is handled again; reverted content gets a new id", async () => {
  const rows = new Map<number, string>([[1, "v1"], [2, "desk"]]);
  let crawls = 0;
  const crawl = (): Promise<PeriodicItem[]> => {
    crawls++;
    return Promise.resolve(
      [...rows].map(([id, name]) => ({ stream: `Product-${id}`, data: { name } })),
    );
  };
  const handled: string[] = [];
  const ids: string[] = [];
  const sink = streamsSink({
    handler: (stream, events) => {
      for (const e of events) {
        handled.push(`${stream}@${e.index}:${(e.data as { name: string }).name}`);
        ids.push(e.id);
      }
    },
    statsIntervalMs: 0,
    commitIntervalMs: 10,
  });
  const stop = new AbortController();
  const running = run(
    periodicSource({ name: "products", crawl, intervalMs: 10, checkpoints: memoryCheckpoints() }),
    sink,
    { signal: stop.signal },
  );
  const pass = async (n: number) => {
    const c = crawls;
    await until(() => crawls >= c + n, `${n} crawls`);
  };
  try {
    await pass(2);
    rows.set(1, "v2");
    await pass(3);
    rows.delete(1); // vanishes
    await pass(3);
    rows.set(1, "v1"); // back, with the content of its first version
    await pass(3);
    rows.set(1, "v4");
    await pass(3);
    await sink.monitor.awaitCompletion({ timeoutMs: 5000 });
  } finally {
    stop.abort();
    await running;
  }
  assert.deepEqual(
    handled.filter((h) => h.startsWith("Product-1")),
    ["Product-1@0:v1", "Product-1@1:v2", "Product-1@2:v1", "Product-1@3:v4"],
  );
  assert.equal(new Set(ids).size, ids.length, `ids are unique per emission: ${ids}`);
});

for (
  const [label, items] of [
    ["data with a BigInt", [{ stream: "Product-1", data: { id: 1n } }]],
    ["a null item", [null]],
    ["an item with a cycle", [{
      stream: "Product-1",
      data: (() => {
        const o: Record<string, unknown> = {};
        o.self = o;
        return o;
      })(),
    }]],
  ] as const
) {
  Deno.test(`periodic source: ${label} fails the source with a PeriodicItemError, not retried`, async () => {
    let crawls = 0;
    const source = periodicSource({
      name: "p",
      intervalMs: 10,
      crawl: () => (crawls++, Promise.resolve(items as unknown as PeriodicItem[])),
      retry: { initialDelayMs: 1, maxDelayMs: 1 },
    });
    await assert.rejects(
      async () => {
        for await (const _ of source) { /* announcement */ }
      },
      (e) => e instanceof PeriodicItemError && /crawl\(0\) of p/.test(e.message),
    );
    assert.equal(crawls, 1);
  });
}

Deno.test("periodic source: crawls start intervalMs apart, start to start, however long a crawl takes", async () => {
  const starts: number[] = [];
  const stop = new AbortController();
  const source = periodicSource({
    name: "p",
    intervalMs: 200,
    crawl: async () => {
      starts.push(Date.now());
      await new Promise((r) => setTimeout(r, 120));
      return [];
    },
    signal: stop.signal,
  });
  const reading = (async () => {
    for await (const _ of source) { /* drain */ }
  })();
  try {
    await until(() => starts.length >= 3, "three crawls");
  } finally {
    stop.abort();
    await reading;
  }
  const gaps = starts.slice(1).map((t, k) => t - starts[k]);
  for (const gap of gaps) assert.ok(gap >= 190 && gap < 300, `start to start ${gap} ms`);
});

Deno.test("periodic source: after a restart the first crawl is intervalMs after the stored one", async () => {
  const checkpoints = memoryCheckpoints();
  const began = Date.now();
  await checkpoints.commit({ source: "p", tranche: "0", group: "default" }, BigInt(began - 100));
  let first: number | undefined;
  const stop = new AbortController();
  const source = periodicSource({
    name: "p",
    intervalMs: 400,
    checkpoints,
    crawl: () => (first ??= Date.now(), Promise.resolve([])),
    signal: stop.signal,
  });
  const batches: Batch[] = [];
  const reading = (async () => {
    for await (const b of source) batches.push(b);
  })();
  try {
    await until(() => first !== undefined, "the first crawl");
  } finally {
    stop.abort();
    await reading;
  }
  const at = first! - began;
  assert.ok(at >= 290 && at < 390, `the first crawl came ${at} ms after the start, due at 300`);
});
