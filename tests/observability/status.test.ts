// The status page's server side: the page itself, the snapshot, the Server-Sent Events feed
// (shared by every page, bounded for slow ones), the token rules of its actions, and the
// handler mounted in the runtime's own server and in a Hono app, over real HTTP.
import assert from "node:assert/strict";
import { Hono } from "hono";
import { InvalidArgumentError } from "../../core/errors.ts";
import { createHttpHandler, type StatusSnapshot } from "../../observability/http.ts";
import { createMetrics } from "../../observability/metrics.ts";
import { serve, sseEvents, statusWorld, TOKEN } from "./status_fixture.ts";

const local = "http://impel.test";

async function until<T>(what: string, probe: () => Promise<T>, ok: (t: T) => boolean, ms = 8000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await probe();
    if (ok(value)) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const snapshotOf = async (handler: (r: Request) => Promise<Response>, query = "") =>
  (await (await handler(new Request(`${local}/status${query}`))).json()) as StatusSnapshot;

Deno.test("status page: GET / is one self-contained page whose script and style carry the CSP nonce", async () => {
  const handler = createHttpHandler({
    metrics: createMetrics({ defaultMetrics: false }),
    basePath: "/impel",
    protectReads: true,
    token: TOKEN,
  });
  for (const path of ["/impel/", "/impel"]) {
    // Open even with protectReads: the page holds no data, it reads /status with the token.
    const res = await handler(new Request(`${local}${path}`));
    assert.equal(res.status, 200, path);
    assert.equal(res.headers.get("content-type"), "text/html; charset=utf-8");
    const csp = res.headers.get("content-security-policy")!;
    const nonce = /script-src 'nonce-([^']+)'/.exec(csp)![1];
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /connect-src 'self'/);
    const html = await res.text();
    assert.equal(
      html.match(new RegExp(`nonce="${nonce.replace(/[+/]/g, "\\$&")}"`, "g"))?.length,
      2,
    );
    // Nothing loaded from anywhere: no external script, style sheet, image or font.
    assert.doesNotMatch(html, /<script[^>]* src=|<link |<img |@import|url\(/);
    assert.doesNotMatch(html, /TOKEN|status-page-token/);
  }
  const again = await handler(new Request(`${local}/impel/`));
  assert.notEqual(
    again.headers.get("content-security-policy"),
    (await handler(new Request(`${local}/impel/`))).headers.get("content-security-policy"),
    "a fresh nonce per response",
  );
  await again.body?.cancel();
  const head = await handler(new Request(`${local}/impel/`, { method: "HEAD" }));
  assert.equal(head.status, 200);
  assert.equal(await head.text(), "");
});

Deno.test("status: the snapshot shows each pipeline's failing and parked streams, tranches, health and history", async () => {
  const world = await statusWorld({ token: TOKEN });
  try {
    const snap = await until(
      "a failing stream, a parked one and some history",
      () => snapshotOf(world.handler),
      (s) =>
        s.pipelines.length === 2 && s.pipelines[0].failing.length > 0 &&
        s.pipelines[1].parked.streams > 0 && s.pipelines[0].history.length >= 3,
    );
    assert.equal(snap.actions, true);
    assert.equal(snap.protectReads, false);
    assert.equal(snap.intervalMs, 200);
    const [billing, shipping] = snap.pipelines;
    assert.equal(billing.group, "billing");
    assert.equal(billing.state, "running");
    assert.equal(billing.failing[0].stream, "Payment-bad");
    assert.equal(billing.failing[0].error, "Error: card declined by the test gateway");
    assert.ok(billing.failing[0].attempts >= 1 && billing.failing[0].ageMs >= 0);
    assert.equal(billing.checkpoints, true);
    const t = billing.tranches[0];
    assert.equal(t.tranche, "all");
    assert.match(t.readPosition!, /^\d+$/);
    assert.match(t.head!, /^\d+$/);
    assert.ok(t.lag! > 0, "Payment-bad holds billing's completed position back, so it lags");
    assert.ok(t.readAhead > 0);
    assert.equal(billing.maxReadAhead, 100_000);

    assert.equal(shipping.parked.oldest[0].stream, "Parcel-lost");
    assert.equal(shipping.parked.oldest[0].error, "Error: address unknown");
    assert.equal(shipping.parkStores, 1);
    assert.equal(shipping.health.status, "degraded");
    assert.equal(shipping.health.reasons[0].kind, "parked");
    assert.equal(snap.health, "degraded");
    const committed = await until(
      "shipping commits a checkpoint",
      () => snapshotOf(world.handler),
      (s) => s.pipelines[1].tranches[0]?.committed !== null,
    );
    assert.match(committed.pipelines[1].tranches[0].committed!, /^\d+$/);

    const h = billing.history;
    assert.ok(h.every((s, i) => i === 0 || s.at > h[i - 1].at), "oldest first");
    assert.ok(h.reduce((n, s) => n + s.handled, 0) > 0);
    assert.ok(h.reduce((n, s) => n + s.failures, 0) > 0, "Payment-bad's failed calls");
    assert.ok(h.some((s) => s.latency !== null && s.latency.p99 >= s.latency.p50));
    // ?since= answers only the history after it, for the polling page.
    const since = h[h.length - 2].at;
    const later = await snapshotOf(world.handler, `?since=${since}`);
    assert.ok(later.pipelines[0].history.every((s) => s.at > since));
    assert.ok(later.pipelines[0].history.length >= 1);
    const bad = await world.handler(new Request(`${local}/status?since=yesterday`));
    assert.equal(bad.status, 400);
    assert.equal((await bad.json()).error.code, "InvalidQuery");
  } finally {
    await world.stop();
  }
});

Deno.test("status events: 20 pages share one feed over HTTP, numbers move, and the feed stops when they leave", async () => {
  const world = await statusWorld({ token: TOKEN, intervalMs: 100 });
  const server = serve(world.handler);
  try {
    const pages = await Promise.all(
      Array.from({ length: 20 }, async () => {
        const res = await fetch(`${server.url}/status/events`);
        assert.equal(res.status, 200);
        assert.equal(res.headers.get("content-type"), "text/event-stream; charset=utf-8");
        return sseEvents(res.body!);
      }),
    );
    const firsts = await Promise.all(pages.map((p) => p.next()));
    for (const f of firsts) {
      assert.equal(f.value!.event, "snapshot");
      // The first event is a full snapshot, history included.
      assert.ok((f.value!.data as StatusSnapshot).pipelines.length === 2);
    }
    // Then one per interval, the same to every page, with the handled count moving.
    const handled = (s: StatusSnapshot) => s.pipelines[1].counters.handled;
    const seen: number[] = [];
    const ids: number[] = [];
    for (let i = 0; i < 6; i++) {
      const e = (await pages[0].next()).value!;
      seen.push(handled(e.data as StatusSnapshot));
      ids.push(Number(e.id));
    }
    assert.ok(seen[5] > seen[0], `handled moves: ${seen.join(", ")}`);
    assert.ok(ids.every((id, i) => i === 0 || id > ids[i - 1]));
    const other = (await pages[19].next()).value!;
    assert.equal((other.data as StatusSnapshot).feed.clients, 20);
    for (const p of pages) await p.return(undefined);
    const after = await until(
      "the pages to be gone",
      () => snapshotOf(world.handler),
      (s) => s.feed.clients === 0,
    );
    assert.equal(after.feed.dropped, 0);
  } finally {
    await server.close();
    await world.stop();
  }
});

Deno.test("status events: a page that stops reading is skipped, then dropped, and holds at most one snapshot", async () => {
  const world = await statusWorld({ intervalMs: 100, dropAfterMs: 600 });
  try {
    // In process, so the body's own queue is all there is between the feed and the page.
    const stalled = await world.handler(new Request(`${local}/status/events`));
    assert.equal(stalled.status, 200);
    const skipping = await until(
      "snapshots skipped for the stalled page",
      () => snapshotOf(world.handler),
      (s) => s.feed.skipped >= 3,
    );
    assert.equal(skipping.feed.clients, 1);
    assert.equal(skipping.feed.dropped, 0);
    const dropped = await until(
      "the stalled page dropped",
      () => snapshotOf(world.handler),
      (s) => s.feed.dropped === 1,
    );
    assert.equal(dropped.feed.clients, 0);
    // What it still holds: the retry hint and the first snapshot; then the reason it was dropped.
    const reader = stalled.body!.getReader();
    await assert.rejects(
      (async () => {
        for (;;) if ((await reader.read()).done) break;
      })(),
      /status page too slow: no snapshot read for 600 ms/,
    );
  } finally {
    await world.stop();
  }
});

Deno.test("status actions: without the token a reset or a release is refused with 401; with it they are done", async () => {
  const world = await statusWorld({ token: TOKEN });
  try {
    await until(
      "Parcel-lost parked",
      () => snapshotOf(world.handler),
      (s) => s.pipelines[1]?.parked.streams === 1,
    );
    const release = (token?: string) =>
      world.handler(
        new Request(`${local}/pipelines/shipping/parked/Parcel-lost/release`, {
          method: "POST",
          headers: {
            "content-type": "application/json",
            ...(token ? { authorization: `Bearer ${token}` } : {}),
          },
          body: JSON.stringify({ by: "status page" }),
        }),
      );
    const reset = (token?: string, force = false) =>
      world.handler(
        new Request(`${local}/pipelines/billing/checkpoints/all`, {
          method: "PUT",
          headers: {
            "content-type": "application/json",
            ...(token ? { authorization: `Bearer ${token}` } : {}),
          },
          body: JSON.stringify({ position: "start", ...(force ? { force } : {}) }),
        }),
      );
    for (
      const refused of [await release(), await reset(), await release("wrong-token-0123456789")]
    ) {
      assert.equal(refused.status, 401);
      assert.match((await refused.json()).error.code, /^(MissingToken|InvalidToken)$/);
      assert.equal(refused.headers.get("www-authenticate"), 'Bearer realm="impel"');
    }
    const still = await snapshotOf(world.handler);
    assert.equal(still.pipelines[1].parked.oldest[0].state, "parked");

    const running = await reset(TOKEN);
    assert.equal(running.status, 409);
    assert.equal((await running.json()).error.code, "PipelineRunning");
    assert.equal((await reset(TOKEN, true)).status, 200);
    const before = (await world.parked.get("shipping", "Parcel-lost"))!;
    const accepted = await release(TOKEN);
    assert.equal(accepted.status, 202);
    await accepted.body?.cancel();
    // Replayed, it fails again and stays parked with the new failure: the release was applied.
    const entry = await until(
      "the release applied",
      () => world.parked.get("shipping", "Parcel-lost"),
      (e) => e?.request === undefined && e!.lastFailedAt > before.lastFailedAt,
    );
    assert.equal(entry?.state, "parked");
  } finally {
    await world.stop();
  }
  // A handler created without a token offers no actions and refuses them all.
  const metrics = createMetrics({ defaultMetrics: false });
  const handler = createHttpHandler({ metrics });
  assert.equal((await snapshotOf(handler)).actions, false);
  const refused = await handler(
    new Request(`${local}/pipelines/x/checkpoints/all`, { method: "PUT", body: "{}" }),
  );
  assert.ok(refused.status === 403 || refused.status === 404);
});

Deno.test("status: protectReads needs the token for the snapshot and the feed", async () => {
  const world = await statusWorld({ token: TOKEN, protectReads: true, perTick: 0 });
  try {
    for (const path of ["/status", "/status/events"]) {
      const res = await world.handler(new Request(`${local}${path}`));
      assert.equal(res.status, 401, path);
      await res.body?.cancel();
    }
    const auth = { authorization: `Bearer ${TOKEN}` };
    const snap = await world.handler(new Request(`${local}/status`, { headers: auth }));
    assert.equal(snap.status, 200);
    assert.equal(((await snap.json()) as StatusSnapshot).protectReads, true);
    const events = await world.handler(new Request(`${local}/status/events`, { headers: auth }));
    assert.equal(events.status, 200);
    const feed = sseEvents(events.body!);
    assert.equal((await feed.next()).value!.event, "snapshot");
    await feed.return(undefined); // cancels the body: the page is gone
    assert.equal(
      (await (await world.handler(new Request(`${local}/status`, { headers: auth }))).json())
        .feed.clients,
      0,
    );
  } finally {
    await world.stop();
  }
});

Deno.test("status events: past maxClients a page is refused with 503; a HEAD opens no feed", async () => {
  const world = await statusWorld({ maxClients: 2, perTick: 0 });
  try {
    const open = [
      await world.handler(new Request(`${local}/status/events`)),
      await world.handler(new Request(`${local}/status/events`)),
    ];
    const third = await world.handler(new Request(`${local}/status/events`));
    assert.equal(third.status, 503);
    assert.equal(third.headers.get("retry-after"), "10");
    assert.equal((await third.json()).error.code, "TooManyClients");
    const head = await world.handler(new Request(`${local}/status/events`, { method: "HEAD" }));
    assert.equal(head.status, 405);
    for (const r of open) await r.body!.cancel();
    assert.equal((await snapshotOf(world.handler)).feed.clients, 0);
  } finally {
    await world.stop();
  }
});

Deno.test("status: bad status and history options are refused, naming the field", () => {
  const metrics = createMetrics({ defaultMetrics: false });
  const bad: Array<[() => unknown, RegExp]> = [
    [() => createHttpHandler({ metrics, status: { intervalMs: 10 } }), /status\.intervalMs/],
    [() => createHttpHandler({ metrics, status: { maxClients: 0 } }), /status\.maxClients/],
    [
      () => createHttpHandler({ metrics, status: { intervalMs: 1000, dropAfterMs: 500 } }),
      /status\.dropAfterMs/,
    ],
    // deno-lint-ignore no-explicit-any
    [() => createHttpHandler({ metrics, status: "fast" as any }), /status/],
    [() => createMetrics({ history: { intervalMs: 5 } }), /history\.intervalMs/],
    [() => createMetrics({ history: { intervalMs: 1000, keepMs: 10 } }), /history\.keepMs/],
  ];
  for (const [make, field] of bad) {
    assert.throws(make, (e: unknown) => e instanceof InvalidArgumentError && field.test(e.message));
  }
});

/** The page, the snapshot, the feed's first event and a refused action, through `url`. */
async function exercise(url: string) {
  const page = await fetch(`${url}/`);
  assert.equal(page.status, 200);
  assert.match(await page.text(), /<title>impel status<\/title>/);
  const snap = (await (await fetch(`${url}/status`)).json()) as StatusSnapshot;
  assert.deepEqual(snap.pipelines.map((p) => p.group), ["billing", "shipping"]);
  const events = await fetch(`${url}/status/events`);
  assert.equal(events.headers.get("content-type"), "text/event-stream; charset=utf-8");
  const feed = sseEvents(events.body!);
  assert.equal((await feed.next()).value!.event, "snapshot");
  assert.equal((await feed.next()).value!.event, "snapshot");
  await feed.return(undefined);
  const refused = await fetch(`${url}/pipelines/shipping/parked/Parcel-lost/release`, {
    method: "POST",
  });
  assert.equal(refused.status, 401);
  await refused.body?.cancel();
}

const runtime = typeof (globalThis as { Bun?: unknown }).Bun === "undefined" ? "Deno" : "Bun";

Deno.test(`status: mounted in ${runtime}.serve, the page, snapshot, feed and token rule work over HTTP`, async () => {
  const world = await statusWorld({ token: TOKEN, intervalMs: 100 });
  const server = serve(world.handler);
  try {
    await exercise(server.url);
  } finally {
    await server.close();
    await world.stop();
  }
});

Deno.test("status: mounted in a Hono app under /impel, the same over HTTP", async () => {
  const world = await statusWorld({ token: TOKEN, intervalMs: 100 });
  const impel = createHttpHandler({
    metrics: world.metrics,
    token: TOKEN,
    basePath: "/impel",
    status: { intervalMs: 100 },
  });
  const app = new Hono();
  app.get("/", (c) => c.text("the application's own page"));
  app.all("/impel", (c) => impel(c.req.raw));
  app.all("/impel/*", (c) => impel(c.req.raw));
  const server = serve((request) => app.fetch(request));
  try {
    assert.equal(await (await fetch(`${server.url}/`)).text(), "the application's own page");
    await exercise(`${server.url}/impel`);
    // The page reads status relative to its own address, so /impel without a slash works too.
    const bare = await fetch(`${server.url}/impel`);
    assert.equal(bare.status, 200);
    await bare.text();
  } finally {
    await server.close();
    await world.stop();
  }
});

Deno.test("status: aborting the handler's signal ends every page's stream, so a graceful shutdown completes", async () => {
  const world = await statusWorld({ perTick: 0 });
  const stop = new AbortController();
  const handler = createHttpHandler({
    metrics: world.metrics,
    signal: stop.signal,
    status: { intervalMs: 100 },
  });
  const server = serve(handler);
  try {
    const res = await fetch(`${server.url}/status/events`);
    const feed = sseEvents(res.body!);
    assert.equal((await feed.next()).value!.event, "snapshot");
    stop.abort();
    // The stream ends (its remaining events, then done) rather than staying open.
    for (let e = await feed.next(); !e.done; e = await feed.next()) {
      assert.equal(e.value.event, "snapshot");
    }
    const refused = await fetch(`${server.url}/status/events`);
    assert.equal(refused.status, 503);
    assert.equal((await refused.json()).error.code, "ShuttingDown");
    const closing = server.close();
    const late = new Promise((_, reject) =>
      setTimeout(() => reject(new Error("shutdown still waiting after 5 s")), 5000)
    );
    await Promise.race([closing, late]);
  } finally {
    await server.close().catch(() => {});
    await world.stop();
  }
});
