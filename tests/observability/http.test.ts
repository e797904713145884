import assert from "node:assert/strict";
import { memoryCheckpoints } from "../../checkpoints/memory.ts";
import { InvalidArgumentError } from "../../core/errors.ts";
import { run, streamsSink } from "../../core/sink.ts";
import { createMemoryStore, memorySource } from "../../sources/memory.ts";
import { createMetrics } from "../../observability/metrics.ts";
import { checkHealth, createHttpHandler, type HealthReport } from "../../observability/http.ts";

const TOKEN = "s3cret-token-0123456789";
const base = "http://impel.test";

/** Polls `probe` until `accept` holds, failing after `ms`; the thing observed is real time passing. */
async function until<T>(probe: () => Promise<T>, accept: (t: T) => boolean, ms = 3000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await probe();
    if (accept(value)) return value;
    if (Date.now() > deadline) {
      throw new Error(`condition not reached within ${ms} ms; last: ${JSON.stringify(value)}`);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
}

Deno.test("health: ok, then degraded and failing on a stuck handler, then ok again", async () => {
  const metrics = createMetrics({ defaultMetrics: false });
  const store = createMemoryStore();
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  const sink = streamsSink({
    group: "slow",
    statsIntervalMs: 0,
    stuckAfterMs: 30,
    handler: (stream) => (stream === "Order-1" ? gate : undefined),
  });
  metrics.addPipeline({ group: "slow", source: "memory", sink });
  const handler = createHttpHandler({
    metrics,
    health: { stuckMs: { degraded: 0, failing: 250 } },
  });
  const health = async () => {
    const res = await handler(new Request(`${base}/health`));
    return { code: res.status, body: (await res.json()) as HealthReport };
  };
  const ac = new AbortController();
  const running = run(memorySource({ store }), sink, { signal: ac.signal });

  assert.deepEqual((await health()).body.status, "ok");
  await store.append("Order-1", [{ type: "Placed", data: {} }], 0);
  const degraded = await until(health, (h) => h.body.status !== "ok");
  assert.equal(degraded.body.status, "degraded");
  assert.equal(degraded.code, 200);
  assert.equal(degraded.body.reasons[0].kind, "stuck");
  assert.equal(degraded.body.reasons[0].stream, "Order-1");
  assert.match(degraded.body.reasons[0].message, /1 stream stuck; oldest Order-1 for/);
  assert.equal(degraded.body.pipelines[0].group, "slow");

  const failing = await until(health, (h) => h.body.status === "failing");
  assert.equal(failing.code, 503);
  assert.equal(failing.body.reasons[0].status, "failing");
  assert.ok(failing.body.reasons[0].value! >= 250);

  release();
  await sink.monitor.awaitCompletion({ timeoutMs: 2000 });
  assert.equal((await health()).body.status, "ok");
  ac.abort();
  await running;
  const stopped = await health();
  assert.equal(stopped.code, 503);
  assert.equal(stopped.body.reasons[0].kind, "stopped");
});

Deno.test("health: failing streams, lag thresholds and a faulted pipeline", async () => {
  const metrics = createMetrics({ defaultMetrics: false });
  const store = createMemoryStore();
  let fail = true;
  const sink = streamsSink({
    group: "flaky",
    statsIntervalMs: 0,
    retry: { initialDelayMs: 5, maxDelayMs: 5, jitter: 0 },
    handler: () => {
      if (fail) throw new Error("database down");
    },
  });
  metrics.addPipeline({
    group: "flaky",
    source: "memory",
    sink,
    positions: { head: () => Promise.resolve(BigInt(store.head)) },
    headCacheMs: 0,
  });
  const thresholds = {
    failingMs: { degraded: 0, failing: 150 },
    lag: { degraded: 2, failing: 1000 },
  };
  const ac = new AbortController();
  const running = run(memorySource({ store }), sink, { signal: ac.signal });
  await store.append("Order-1", [{ type: "A", data: 1 }, { type: "B", data: 2 }, {
    type: "C",
    data: 3,
  }], 0);

  const degraded = await until(
    () => checkHealth(metrics.pipelines(), thresholds),
    (h) => h.status !== "ok",
  );
  assert.equal(degraded.status, "degraded");
  const kinds = degraded.reasons.map((r) => r.kind).sort();
  assert.deepEqual(kinds, ["failing", "lag"]);
  const lag = degraded.reasons.find((r) => r.kind === "lag")!;
  assert.equal(lag.value, 3);
  assert.equal(lag.tranche, "all");
  assert.match(degraded.reasons.find((r) => r.kind === "failing")!.message, /Error: database down/);
  const failing = await until(
    () => checkHealth(metrics.pipelines(), thresholds),
    (h) => h.status === "failing",
  );
  assert.equal(failing.reasons[0].kind, "failing");
  fail = false;
  await sink.monitor.awaitCompletion({ timeoutMs: 2000 });
  assert.equal((await checkHealth(metrics.pipelines(), thresholds)).status, "ok");
  ac.abort();
  await running;

  const faulty = streamsSink({
    group: "faulty",
    statsIntervalMs: 0,
    retry: { initialDelayMs: 1, jitter: 0 },
    failure: { kind: "fault", maxAttempts: 1 },
    handler: () => {
      throw new Error("poison");
    },
  });
  const registry = createMetrics({ defaultMetrics: false });
  registry.addPipeline({ group: "faulty", source: "memory", sink: faulty });
  await assert.rejects(run(memorySource({ store }), faulty));
  const report = await checkHealth(registry.pipelines());
  assert.equal(report.status, "failing");
  assert.equal(report.reasons[0].kind, "faulted");
  assert.match(report.reasons[0].message, /^pipeline faulted: Order-1 failed 1 times.*poison/);
  assert.throws(
    () => createHttpHandler({ metrics, health: { lag: { degraded: -1 } } }),
    InvalidArgumentError,
  );
});

Deno.test("management API: tokens, validation, listing and checkpoint resets", async () => {
  const metrics = createMetrics({ defaultMetrics: false });
  const store = createMemoryStore();
  const checkpoints = memoryCheckpoints();
  await store.append("Order-1", [{ type: "A", data: 1 }, { type: "B", data: 2 }], 0);
  const sink = streamsSink({ group: "orders", statsIntervalMs: 0, handler: () => {} });
  const tailed = streamsSink({ group: "tailed", statsIntervalMs: 0, handler: () => {} });
  metrics.addPipeline({ group: "orders", source: "memory", sink, checkpoints });
  metrics.addPipeline({
    group: "tailed",
    source: "memory",
    sink: tailed,
    checkpoints,
    positions: {
      head: () => Promise.resolve(BigInt(store.head)),
      start: () => Promise.resolve(0n),
    },
  });
  const handler = createHttpHandler({ metrics, token: TOKEN, basePath: "/impel" });
  const call = async (
    method: string,
    path: string,
    init: { body?: string; token?: string | null; type?: string; auth?: string } = {},
  ) => {
    const headers = new Headers();
    if (init.auth !== undefined) headers.set("authorization", init.auth);
    else if (init.token !== null) headers.set("authorization", `Bearer ${init.token ?? TOKEN}`);
    if (init.body !== undefined) headers.set("content-type", init.type ?? "application/json");
    const res = await handler(
      new Request(`${base}/impel${path}`, { method, headers, body: init.body }),
    );
    const text = await res.text();
    return {
      status: res.status,
      headers: res.headers,
      body: text && res.headers.get("content-type")?.includes("json") ? JSON.parse(text) : text,
    };
  };
  const put = (path: string, body: unknown, init: { token?: string | null; auth?: string } = {}) =>
    call("PUT", path, { ...init, body: typeof body === "string" ? body : JSON.stringify(body) });

  const ac = new AbortController();
  const running = run(memorySource({ store, checkpoints, group: "orders" }), sink, {
    signal: ac.signal,
  });
  await sink.monitor.awaitCompletion({ tail: true });
  await sink.flush();

  // Reads.
  const list = await call("GET", "/pipelines", { token: null });
  assert.equal(list.status, 200);
  assert.deepEqual(list.body.pipelines.map((p: { group: string }) => p.group), [
    "orders",
    "tailed",
  ]);
  const orders = list.body.pipelines[0];
  assert.equal(orders.state, "running");
  assert.deepEqual(orders.checkpoints, [{ tranche: "all", position: "2" }]);
  assert.equal(orders.tranches[0].tranche, "all");
  assert.equal(orders.tranches[0].completed, "2");
  const detail = await call("GET", "/pipelines/orders", { token: null });
  assert.equal(detail.body.scheduler.counters.handled, 2);
  assert.deepEqual(
    (await call("GET", "/pipelines/orders/checkpoints", { token: null })).body.checkpoints,
    [
      { tranche: "all", position: "2" },
    ],
  );
  const metricsText = await call("GET", "/metrics", { token: null });
  assert.equal(metricsText.status, 200);
  assert.match(metricsText.headers.get("content-type")!, /^text\/plain/);
  assert.match(metricsText.body, /impel_scheduler_events_handled_total\{group="orders"\} 2/);
  assert.equal((await call("HEAD", "/health", { token: null })).body, "");
  assert.equal((await handler(new Request(`${base}/health`))).status, 404, "outside the base path");

  // Authentication comes before anything else about a change.
  const missing = await put("/pipelines/orders/checkpoints/all", { position: "1" }, {
    token: null,
  });
  assert.equal(missing.status, 401);
  assert.equal(missing.body.error.code, "MissingToken");
  assert.match(missing.headers.get("www-authenticate")!, /^Bearer/);
  const wrong = await put("/pipelines/orders/checkpoints/all", { position: "1" }, {
    token: TOKEN + "x",
  });
  assert.equal(wrong.status, 401);
  assert.equal(wrong.body.error.code, "InvalidToken");
  assert.equal(
    (await put("/pipelines/orders/checkpoints/all", { position: "1" }, {
      auth: `Basic ${btoa("a:b")}`,
    })).status,
    401,
  );
  assert.equal(
    (await put("/pipelines/orders/checkpoints/all", { position: "1" }, { auth: "Bearer" })).status,
    401,
  );
  assert.equal(
    (await call("DELETE", "/pipelines/orders/checkpoints/all", { token: "nope" })).status,
    401,
  );
  assert.equal(
    await checkpoints.load({ source: "memory", tranche: "all", group: "orders" }),
    2n,
    "nothing changed",
  );

  // A running pipeline's checkpoint is not changed without force.
  const busy = await put("/pipelines/orders/checkpoints/all", { position: "1" });
  assert.equal(busy.status, 409);
  assert.equal(busy.body.error.code, "PipelineRunning");
  ac.abort();
  await running;

  // Bad input, each with a clear 4xx.
  const bad: Array<[string, unknown, number, string]> = [
    ["/pipelines/orders/checkpoints/all", "{not json", 400, "InvalidJson"],
    ["/pipelines/orders/checkpoints/all", [], 400, "InvalidBody"],
    ["/pipelines/orders/checkpoints/all", { position: "1", extra: 1 }, 400, "InvalidBody"],
    ["/pipelines/orders/checkpoints/all", { position: "-1" }, 400, "InvalidPosition"],
    ["/pipelines/orders/checkpoints/all", { position: "12abc" }, 400, "InvalidPosition"],
    ["/pipelines/orders/checkpoints/all", { position: -3 }, 400, "InvalidPosition"],
    ["/pipelines/orders/checkpoints/all", { position: 1.5 }, 400, "InvalidPosition"],
    [
      "/pipelines/orders/checkpoints/all",
      { position: "9223372036854775808" },
      400,
      "InvalidPosition",
    ],
    ["/pipelines/orders/checkpoints/all", {}, 400, "InvalidPosition"],
    ["/pipelines/orders/checkpoints/all", { position: "1", force: "yes" }, 400, "InvalidBody"],
    ["/pipelines/orders/checkpoints/all", { position: "tail" }, 422, "TailUnknown"],
    ["/pipelines/orders/checkpoints/all", { position: "x".repeat(5000) }, 413, "BodyTooLarge"],
    ["/pipelines/nobody/checkpoints/all", { position: "1" }, 404, "UnknownPipeline"],
    ["/pipelines/orders/checkpoints/nowhere", { position: "1" }, 404, "UnknownTranche"],
    ["/pipelines/orders/checkpoints/%E0%A4%A", { position: "1" }, 400, "InvalidPath"],
    ["/pipelines/orders/checkpoints/all/more", { position: "1" }, 404, "NotFound"],
  ];
  for (const [path, body, status, code] of bad) {
    const res = await put(path, body);
    assert.equal(
      res.status,
      status,
      `${path} ${JSON.stringify(body).slice(0, 40)}: ${JSON.stringify(res.body)}`,
    );
    assert.equal(res.body.error.code, code);
    assert.ok(res.body.error.message.length > 10);
  }
  const text = await call("PUT", "/pipelines/orders/checkpoints/all", {
    body: "position=1",
    type: "text/plain",
  });
  assert.equal(text.status, 415);
  const post = await call("POST", "/pipelines/orders/checkpoints/all", { body: "{}" });
  assert.equal(post.status, 405);
  assert.equal(post.headers.get("allow"), "PUT, DELETE");
  assert.equal((await call("GET", "/nothing")).status, 404);
  assert.equal(
    await checkpoints.load({ source: "memory", tranche: "all", group: "orders" }),
    2n,
    "still unchanged",
  );

  // Valid changes.
  const set = await put("/pipelines/orders/checkpoints/all", { position: "1" });
  assert.equal(set.status, 200);
  assert.deepEqual(set.body, {
    group: "orders",
    source: "memory",
    tranche: "all",
    previous: "2",
    position: "1",
    running: false,
  });
  assert.equal(await checkpoints.load({ source: "memory", tranche: "all", group: "orders" }), 1n);
  assert.equal(
    (await put("/pipelines/orders/checkpoints/all", { position: "start" })).body.position,
    "0",
  );
  const deleted = await call("DELETE", "/pipelines/orders/checkpoints/all");
  assert.equal(deleted.status, 200);
  assert.equal(
    await checkpoints.load({ source: "memory", tranche: "all", group: "orders" }),
    undefined,
  );
  // "tailed" runs: force, with the tail from positions.head, for a tranche it has not read yet
  // but that has a checkpoint.
  await checkpoints.commit({ source: "memory", tranche: "all", group: "tailed" }, 1n);
  const forced = await put("/pipelines/tailed/checkpoints/all", { position: "tail", force: true });
  assert.equal(forced.status, 200);
  assert.equal(forced.body.position, "2");
  assert.equal(forced.body.running, true);
  assert.equal(await checkpoints.load({ source: "memory", tranche: "all", group: "tailed" }), 2n);
  await tailed.stop();

  // Without a token, changes are refused whatever is presented.
  const readOnly = createHttpHandler({ metrics });
  const refused = await readOnly(
    new Request(`${base}/pipelines/orders/checkpoints/all`, {
      method: "PUT",
      headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
      body: '{"position":"1"}',
    }),
  );
  assert.equal(refused.status, 403);
  assert.equal((await refused.json()).error.code, "ManagementDisabled");
  // protectReads puts the listing behind the token too.
  const guarded = createHttpHandler({ metrics, token: TOKEN, protectReads: true });
  assert.equal((await guarded(new Request(`${base}/pipelines`))).status, 401);
  assert.equal(
    (await guarded(
      new Request(`${base}/pipelines`, { headers: { authorization: `Bearer ${TOKEN}` } }),
    )).status,
    200,
  );
  assert.equal(
    (await guarded(new Request(`${base}/health`))).status,
    503,
    "health stays open (both pipelines stopped)",
  );
  assert.throws(() => createHttpHandler({ metrics, token: "short" }), InvalidArgumentError);
  assert.throws(() => createHttpHandler({ metrics, basePath: "impel/" }), InvalidArgumentError);
});

Deno.test("http: the handler mounts on Deno.serve", async () => {
  const metrics = createMetrics({ defaultMetrics: false });
  const sink = streamsSink({ group: "g", statsIntervalMs: 0, handler: () => {} });
  metrics.addPipeline({ group: "g", source: "memory", sink });
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    createHttpHandler({ metrics }),
  );
  try {
    const res = await fetch(`http://127.0.0.1:${server.addr.port}/health`);
    assert.equal(res.status, 200);
    assert.equal((await res.json()).status, "ok");
    const m = await fetch(`http://127.0.0.1:${server.addr.port}/metrics`);
    assert.match(await m.text(), /impel_pipeline_up\{group="g"\} 1/);
  } finally {
    await server.shutdown();
    await sink.stop();
  }
});

Deno.test("http: routes answer 404, 405 with the path's methods, and 400 for an empty segment", async () => {
  const metrics = createMetrics({ defaultMetrics: false });
  const sink = streamsSink({ group: "g", statsIntervalMs: 0, handler: () => {} });
  metrics.addPipeline({ group: "g", source: "memory", sink });
  const handler = createHttpHandler({ metrics, token: TOKEN });
  const call = async (method: string, path: string) => {
    const res = await handler(
      new Request(`${base}${path}`, {
        method,
        headers: { authorization: `Bearer ${TOKEN}` },
      }),
    );
    const body = res.headers.get("content-type")?.includes("json") ? await res.json() : null;
    return { status: res.status, allow: res.headers.get("allow"), code: body?.error?.code };
  };
  assert.deepEqual(await call("DELETE", "/health"), {
    status: 405,
    allow: "GET, HEAD",
    code: "MethodNotAllowed",
  });
  assert.deepEqual(await call("PUT", "/pipelines/g/checkpoints/"), {
    status: 405,
    allow: "GET, HEAD",
    code: "MethodNotAllowed",
  }, "a trailing slash names the same route");
  assert.equal((await call("GET", "/metrics/")).status, 200);
  assert.deepEqual(await call("GET", "/pipelines//checkpoints"), {
    status: 400,
    allow: null,
    code: "InvalidPath",
  });
  assert.deepEqual(await call("DELETE", "/pipelines/g/checkpoints/%20/x"), {
    status: 404,
    allow: null,
    code: "NotFound",
  });
  assert.equal((await call("GET", "/pipelines/nobody")).code, "UnknownPipeline");
  assert.equal((await call("GET", "/nothing")).code, "NotFound");
  // "/" is the status page (tests/observability/status.test.ts); it has no other method.
  assert.deepEqual(await call("POST", "/"), {
    status: 405,
    allow: "GET, HEAD",
    code: "MethodNotAllowed",
  });
  await sink.stop();
});
