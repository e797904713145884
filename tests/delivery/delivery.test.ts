// The delivery handler against the memory store and queues, and against MessageDB: refusals,
// pages, NDJSON and SSE subscriptions, type filters, resuming, the client across a forced
// disconnect, and a remote stream feeding a local streamsSink with checkpoints.
import assert from "node:assert/strict";
import { run, streamsSink } from "../../mod.ts";
import { memoryCheckpoints } from "../../checkpoints/memory.ts";
import { createMemoryStore } from "../../sources/memory.ts";
import { memoryQueues } from "../../queues/memory.ts";
import { createDeliveryHandler, memoryFeed, messageDbFeed } from "../../delivery/server.ts";
import { subscribe, SubscriptionRefusedError } from "../../delivery/client.ts";
import { remoteSource } from "../../delivery/remote.ts";
import { poolFixture, unique } from "../support/postgres.ts";
import { serve } from "./serve.ts";
import { messageDbStore } from "../../stores/messagedb.ts";

const TOKEN = "reader-token-0123456789";
const OTHER = "invoice-token-012345678";
const QTOKEN = "queue-token-0123456789";
const tokens = { [TOKEN]: ["read:Order"], [OTHER]: ["read:Invoice"], [QTOKEN]: ["consume:jobs"] };
const auth = { authorization: `Bearer ${TOKEN}` };

async function seeded(n: number) {
  const store = createMemoryStore();
  for (let i = 0; i < n; i++) {
    await store.append(
      `Order-${i % 3}`,
      [{ type: i % 2 ? "Paid" : "Placed", data: { n: i } }],
      "any",
    );
    await store.append("Invoice-1", [{ type: "Raised", data: { n: i } }], "any");
  }
  return store;
}

Deno.test("delivery: no token, unknown token, wrong scope and bad positions are refused with a reason", async () => {
  const store = await seeded(3);
  const handler = createDeliveryHandler({ feed: memoryFeed(store), tokens });
  const call = async (path: string, headers: Record<string, string> = auth) => {
    const response = await handler(new Request(`http://x${path}`, { headers }));
    return { status: response.status, body: await response.json() };
  };
  let r = await call("/streams/Order", {});
  assert.deepEqual([r.status, r.body.error.code], [401, "MissingToken"]);
  assert.ok(r.body.error.message.includes("Bearer"));
  r = await call("/streams/Order", { authorization: "Bearer not-a-token-at-all" });
  assert.deepEqual([r.status, r.body.error.code], [401, "InvalidToken"]);
  r = await call("/streams/Order", { authorization: "Basic abc" });
  assert.deepEqual([r.status, r.body.error.code], [401, "BadToken"]);
  r = await call("/streams/Invoice-1");
  assert.deepEqual([r.status, r.body.error.code], [403, "NotInScope"]);
  assert.ok(r.body.error.message.includes("read:Invoice"));
  r = await call("/streams/Order?from=-1");
  assert.deepEqual([r.status, r.body.error.code], [400, "BadPosition"]);
  r = await call("/streams/Order?from=abc");
  assert.deepEqual([r.status, r.body.error.code], [400, "BadPosition"]);
  r = await call("/streams/Order?from=7");
  assert.deepEqual([r.status, r.body.error.code], [400, "PositionPastHead"]);
  assert.ok(r.body.error.message.includes("(6)"), r.body.error.message);
  r = await call("/streams/Order", { ...auth, "last-event-id": "x1" });
  assert.deepEqual([r.status, r.body.error.code], [400, "BadPosition"]);
  assert.ok(r.body.error.message.includes("Last-Event-ID"));
  r = await call("/streams/Order?format=xml");
  assert.deepEqual([r.status, r.body.error.code], [400, "BadFormat"]);
  r = await call(`/streams/Order?token=${TOKEN}&format=json`, {});
  assert.deepEqual(r.status, 200);
  assert.deepEqual(r.body.events.length, 3);
  // The client surfaces a refusal as a typed error, without retrying.
  const s = serve(handler);
  try {
    const events = subscribe(`${s.url}/streams/Order`, { token: "wrong-token-0123456789" });
    const error = await events.getReader().read().then(() => undefined, (e) => e);
    assert.ok(error instanceof SubscriptionRefusedError, String(error));
    assert.deepEqual(error.status, 401);
    assert.deepEqual(error.code, "InvalidToken");
  } finally {
    await s.close();
  }
});

Deno.test("delivery: bad handler options are refused naming the option", () => {
  let error: unknown;
  try {
    createDeliveryHandler({ tokens: { short: ["read:Order"] } });
  } catch (e) {
    error = e;
  }
  assert.ok(String(error).includes("at least 16"));
  try {
    createDeliveryHandler({ tokens: { [TOKEN]: ["write:Order"] } });
  } catch (e) {
    error = e;
  }
  assert.ok(String(error).includes("read:<category>"));
});

Deno.test("delivery: a JSON page, type filters, streams and from=now", async () => {
  const store = await seeded(6);
  const handler = createDeliveryHandler({ feed: memoryFeed(store), tokens });
  const page = async (path: string) =>
    await (await handler(new Request(`http://x${path}`, { headers: auth }))).json();
  const all = await page("/streams/Order?format=json");
  assert.deepEqual(all.events.map((e: { data: { n: number } }) => e.data.n), [0, 1, 2, 3, 4, 5]);
  assert.deepEqual(all.events.map((e: { position: string }) => e.position), [
    "0",
    "2",
    "4",
    "6",
    "8",
    "10",
  ]);
  assert.deepEqual([all.next, all.tail], ["12", true]);
  const paid = await page("/streams/Order?format=json&types=Paid&limit=5");
  assert.deepEqual(paid.events.map((e: { data: { n: number } }) => e.data.n), [1, 3]);
  assert.deepEqual(paid.tail, false);
  const one = await page("/streams/Order-1?format=json&from=1");
  assert.deepEqual(
    one.events.map((e: { index: number; data: { n: number } }) => [e.index, e.data.n]),
    [
      [1, 4],
    ],
  );
  const now = await page("/streams/Order?format=json&from=now");
  assert.deepEqual([now.events.length, now.next], [0, "12"]);
});

Deno.test("delivery: NDJSON and SSE subscriptions follow appends, resume after Last-Event-ID, send heartbeats", async () => {
  const store = await seeded(2);
  const handler = createDeliveryHandler({ feed: memoryFeed(store), tokens, heartbeatMs: 50 });
  const ac = new AbortController();
  const response = await handler(
    new Request("http://x/streams/Order?format=sse", {
      headers: { ...auth, "last-event-id": "0" },
      signal: ac.signal,
    }),
  );
  assert.deepEqual(response.headers.get("content-type"), "text/event-stream; charset=utf-8");
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  const until = async (needle: string) => {
    while (!text.includes(needle)) text += (await reader.read()).value;
  };
  await until('"n":1');
  assert.ok(text.startsWith("retry: 1000\nid: 0\n\n"));
  assert.ok(!text.includes('"n":0'), "resumed after Last-Event-ID 0");
  assert.ok(text.includes("id: 2\ndata: {"));
  await until(": heartbeat");
  await store.append("Order-9", [{ type: "Placed", data: { n: 99 } }], "any");
  await until('"n":99');
  ac.abort();
  await reader.cancel();

  const nd = await handler(
    new Request("http://x/streams/Order?from=now&types=Paid", { headers: auth }),
  );
  assert.deepEqual(nd.headers.get("content-type"), "application/x-ndjson; charset=utf-8");
  const lines = nd.body!.pipeThrough(new TextDecoderStream()).getReader();
  const first = JSON.parse((await lines.read()).value!);
  assert.deepEqual(first.next, "5");
  await store.append("Order-9", [{ type: "Placed", data: { n: 100 } }, {
    type: "Paid",
    data: { n: 101 },
  }], "any");
  let got = "";
  while (!got.includes("\n")) got += (await lines.read()).value;
  assert.deepEqual(JSON.parse(got.split("\n")[0]).data.n, 101);
  await lines.cancel();
});

Deno.test("delivery: subscribe() gets every event once and in order across forced disconnects", async () => {
  const store = createMemoryStore();
  const s = serve(createDeliveryHandler({ feed: memoryFeed(store), tokens, pageSize: 50 }));
  try {
    const reconnects: unknown[] = [];
    const events = subscribe(`${s.url}/streams/Order`, {
      token: TOKEN,
      retry: { initialDelayMs: 10 },
      onReconnect: (reason) => reconnects.push(reason),
    });
    const seen: number[] = [];
    const reading = (async () => {
      for await (const e of events) {
        seen.push((e.data as { n: number }).n);
        if (seen.length === 1_000) break;
      }
    })();
    for (let i = 0; i < 1_000; i++) {
      await store.append(`Order-${i % 7}`, [{ type: "Placed", data: { n: i } }], "any");
      if (i % 250 === 100) {
        // A cut between the client's connections would break nothing.
        while (s.open === 0) await new Promise((r) => setTimeout(r, 5));
        await new Promise((r) => setTimeout(r, 20));
        s.cut();
      }
    }
    await reading;
    assert.deepEqual(seen, Array.from({ length: 1_000 }, (_, i) => i));
    assert.ok(reconnects.length >= 4, `reconnected ${reconnects.length} times after 4 cuts`);
  } finally {
    await s.close();
  }
});

Deno.test("delivery: a remote stream feeds a local streamsSink, with checkpoints, resuming after a restart", async () => {
  const store = await seeded(30);
  const s = serve(createDeliveryHandler({ feed: memoryFeed(store), tokens }));
  try {
    const checkpoints = memoryCheckpoints();
    const handled: string[] = [];
    const once = async (expected: number) => {
      const sink = streamsSink({
        handler: (stream, events) =>
          void events.forEach((e) => handled.push(`${stream}@${e.index}`)),
        statsIntervalMs: 0,
      });
      const ac = new AbortController();
      const source = remoteSource({
        url: `${s.url}/streams/Order`,
        token: TOKEN,
        checkpoints,
        group: "mirror",
        pageSize: 7,
        tailSleepMs: 20,
        signal: ac.signal,
      });
      const running = run(source, sink, { signal: ac.signal });
      await sink.monitor.awaitCompletion({ tail: true });
      ac.abort();
      await running;
      assert.deepEqual(handled.length, expected);
    };
    await once(30);
    const key = {
      source: "remote",
      tranche: `${new URL(s.url).host}/streams/Order`,
      group: "mirror",
    };
    assert.deepEqual(await checkpoints.load(key), 60n);
    for (let i = 30; i < 35; i++) {
      await store.append(`Order-${i % 3}`, [{ type: "Placed", data: { n: i } }], "any");
    }
    await once(35);
    assert.deepEqual(new Set(handled).size, 35, "no event handled twice");
  } finally {
    await s.close();
  }
});

Deno.test("delivery: queue subscriptions receive with a visibility timeout, ack and nack by id", async () => {
  const queues = memoryQueues({ maxDeliveries: 5 });
  await queues.enqueue("jobs", [{ job: 1 }, { job: 2 }, { job: 3 }]);
  const handler = createDeliveryHandler({ queues, tokens });
  const post = async (path: string, body: unknown, token = QTOKEN) => {
    const response = await handler(
      new Request(`http://x${path}`, {
        method: "POST",
        headers: { authorization: `Bearer ${token}` },
        body: JSON.stringify(body),
      }),
    );
    return { status: response.status, body: await response.json() };
  };
  assert.deepEqual((await post("/queues/jobs/receive", {}, TOKEN)).status, 403);
  assert.deepEqual((await post("/queues/other/receive", {})).body.error.code, "NotInScope");
  const got = await post("/queues/jobs/receive", { max: 2, visibilityTimeoutMs: 100 });
  assert.deepEqual(got.body.messages.map((m: { body: { job: number } }) => m.body.job), [1, 2]);
  const [a, b] = got.body.messages;
  assert.deepEqual(
    (await post("/queues/jobs/ack", { messages: [{ id: a.id, receipt: a.receipt }] })).body.acked,
    [true],
  );
  assert.deepEqual(
    (await post("/queues/jobs/nack", { id: b.id, receipt: b.receipt, error: "try later" })).body
      .nacked,
    true,
  );
  const again = await post("/queues/jobs/receive", { max: 5, visibilityTimeoutMs: 50 });
  const redelivered = again.body.messages.find((m: { id: string }) => m.id === b.id);
  assert.deepEqual(again.body.messages.map((m: { body: { job: number } }) => m.body.job).sort(), [
    2,
    3,
  ]);
  assert.deepEqual([redelivered.lastError, redelivered.deliveries], ["try later", 2]);
  // Past its visibility the message is someone else's: the old receipt no longer acks it.
  await new Promise((r) => setTimeout(r, 80));
  const third = await post("/queues/jobs/receive", { max: 5, visibilityTimeoutMs: 10_000 });
  assert.deepEqual(third.body.messages.length, 2);
  const stale = redelivered;
  assert.deepEqual(
    (await post("/queues/jobs/ack", { messages: [{ id: stale.id, receipt: stale.receipt }] })).body
      .acked,
    [false],
  );
  const bad = await post("/queues/jobs/ack", { messages: [{ id: 1 }] });
  assert.deepEqual([bad.status, bad.body.error.code], [400, "BadDelivery"]);
  const badVisibility = await post("/queues/jobs/receive", { visibilityTimeoutMs: -1 });
  assert.deepEqual([badVisibility.status, badVisibility.body.error.code], [400, "InvalidArgument"]);
  // Long polling: an enqueue during the wait is received.
  const waiting = post("/queues/jobs/receive", { waitMs: 5_000, visibilityTimeoutMs: 1_000 });
  await queues.enqueue("jobs", [{ job: 4 }]);
  assert.deepEqual((await waiting).body.messages[0].body, { job: 4 });
});

Deno.test("delivery: MessageDB category and stream feeds", async () => {
  await poolFixture({ max: 4 })(async (pool) => {
    const category = unique("Dlv");
    const store = messageDbStore(pool);
    for (let i = 0; i < 20; i++) {
      await store.append(
        `${category}-${i % 4}`,
        [{ type: i % 2 ? "B" : "A", data: { n: i } }],
        "any",
      );
    }
    const handler = createDeliveryHandler({
      feed: messageDbFeed(pool, { pollMs: 20 }),
      tokens: { [TOKEN]: [`read:${category}`] },
    });
    const page = async (path: string) =>
      await (await handler(new Request(`http://x${path}`, { headers: auth }))).json();
    const all = await page(`/streams/${category}?format=json&limit=100`);
    assert.deepEqual(
      all.events.map((e: { data: { n: number } }) => e.data.n),
      Array.from({ length: 20 }, (_, i) => i),
    );
    const from = BigInt(all.events[10].position);
    const rest = await page(`/streams/${category}?format=json&from=${from}&types=B`);
    assert.deepEqual(rest.events.map((e: { data: { n: number } }) => e.data.n), [
      11,
      13,
      15,
      17,
      19,
    ]);
    const one = await page(`/streams/${category}-2?format=json&from=2`);
    assert.deepEqual(one.events.map((e: { data: { n: number } }) => e.data.n), [10, 14, 18]);
    const s = serve(handler);
    try {
      const events = subscribe(`${s.url}/streams/${category}`, {
        token: TOKEN,
        lastEventId: String(from),
      });
      const seen: number[] = [];
      const reading = (async () => {
        for await (const e of events) {
          seen.push((e.data as { n: number }).n);
          if (seen.length === 12) break;
        }
      })();
      await store.append(`${category}-0`, [{ type: "A", data: { n: 20 } }, {
        type: "A",
        data: { n: 21 },
      }], "any");
      await store.append(`${category}-1`, [{ type: "A", data: { n: 22 } }], "any");
      await reading;
      assert.deepEqual(seen, Array.from({ length: 12 }, (_, i) => i + 11));
    } finally {
      await s.close();
    }
  });
});

Deno.test("delivery: an SSE stream from now names where it starts, so a reconnect before any event loses nothing", async () => {
  const store = await seeded(2);
  const handler = createDeliveryHandler({ feed: memoryFeed(store), tokens, heartbeatMs: 50 });
  const open = async (url: string, headers: Record<string, string> = {}) => {
    const response = await handler(new Request(url, { headers: { ...auth, ...headers } }));
    return response.body!.pipeThrough(new TextDecoderStream()).getReader();
  };
  const first = await open("http://x/streams/Order?format=sse&from=now");
  const opening = (await first.read()).value!;
  const id = /^retry: \d+\nid: (-?\d+)\n\n/.exec(opening)?.[1];
  assert.equal(id, "3", opening); // the head is 4: the stream starts after position 3
  await first.cancel();
  // Appended while the browser is disconnected; it reconnects with the id it was given.
  await store.append("Order-7", [{ type: "Placed", data: { n: 77 } }], "any");
  const again = await open("http://x/streams/Order?format=sse&from=now", { "last-event-id": id! });
  let text = "";
  while (!text.includes('"n":77')) text += (await again.read()).value;
  await again.cancel();

  const empty = createDeliveryHandler({ feed: memoryFeed(createMemoryStore()), tokens });
  const response = await empty(
    new Request("http://x/streams/Order?format=sse&from=now", {
      headers: { ...auth, "last-event-id": "-1" },
    }),
  );
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  assert.ok((await reader.read()).value!.includes("id: -1\n"));
  await reader.cancel();
});

Deno.test("delivery: a path that is not valid percent-encoding is a 400 naming it", async () => {
  const handler = createDeliveryHandler({ feed: memoryFeed(createMemoryStore()), tokens });
  const response = await handler(new Request("http://x/streams/%E0%A4%A", { headers: auth }));
  assert.equal(response.status, 400);
  assert.equal((await response.json()).error.code, "BadPath");
});
