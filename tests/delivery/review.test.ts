// Findings of the review of issue 19's delivery, each reproduced: the body limit in bytes and
// read no further than it, sparse categories that do not block the event loop, a cap on
// subscriptions and slow clients dropped with a reason, tokens compared as secrets, the
// client's retries and line bound, remoteSource's options and checkpoint keys, one error shape.
import assert from "node:assert/strict";
import { configure, type LogRecord, reset } from "@logtape/logtape";
import { InvalidArgumentError } from "../../core/errors.ts";
import { memoryQueues } from "../../queues/memory.ts";
import { createMemoryStore } from "../../sources/memory.ts";
import { createDeliveryHandler, memoryFeed } from "../../delivery/server.ts";
import {
  subscribe,
  SubscriptionLineTooLongError,
  SubscriptionRefusedError,
} from "../../delivery/client.ts";
import { remoteSource } from "../../delivery/remote.ts";
import { memoryCheckpoints } from "../../checkpoints/memory.ts";
import { run, streamsSink } from "../../mod.ts";
import { serve } from "./serve.ts";

const TOKEN = "reader-token-0123456789";
const QTOKEN = "queue-token-0123456789";
const tokens = { [TOKEN]: ["read:Order"], [QTOKEN]: ["consume:jobs"] };

Deno.test("delivery review (C): the body limit counts bytes and stops reading once passed", async () => {
  const handler = createDeliveryHandler({ queues: memoryQueues(), tokens });
  const post = (body: BodyInit, headers: Record<string, string> = {}) =>
    handler(
      new Request("http://x/queues/jobs/nack", {
        method: "POST",
        body,
        headers: { authorization: `Bearer ${QTOKEN}`, ...headers },
        // @ts-ignore: a stream body needs duplex "half" (not in every runtime's RequestInit type)
        duplex: "half",
      }),
    );
  // 150 000 characters, 300 000 bytes in UTF-8: past 256 KiB in bytes, not in characters.
  const wide = JSON.stringify({ id: "a", receipt: "b", error: "é".repeat(150_000) });
  assert.ok(wide.length < 256 * 1024 && new TextEncoder().encode(wide).length > 256 * 1024);
  let r = await post(wide);
  assert.equal(r.status, 413);
  const body = await r.json();
  assert.match(JSON.stringify(body), /BodyTooLarge/);
  assert.match(JSON.stringify(body), /262144 bytes/);
  // A body without a length is read only until it passes the limit, then its stream is cancelled.
  let pulled = 0;
  let cancelled = false;
  const endless = new ReadableStream<Uint8Array>({
    pull(controller) {
      pulled++;
      if (pulled > 4_000) return controller.close(); // 256 MiB: a bound for the unfixed reader
      controller.enqueue(new Uint8Array(64 * 1024).fill(0x20));
    },
    cancel() {
      cancelled = true;
    },
  }, { highWaterMark: 0 });
  r = await post(endless);
  assert.equal(r.status, 413);
  await r.body?.cancel();
  assert.ok(pulled <= 6, `read ${pulled} chunks of 64 KiB past a 256 KiB limit`);
  assert.ok(cancelled, "the body's stream was cancelled");
  // Within the limit, a body is read and parsed as before (this receipt is not the queue's).
  r = await post(JSON.stringify({ id: "a", receipt: "b" }));
  assert.equal(r.status, 400);
  assert.match(await r.text(), /InvalidArgument/);
});

Deno.test("delivery review (F): tokens are compared as secrets (hashed, in full), not looked up", async () => {
  const handler = createDeliveryHandler({ feed: memoryFeed(createMemoryStore()), tokens });
  // A Map lookup's time depends on the presented string; the management handler's sameSecret
  // hashes it and compares every byte. Seen from outside: SHA-256 digests while authorizing.
  const subtle = crypto.subtle as { digest: SubtleCrypto["digest"] };
  const digest = subtle.digest;
  let digests = 0;
  subtle.digest = function (this: SubtleCrypto, ...args: Parameters<SubtleCrypto["digest"]>) {
    digests++;
    return digest.apply(this, args);
  } as SubtleCrypto["digest"];
  try {
    for (const token of [TOKEN, "reader-token-0123456780", "x".repeat(40)]) {
      const r = await handler(
        new Request("http://x/streams/Order?format=json", {
          headers: { authorization: `Bearer ${token}` },
        }),
      );
      assert.equal(r.status, token === TOKEN ? 200 : 401);
      await r.body?.cancel();
    }
  } finally {
    subtle.digest = digest;
  }
  assert.ok(digests >= 3, `${digests} digests for 3 authorizations`);
});

Deno.test("delivery review (I): refusals have the management handler's shape, with no class-name prefix", async () => {
  const store = createMemoryStore();
  await store.append("Order-1", [{ type: "Placed", data: {} }], 0);
  const handler = createDeliveryHandler({
    feed: memoryFeed(store),
    queues: memoryQueues(),
    tokens,
  });
  const call = async (path: string, init: RequestInit = {}) => {
    const r = await handler(new Request(`http://x${path}`, init));
    return { status: r.status, body: await r.json() };
  };
  const refusals = [
    await call("/streams/Order"),
    await call("/streams/Order?from=x", { headers: { authorization: `Bearer ${TOKEN}` } }),
    await call("/queues/jobs/nack", {
      method: "POST",
      headers: { authorization: `Bearer ${QTOKEN}` },
      body: JSON.stringify({ id: "a", receipt: "b" }),
    }),
    await call("/nowhere"),
  ];
  assert.deepEqual(refusals.map((r) => [r.status, r.body.error?.code]), [
    [401, "MissingToken"],
    [400, "BadPosition"],
    [400, "InvalidArgument"],
    [404, "NotFound"],
  ]);
  for (const { body } of refusals) {
    assert.deepEqual(Object.keys(body), ["error"]);
    assert.deepEqual(Object.keys(body.error), ["code", "message"]);
    assert.doesNotMatch(body.error.message, /Error: /, body.error.message);
  }
  // A read that fails mid-subscription ends it with the same shape, in the stream.
  const failing = createDeliveryHandler({
    feed: { ...memoryFeed(store), read: () => Promise.reject(new Error("the disk is gone")) },
    tokens,
  });
  const r = await failing(
    new Request("http://x/streams/Order", { headers: { authorization: `Bearer ${TOKEN}` } }),
  );
  const lines = (await r.text()).trim().split("\n").map((l) => JSON.parse(l));
  assert.deepEqual(lines.at(-1), {
    error: { code: "ReadFailed", message: "Error: the disk is gone" },
  });
  // The client's typed refusal carries the server's message once.
  const s = serve(handler);
  try {
    const events = subscribe(`${s.url}/streams/Order`, { token: "wrong-token-0123456789" });
    const error = await events.getReader().read().then(() => undefined, (e) => e);
    assert.ok(error instanceof SubscriptionRefusedError, String(error));
    assert.equal(error.code, "InvalidToken");
    assert.equal(error.message, "subscription refused (401 InvalidToken): the token is not known");
  } finally {
    await s.close();
  }
});

Deno.test("delivery review (D): catching up through a sparse category yields to the event loop between pages", async () => {
  const store = createMemoryStore();
  // 300 000 events of another category, then one of Order: 30 pages of the feed's scan.
  for (let i = 0; i < 300; i++) {
    await store.append(
      `Invoice-${i}`,
      Array.from({ length: 1_000 }, () => ({ type: "Raised", data: null })),
      "any",
    );
  }
  await store.append("Order-1", [{ type: "Placed", data: { n: 1 } }], 0);
  // Count the feed's reads per event-loop turn (a timer callback marks each new turn).
  let turn = 0;
  let ticking = true;
  const tick = () => {
    turn++;
    if (ticking) setTimeout(tick, 0);
  };
  setTimeout(tick, 0);
  const feed = memoryFeed(store);
  const readsPerTurn = new Map<number, number>();
  const handler = createDeliveryHandler({
    feed: {
      ...feed,
      read: (scope, from, max) => {
        readsPerTurn.set(turn, (readsPerTurn.get(turn) ?? 0) + 1);
        return feed.read(scope, from, max);
      },
    },
    tokens,
  });
  const r = await handler(
    new Request("http://x/streams/Order", { headers: { authorization: `Bearer ${TOKEN}` } }),
  );
  const reader = r.body!.getReader();
  let text = "";
  try {
    while (!text.includes('"Placed"')) {
      text += new TextDecoder().decode((await reader.read()).value);
    }
  } finally {
    ticking = false;
    await reader.cancel();
  }
  const most = Math.max(...readsPerTurn.values());
  const total = [...readsPerTurn.values()].reduce((a, b) => a + b, 0);
  assert.ok(total >= 30, `${total} reads`);
  assert.ok(most <= 2, `${most} of ${total} page reads in one event-loop turn`);
});

Deno.test("delivery review (E): past maxClients a subscription is refused with 503 and a reason; a closed one frees its slot", async () => {
  const store = createMemoryStore();
  await store.append("Order-1", [{ type: "Placed", data: {} }], 0);
  const handler = createDeliveryHandler({ feed: memoryFeed(store), tokens, maxClients: 2 });
  const open = (query = "") =>
    handler(
      new Request(`http://x/streams/Order${query}`, {
        headers: { authorization: `Bearer ${TOKEN}` },
      }),
    );
  const a = await open();
  const b = await open("?format=sse");
  assert.deepEqual([a.status, b.status], [200, 200]);
  const c = await open();
  assert.equal(c.status, 503);
  assert.equal(c.headers.get("retry-after"), "10");
  const body = await c.json();
  assert.equal(body.error.code, "TooManyClients");
  assert.match(body.error.message, /2 subscriptions are open \(maxClients 2\)/);
  // A JSON page is not a subscription: it is served meanwhile.
  const page = await open("?format=json");
  assert.equal(page.status, 200);
  await page.body?.cancel();
  await a.body!.cancel();
  const d = await open();
  assert.equal(d.status, 200);
  await Promise.all([b.body!.cancel(), d.body!.cancel()]);
  assert.throws(
    () => createDeliveryHandler({ tokens, maxClients: 0 }),
    (e: Error) => e instanceof InvalidArgumentError && e.message.includes("maxClients"),
  );
  assert.throws(
    () => createDeliveryHandler({ tokens, stallTimeoutMs: -1 }),
    (e: Error) => e instanceof InvalidArgumentError && e.message.includes("stallTimeoutMs"),
  );
});

Deno.test("delivery review (E): a client that reads nothing for stallTimeoutMs is dropped, with a log line naming it", async () => {
  const lines: string[] = [];
  await configure({
    reset: true,
    sinks: { mem: (r: LogRecord) => lines.push(r.message.map(String).join("")) },
    loggers: [
      { category: ["impel", "delivery"], lowestLevel: "warning", sinks: ["mem"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: [] },
    ],
  });
  const store = createMemoryStore();
  const body = "x".repeat(64 * 1024);
  // 400 events of 64 KiB: far more than the socket buffers between the server and the client.
  for (let i = 0; i < 400; i += 10) {
    await store.append(
      `Order-${i}`,
      Array.from({ length: 10 }, (_, k) => ({ type: "Big", data: { n: i + k, body } })),
      "any",
    );
  }
  const handler = createDeliveryHandler({
    feed: memoryFeed(store),
    tokens,
    pageSize: 10,
    stallTimeoutMs: 300,
  });
  const s = serve(handler);
  try {
    const response = await fetch(`${s.url}/streams/Order`, {
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    const reader = response.body!.getReader();
    assert.ok(((await reader.read()).value?.length ?? 0) > 0);
    // The client stops reading here.
    const deadline = Date.now() + 10_000;
    while (!lines.some((l) => l.includes("dropped")) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    const line = lines.find((l) => l.includes("dropped"));
    assert.ok(line, `no drop was logged: ${JSON.stringify(lines)}`);
    assert.match(line, /category Order/);
    assert.match(line, /read nothing for 300 ms/);
    // What the sockets held still arrives; then the connection ends, short of the 400 events.
    let text = "";
    let ended = false;
    const until = Date.now() + 10_000;
    while (Date.now() < until) {
      const next = await reader.read().catch(() => ({ done: true, value: undefined }));
      if (next.done) {
        ended = true;
        break;
      }
      text += new TextDecoder().decode(next.value);
    }
    assert.ok(ended, "the connection was not closed");
    const got = text.split("\n").filter((l) => l.includes('"Big"')).length;
    assert.ok(got < 400, `${got} events arrived`);
  } finally {
    await s.close();
    await reset();
  }
});

Deno.test("delivery review (G): subscribe() retries 408/425/429 (after Retry-After) and 5xx, and stops on other 4xx with a typed error", async () => {
  const store = createMemoryStore();
  await store.append("Order-1", [{ type: "Placed", data: { n: 1 } }], 0);
  const handler = createDeliveryHandler({ feed: memoryFeed(store), tokens });
  // A proxy in front: refuses for a while, as a rate limiter or an overloaded upstream does.
  const answers: Array<[number, Record<string, string>]> = [
    [429, { "retry-after": "1" }],
    [503, {}],
    [408, {}],
    [425, {}],
  ];
  let asked = 0;
  const s = serve(handler, (request) => {
    if (new URL(request.url).pathname === "/gone/streams/Order") {
      return new Response('{"error":{"code":"NotFound","message":"no such route"}}', {
        status: 404,
      });
    }
    const next = answers[asked++];
    if (next === undefined) return undefined;
    return new Response("slow down", { status: next[0], headers: next[1] });
  });
  try {
    const reasons: string[] = [];
    const started = Date.now();
    const events = subscribe(`${s.url}/streams/Order`, {
      token: TOKEN,
      retry: { initialDelayMs: 10, maxDelayMs: 20 },
      onReconnect: (reason) => reasons.push(String(reason)),
    });
    const reader = events.getReader();
    const first = await reader.read();
    await reader.cancel();
    assert.equal(first.value?.type, "Placed");
    assert.equal(reasons.length, 4, reasons.join("\n"));
    assert.match(reasons[0], /429/);
    assert.ok(Date.now() - started >= 950, `Retry-After: 1 waited ${Date.now() - started} ms`);
    const gone = subscribe(`${s.url}/gone/streams/Order`, { token: TOKEN });
    const error = await gone.getReader().read().then(() => undefined, (e) => e);
    assert.ok(error instanceof SubscriptionRefusedError, String(error));
    assert.deepEqual([error.status, error.code], [404, "NotFound"]);
  } finally {
    await s.close();
  }
});

Deno.test("delivery review (G): subscribe() bounds a line: past maxLineBytes without a newline it errors, typed", async () => {
  const handler = createDeliveryHandler({ feed: memoryFeed(createMemoryStore()), tokens });
  const s = serve(handler, () => {
    let sent = 0;
    // 8 MiB without a newline, then the end.
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent++ === 128) return controller.close();
        controller.enqueue(new Uint8Array(64 * 1024).fill(0x78));
      },
    });
    return new Response(body, { headers: { "content-type": "text/plain" } });
  });
  const stop = AbortSignal.timeout(5_000);
  try {
    const events = subscribe(`${s.url}/streams/Order`, {
      token: TOKEN,
      maxLineBytes: 1024 * 1024,
      signal: stop,
    });
    const error = await events.getReader().read().then(() => undefined, (e) => e);
    assert.ok(error instanceof SubscriptionLineTooLongError, String(error));
    assert.equal(error.code, "SubscriptionLineTooLong");
    assert.match(error.message, /1048576 bytes/);
    assert.throws(
      () => subscribe(`${s.url}/streams/Order`, { maxLineBytes: 0 }),
      (e: Error) => e instanceof InvalidArgumentError && e.message.includes("maxLineBytes"),
    );
  } finally {
    await s.close();
  }
});

Deno.test("delivery review (H): remoteSource checks pageSize, and keys checkpoints by host and path", async () => {
  for (const pageSize of [0, 10_001, 1.5, "10"]) {
    assert.throws(
      () => remoteSource({ url: "http://127.0.0.1:1/streams/Order", pageSize: pageSize as number }),
      (e: Error) => e instanceof InvalidArgumentError && /pageSize/.test(e.message),
      String(pageSize),
    );
  }
  // Two remotes serving a category of the same name, mirrored with one checkpoint store.
  const stores = [createMemoryStore(), createMemoryStore()];
  for (const [k, store] of stores.entries()) {
    for (let i = 0; i < 3 + 2 * k; i++) {
      await store.append(`Order-${i}`, [{ type: "Placed", data: { k, i } }], 0);
    }
  }
  const servers = stores.map((store) =>
    serve(createDeliveryHandler({ feed: memoryFeed(store), tokens }))
  );
  try {
    const checkpoints = memoryCheckpoints();
    const mirror = async (url: string) => {
      const handled: string[] = [];
      const sink = streamsSink({
        handler: (stream, events) =>
          void events.forEach((e) => handled.push(`${stream}@${e.index}`)),
        statsIntervalMs: 0,
      });
      const ac = new AbortController();
      const source = remoteSource({
        url,
        token: TOKEN,
        checkpoints,
        group: "mirror",
        tailSleepMs: 20,
        signal: ac.signal,
      });
      const running = run(source, sink, { signal: ac.signal });
      await sink.monitor.awaitCompletion({ tail: true });
      ac.abort();
      await running;
      return handled.length;
    };
    assert.equal(await mirror(`${servers[0].url}/streams/Order`), 3);
    // The other host's Order: its own checkpoint, from its start (not from the first's 3).
    assert.equal(await mirror(`${servers[1].url}/streams/Order`), 5);
    const host = (s: { url: string }) => new URL(s.url).host;
    assert.deepEqual(
      (await checkpoints.list("remote", "mirror")).map((c) => [c.tranche, c.position]).sort(),
      [[`${host(servers[0])}/streams/Order`, 3n], [`${host(servers[1])}/streams/Order`, 5n]].sort(),
    );
    // The same remote written differently (escapes, a dot segment) is the same checkpoint.
    const port = new URL(servers[0].url).port;
    assert.equal(await mirror(`http://127.0.0.1:${port}/x/../streams/%4Frder`), 0);
  } finally {
    await Promise.all(servers.map((s) => s.close()));
  }
});
