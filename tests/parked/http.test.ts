// Parked streams in operations: /health (count, oldest age, thresholds, a failing park store),
// the Prometheus gauges, and the management routes (list, show, release, skip) with their
// token guard and typed 4xx answers to bad input.
import assert from "node:assert/strict";
import { run, type StreamsSink, streamsSink } from "../../mod.ts";
import { memoryParkStore } from "../../parked/memory.ts";
import { createMemoryStore, memorySource } from "../../sources/memory.ts";
import { createMetrics } from "../../observability/metrics.ts";
import { checkHealth, createHttpHandler } from "../../observability/http.ts";
import { test } from "../support/core.ts";

const TOKEN = "0123456789abcdef-parked";

async function until(what: string, cond: () => boolean | Promise<boolean>, ms = 5_000) {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** A running pipeline "g" in which Pay-X (two events) is parked and Order-1 was handled. */
async function parkedPipeline(options: { failStore?: () => boolean } = {}) {
  const store = createMemoryStore();
  const parked = memoryParkStore({
    beforeWrite: () => {
      if (options.failStore?.()) throw new Error("park store down");
    },
  });
  const handled: string[] = [];
  let poison = true;
  const sink: StreamsSink = streamsSink({
    group: "g",
    statsIntervalMs: 0,
    commitIntervalMs: 5,
    retry: { initialDelayMs: 1 },
    failure: { kind: "park", maxAttempts: 1, store: parked, pollMs: 10 },
    handler: (stream, events) => {
      if (poison && stream === "Pay-X") throw new Error("declined");
      handled.push(...events.map((e) => `${stream}@${e.index}`));
    },
  });
  const metrics = createMetrics({ defaultMetrics: false });
  const pipeline = metrics.addPipeline({ group: "g", source: "memory", sink });
  await store.append("Pay-X", [{ type: "T", data: 0 }, { type: "T", data: 1 }], 0);
  await store.append("Order-1", [{ type: "T", data: 0 }], 0);
  const ac = new AbortController();
  const running = run(pipeline.observe(memorySource({ store, group: "g" })), sink, {
    signal: ac.signal,
  });
  if (!options.failStore) await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 5_000 });
  return {
    store,
    parked,
    sink,
    metrics,
    handled,
    fix: () => (poison = false),
    async stop() {
      ac.abort();
      await running;
    },
  };
}

const request = (path: string, init: RequestInit & { token?: string } = {}) => {
  const headers = new Headers(init.headers);
  if (init.token !== undefined) headers.set("authorization", `Bearer ${init.token}`);
  return new Request(`http://localhost${path}`, { ...init, headers });
};
const post = (path: string, body?: unknown, token: string | null = TOKEN) =>
  request(path, {
    method: "POST",
    token: token ?? undefined,
    ...(body === undefined
      ? {}
      : { body: JSON.stringify(body), headers: { "content-type": "application/json" } }),
  });

test("health: a parked stream degrades the pipeline, with its count, age and error; thresholds move it", async () => {
  const p = await parkedPipeline();
  try {
    const report = await checkHealth(p.metrics.pipelines());
    assert.equal(report.status, "degraded");
    const reason = report.reasons.find((r) => r.kind === "parked")!;
    assert.equal(reason.status, "degraded");
    assert.equal(reason.stream, "Pay-X");
    assert.ok(typeof reason.value === "number" && reason.value >= 0);
    assert.match(reason.message, /1 stream parked \(2 events\).*oldest Pay-X.*Error: declined/);
    assert.equal(
      (await checkHealth(p.metrics.pipelines(), { parked: { degraded: 2 } })).status,
      "ok",
    );
    const old = await checkHealth(p.metrics.pipelines(), {
      parked: { degraded: 5 },
      parkedAgeMs: { failing: 0 },
    });
    assert.equal(old.status, "failing", "older than the age limit");
    const http = createHttpHandler({ metrics: p.metrics, health: { parkedAgeMs: { failing: 0 } } });
    assert.equal((await http(request("/health"))).status, 503);
    assert.throws(() =>
      createHttpHandler({ metrics: p.metrics, health: { parked: { degraded: -1 } } })
    );
  } finally {
    await p.stop();
  }
});

test("health and metrics: a failing park store shows as parkStore and as a failing stream", async () => {
  let down = true;
  const p = await parkedPipeline({ failStore: () => down });
  try {
    await until("failures", () => p.sink.stats().counters.parkFailures >= 2);
    await new Promise((r) => setTimeout(r, 10)); // failing for a measurable while
    const report = await checkHealth(p.metrics.pipelines());
    const kinds = report.reasons.map((r) => r.kind);
    assert.ok(kinds.includes("parkStore"), kinds.join());
    assert.match(report.reasons.find((r) => r.kind === "parkStore")!.message, /park store down/);
    const failing = await checkHealth(p.metrics.pipelines(), {
      parkStoreFailingMs: { failing: 0 },
    });
    assert.equal(failing.status, "failing");
    const text = await p.metrics.metrics();
    assert.match(text, /impel_parked_store_failing_seconds\{group="g"\} [0-9.]+/);
    assert.doesNotMatch(text, /impel_parked_store_failing_seconds\{group="g"\} 0\n/);
    assert.match(text, /impel_parked_total\{group="g",outcome="storeFailed"\} [1-9]/);
    assert.match(text, /impel_parked_total\{group="g",outcome="releaseFailed"\} 0\n/);
    down = false;
    await p.sink.monitor.awaitCompletion({ tail: true, timeoutMs: 5_000 });
    const after = await checkHealth(p.metrics.pipelines());
    assert.ok(!after.reasons.some((r) => r.kind === "parkStore"));
  } finally {
    await p.stop();
  }
});

test("metrics: parked streams and events by group", async () => {
  const p = await parkedPipeline();
  try {
    const text = await p.metrics.metrics();
    assert.match(text, /impel_parked_streams\{group="g"\} 1\n/);
    assert.match(text, /impel_parked_events\{group="g"\} 2\n/);
    assert.match(text, /impel_parked_total\{group="g",outcome="parked"\} 1\n/);
    assert.match(text, /impel_parked_oldest_seconds\{group="g"\} [0-9.e-]+\n/);
  } finally {
    await p.stop();
  }
});

test("http: list and show parked streams; release over HTTP replays them and is idempotent", async () => {
  const p = await parkedPipeline();
  const http = createHttpHandler({ metrics: p.metrics, token: TOKEN });
  try {
    const list = await http(request("/pipelines/g/parked", { token: TOKEN }));
    assert.equal(list.status, 200);
    const body = await list.json();
    assert.deepEqual(body.parked.map((e: { stream: string }) => e.stream), ["Pay-X"]);
    assert.equal(body.parked[0].events, 2);
    assert.equal(body.parked[0].error, "Error: declined");
    const one = await (await http(request("/pipelines/g/parked/Pay-X?limit=1", { token: TOKEN })))
      .json();
    assert.equal(one.state, "parked");
    assert.deepEqual(one.eventsShown.map((e: { index: number }) => e.index), [0]);
    const detail = await (await http(request("/pipelines/g"))).json();
    assert.equal(detail.scheduler.parked.streams, 1);

    p.fix();
    const asked = await http(post("/pipelines/g/parked/Pay-X/release", { by: "alice" }));
    assert.equal(asked.status, 202);
    assert.equal((await asked.json()).request.by, "alice");
    await until("the release", () => p.sink.stats().counters.released === 1);
    assert.deepEqual(p.handled.filter((h) => h.startsWith("Pay-X")), ["Pay-X@0", "Pay-X@1"]);
    const again = await http(post("/pipelines/g/parked/Pay-X/release"));
    assert.equal(again.status, 200, "already released: nothing to do");
    assert.equal((await again.json()).state, "released");
    const history =
      await (await http(request("/pipelines/g/parked?resolved=true", { token: TOKEN }))).json();
    assert.equal(history.parked[0].resolution.by, "alice");
    assert.equal(history.parked[0].resolution.action, "release");
  } finally {
    await p.stop();
  }
});

test("http: skip needs the token and a reason; bad input gets 4xx with a code", async () => {
  const p = await parkedPipeline();
  const http = createHttpHandler({ metrics: p.metrics, token: TOKEN });
  const expect = async (req: Request, status: number, code: string) => {
    const res = await http(req);
    const body = await res.json();
    assert.equal(res.status, status, `${req.method} ${req.url}: ${JSON.stringify(body)}`);
    assert.equal(body.error.code, code, body.error.message);
    return body.error.message as string;
  };
  try {
    const skip = "/pipelines/g/parked/Pay-X/skip";
    await expect(post(skip, { reason: "x" }, null), 401, "MissingToken");
    await expect(post(skip, { reason: "x" }, "not-the-token-at-all"), 401, "InvalidToken");
    const readOnly = createHttpHandler({ metrics: p.metrics });
    const res = await readOnly(post(skip, { reason: "x" }));
    assert.equal(res.status, 403);
    assert.equal((await res.json()).error.code, "ManagementDisabled");
    assert.match(await expect(post(skip, {}), 400, "InvalidBody"), /needs a reason/);
    await expect(post(skip, { reason: "  " }), 400, "InvalidBody");
    await expect(post(skip, { reason: "x", by: 7 }), 400, "InvalidBody");
    await expect(post(skip, { reason: "x", extra: 1 }), 400, "InvalidBody");
    await expect(post(skip, ["reason"]), 400, "InvalidBody");
    await expect(
      request(skip, {
        method: "POST",
        token: TOKEN,
        body: "{",
        headers: { "content-type": "application/json" },
      }),
      400,
      "InvalidJson",
    );
    await expect(
      request(skip, {
        method: "POST",
        token: TOKEN,
        body: "reason=x",
        headers: { "content-type": "text/plain" },
      }),
      415,
      "UnsupportedMediaType",
    );
    await expect(post(skip, { reason: "x".repeat(5_000) }), 413, "BodyTooLarge");
    await expect(request(skip, { method: "GET", token: TOKEN }), 405, "MethodNotAllowed");
    await expect(post("/pipelines/g/parked/Order-9/skip", { reason: "x" }), 404, "StreamNotParked");
    await expect(request("/pipelines/g/parked/Order-9", { token: TOKEN }), 404, "StreamNotParked");
    await expect(
      post("/pipelines/nope/parked/Pay-X/skip", { reason: "x" }),
      404,
      "UnknownPipeline",
    );
    await expect(
      request("/pipelines/g/parked?resolved=maybe", { token: TOKEN }),
      400,
      "InvalidQuery",
    );
    await expect(
      request("/pipelines/g/parked/Pay-X?limit=0", { token: TOKEN }),
      400,
      "InvalidQuery",
    );
    await expect(
      request("/pipelines/g/parked/Pay-X?from=-1", { token: TOKEN }),
      400,
      "InvalidQuery",
    );
    // A release claimed by the sink cannot be turned into a skip.
    const claimed = (await p.parked.get("g", "Pay-X"))!;
    await p.parked.request("g", "Pay-X", { action: "release", by: "alice" });
    await p.parked.claim("g", "Pay-X", claimed.episode, {
      by: "other",
      until: Date.now() + 60_000,
    });
    await expect(post(skip, { reason: "x" }), 409, "ParkRequestConflict");
    // A pipeline without a park store.
    const plain = streamsSink({ group: "plain", handler: () => {}, statsIntervalMs: 0 });
    p.metrics.addPipeline({ group: "plain", source: "memory", sink: plain });
    await expect(request("/pipelines/plain/parked", { token: TOKEN }), 409, "NoParkStore");
    await plain.stop();
  } finally {
    await p.stop();
  }
});

test("http: skip over HTTP drops the events and records who and why", async () => {
  const p = await parkedPipeline();
  const http = createHttpHandler({ metrics: p.metrics, token: TOKEN });
  try {
    const res = await http(
      post("/pipelines/g/parked/Pay-X/skip", { reason: "test card", by: "bob" }),
    );
    assert.equal(res.status, 202);
    await until("the skip", () => p.sink.stats().counters.skipped === 1);
    const entry = (await p.parked.get("g", "Pay-X"))!;
    assert.deepEqual([entry.state, entry.resolution?.by, entry.resolution?.reason], [
      "skipped",
      "bob",
      "test card",
    ]);
    assert.deepEqual(p.handled.filter((h) => h.startsWith("Pay-X")), []);
    assert.equal((await checkHealth(p.metrics.pipelines())).status, "ok");
  } finally {
    await p.stop();
  }
});

test("http: list and show of parked streams need the token (they answer event data), even without protectReads", async () => {
  const p = await parkedPipeline();
  const http = createHttpHandler({ metrics: p.metrics, token: TOKEN });
  const expect = async (req: Request, status: number, code: string) => {
    const res = await http(req);
    assert.equal(res.status, status);
    assert.equal((await res.json()).error.code, code);
  };
  try {
    await expect(request("/pipelines/g/parked"), 401, "MissingToken");
    await expect(request("/pipelines/g/parked/Pay-X"), 401, "MissingToken");
    await expect(
      request("/pipelines/g/parked/Pay-X", { token: "not-the-token-at-all" }),
      401,
      "InvalidToken",
    );
    assert.equal((await http(request("/pipelines/g/parked", { token: TOKEN }))).status, 200);
    assert.equal((await http(request("/pipelines/g/parked/Pay-X", { token: TOKEN }))).status, 200);
    assert.equal((await http(request("/pipelines/g"))).status, 200); // other reads stay open
    const tokenless = createHttpHandler({ metrics: p.metrics });
    const refused = await tokenless(request("/pipelines/g/parked/Pay-X"));
    assert.equal(refused.status, 403);
    assert.equal((await refused.json()).error.code, "ManagementDisabled");
  } finally {
    await p.stop();
  }
});

test("two park stores in one byStream policy: the list names each entry's store; show, release and skip find it", async () => {
  const store = createMemoryStore();
  const payments = memoryParkStore();
  const orders = memoryParkStore();
  let poison = true;
  const handled: string[] = [];
  const sink = streamsSink({
    group: "g",
    statsIntervalMs: 0,
    commitIntervalMs: 5,
    retry: { initialDelayMs: 1 },
    failure: {
      kind: "byStream",
      rules: [
        { match: "Pay-*", policy: { kind: "park", maxAttempts: 1, store: payments, pollMs: 10 } },
        { match: "Order-*", policy: { kind: "park", maxAttempts: 1, store: orders, pollMs: 10 } },
      ],
    },
    handler: (stream, events) => {
      if (poison) throw new Error(`declined ${stream}`);
      handled.push(...events.map((e) => `${stream}@${e.index}`));
    },
  });
  const metrics = createMetrics({ defaultMetrics: false });
  const pipeline = metrics.addPipeline({ group: "g", source: "memory", sink });
  await store.append("Pay-1", [{ type: "T", data: 0 }], 0);
  await store.append("Order-1", [{ type: "T", data: 0 }], 0);
  await store.append("Order-2", [{ type: "T", data: 0 }], 0);
  const ac = new AbortController();
  const running = run(pipeline.observe(memorySource({ store, group: "g" })), sink, {
    signal: ac.signal,
  });
  const http = createHttpHandler({ metrics, token: TOKEN });
  try {
    await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 5_000 });
    const list = await (await http(request("/pipelines/g/parked", { token: TOKEN }))).json();
    assert.equal(list.stores, 2);
    assert.deepEqual(
      list.parked.map((e: { stream: string; store: number }) => [e.stream, e.store]),
      [["Pay-1", 0], ["Order-1", 1], ["Order-2", 1]],
    );
    const only = await (await http(request("/pipelines/g/parked?store=1", { token: TOKEN })))
      .json();
    assert.deepEqual(only.parked.map((e: { stream: string }) => e.stream), ["Order-1", "Order-2"]);
    const bad = await http(request("/pipelines/g/parked?store=2", { token: TOKEN }));
    assert.equal(bad.status, 404);
    assert.equal((await bad.json()).error.code, "UnknownParkStore");
    const one = await (await http(request("/pipelines/g/parked/Order-2", { token: TOKEN })))
      .json();
    assert.equal(one.store, 1);
    assert.equal(one.eventsShown.length, 1, "its events, from the store that has them");
    poison = false;
    const released = await http(post("/pipelines/g/parked/Order-2/release", { by: "alice" }));
    assert.equal(released.status, 202, "accepted: applied asynchronously");
    assert.equal((await released.json()).store, 1);
    const skipped = await http(post("/pipelines/g/parked/Pay-1/skip", { reason: "refunded" }));
    assert.equal(skipped.status, 202);
    await until("both applied", () => {
      const c = sink.stats().counters;
      return c.released === 1 && c.skipped === 1;
    });
    assert.equal((await orders.get("g", "Order-2"))?.state, "released");
    assert.equal((await payments.get("g", "Pay-1"))?.state, "skipped");
    assert.deepEqual(handled, ["Order-2@0"]);
    // The same release again: applied already, answered 200 with the resolved episode.
    const again = await http(post("/pipelines/g/parked/Order-2/release", { by: "alice" }));
    assert.equal(again.status, 200);
    assert.equal((await again.json()).state, "released");
    const none = await http(post("/pipelines/g/parked/Order-9/release", { by: "alice" }));
    assert.equal(none.status, 404);
  } finally {
    ac.abort();
    await running;
  }
});

test("http: a skip records its bound; the same skip again answers 200, a different one 409", async () => {
  const p = await parkedPipeline();
  await p.stop(); // the requests stay pending
  const http = createHttpHandler({ metrics: p.metrics, token: TOKEN });
  const beyond = await http(
    post("/pipelines/g/parked/Pay-X/skip", { reason: "r", by: "alice", upTo: 9 }),
  );
  assert.equal(beyond.status, 400, "a bound above the episode's next");
  assert.match((await beyond.json()).error.message, /upTo/);
  const bad = await http(post("/pipelines/g/parked/Pay-X/skip", { reason: "r", upTo: "all" }));
  assert.equal(bad.status, 400);
  const asked = await http(
    post("/pipelines/g/parked/Pay-X/skip", { reason: "duplicate of #12", by: "alice" }),
  );
  assert.equal(asked.status, 202);
  assert.equal((await asked.json()).request.upTo, 2, "the bound: what the operator saw");
  const again = await http(
    post("/pipelines/g/parked/Pay-X/skip", { reason: "duplicate of #12", by: "alice" }),
  );
  assert.equal(again.status, 200);
  const body = await again.json();
  assert.equal(body.alreadyRequested, true);
  assert.equal(body.request.by, "alice");
  const other = await http(
    post("/pipelines/g/parked/Pay-X/skip", { reason: "another reason", by: "bob" }),
  );
  assert.equal(other.status, 409, "not dropped silently");
  const error = (await other.json()).error;
  assert.equal(error.code, "ParkRequestDiffers");
  assert.match(error.message, /alice/);
  assert.equal((await p.parked.get("g", "Pay-X"))?.request?.by, "alice", "the first stands");
});
