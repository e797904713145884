// Review of issue 19 (E, second round): stallTimeoutMs measured the time between pages the server
// took, so a client reading slowly but steadily was dropped once one page (pageSize large events)
// took longer than stallTimeoutMs to drain — reproduced over loopback: a client taking 64 KiB
// every 50 ms was cut at 1 000 of 1 500 events (pages of 10 MB, stallTimeoutMs 3 000) under Deno,
// at 349 under Bun. A page now goes out in pieces of at most 64 KiB, one per pull, so the timer
// measures the time between pieces; each piece ends with a whole event, so a drop's error frame
// never lands inside one (an SSE event split between `id:` and `data:` would lose it).
import assert from "node:assert/strict";
import { createMemoryStore } from "../../sources/memory.ts";
import { createDeliveryHandler, memoryFeed } from "../../delivery/server.ts";

const TOKEN = "reader-token-0123456789";

Deno.test("delivery: a page goes out in pieces of at most 64 KiB, so a steady slow reader outlasts stallTimeoutMs", async () => {
  const store = createMemoryStore();
  const body = "é".repeat(10 * 1024); // 20 KiB in UTF-8
  for (let i = 0; i < 40; i += 10) {
    await store.append(
      `Order-${i}`,
      Array.from({ length: 10 }, (_, k) => ({ type: "Big", data: { n: i + k, body } })),
      "any",
    );
  }
  // One page of 40 events (~820 KB): 13 pieces taken 50 ms apart take ~650 ms, past the 200 ms
  // stall bound; each piece is taken well within it.
  const handler = createDeliveryHandler({
    feed: memoryFeed(store),
    tokens: { [TOKEN]: ["read:Order"] },
    pageSize: 40,
    stallTimeoutMs: 200,
  });
  const response = await handler(
    new Request("http://x/streams/Order?format=ndjson", {
      headers: { authorization: `Bearer ${TOKEN}` },
    }),
  );
  const reader = response.body!.getReader();
  const chunks: Uint8Array[] = [];
  let largest = 0;
  let events = 0;
  let bytes = 0;
  const decoder = new TextDecoder();
  let text = "";
  let torn = 0;
  while (events < 40) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    largest = Math.max(largest, value.length);
    if (value.at(-1) !== 10) torn++; // a piece ends with a whole event
    bytes += value.length;
    text += decoder.decode(value, { stream: true });
    events = text.split("\n").filter((l) => l.includes('"Big"')).length;
    await new Promise((r) => setTimeout(r, 50));
  }
  await reader.cancel();
  assert.ok(largest <= 64 * 1024, `a chunk of ${largest} bytes was handed over at once`);
  assert.ok(chunks.length >= 13, `${chunks.length} chunks for ${bytes} bytes`);
  assert.equal(torn, 0, "a piece ended inside an event: a drop's error frame would land there");
  assert.equal(events, 40);
  assert.doesNotMatch(text, /ClientTooSlow/);
  const ns = text.split("\n").filter((l) => l.includes('"Big"')).map((l) => JSON.parse(l).data.n);
  assert.deepEqual(ns, Array.from({ length: 40 }, (_, i) => i));
});

Deno.test("delivery: SSE pieces end between events, so a drop's error frame is an event of its own", async () => {
  const store = createMemoryStore();
  const body = "x".repeat(7_000);
  await store.append(
    "Order-1",
    Array.from({ length: 40 }, (_, n) => ({ type: "Big", data: { n, body } })),
    "any",
  );
  const handler = createDeliveryHandler({
    feed: memoryFeed(store),
    tokens: { [TOKEN]: ["read:Order"] },
    pageSize: 40,
    stallTimeoutMs: 200,
  });
  const response = await handler(
    new Request("http://x/streams/Order?format=sse", {
      headers: { authorization: `Bearer ${TOKEN}` },
    }),
  );
  const reader = response.body!.getReader();
  const decoder = new TextDecoder();
  const first = decoder.decode((await reader.read()).value);
  const second = decoder.decode((await reader.read()).value);
  assert.match(first, /^retry: /);
  assert.ok(second.endsWith("\n\n") && second.length <= 64 * 1024, `${second.length} chars`);
  // Stop reading past stallTimeoutMs: the reason comes next, as an SSE event of its own.
  await new Promise((r) => setTimeout(r, 400));
  let text = "";
  for (;;) {
    const next = await reader.read().catch(() => ({ done: true, value: undefined }));
    if (next.done) break;
    text += decoder.decode(next.value);
  }
  const events = (second + text).split("\n\n").filter((e) => e !== "");
  const last = events.at(-1)!;
  assert.match(last, /^event: error\ndata: \{"error":\{"code":"ClientTooSlow"/);
  for (const e of events.slice(0, -1)) assert.match(e, /^id: \d+\ndata: \{"position"/);
});
