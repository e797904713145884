// Review of issue 19 (G, remote side): remoteSource failed the source on a 429 from a proxy
// (every 4xx was a refusal) where subscribe() retries it; 408/425/429 now retry with the backoff.
import assert from "node:assert/strict";
import { createMemoryStore } from "../../sources/memory.ts";
import { createDeliveryHandler, memoryFeed } from "../../delivery/server.ts";
import { remoteSource } from "../../delivery/remote.ts";
import { SubscriptionRefusedError } from "../../delivery/client.ts";
import { run, streamsSink } from "../../mod.ts";

const TOKEN = "reader-token-0123456789";

/** A delivery handler over a store holding one event of `Order-1`, readable with TOKEN. */
async function serving() {
  const store = createMemoryStore();
  await store.append("Order-1", [{ type: "Placed", data: {} }], "any");
  return createDeliveryHandler({ feed: memoryFeed(store), tokens: { [TOKEN]: ["read:Order"] } });
}

Deno.test("delivery remoteSource: 429 is retried, 401 fails the source", async () => {
  const handler = await serving();
  let calls = 0;
  const limited = ((input: RequestInfo | URL, init?: RequestInit) => {
    calls++;
    if (calls === 1) {
      return Promise.resolve(
        new Response("slow down", { status: 429, headers: { "retry-after": "1" } }),
      );
    }
    return handler(new Request(input, init));
  }) as typeof fetch;
  const ac = new AbortController();
  const handled: string[] = [];
  const timer = setTimeout(() => ac.abort(), 5_000);
  await run(
    remoteSource({
      url: "http://remote:1/streams/Order",
      token: TOKEN,
      fetch: limited,
      signal: ac.signal,
      retry: { initialDelayMs: 10 },
    }),
    streamsSink({
      handler: (stream) => {
        handled.push(stream);
        ac.abort();
      },
    }),
  );
  clearTimeout(timer);
  assert.deepEqual(handled, ["Order-1"]);
  assert.ok(calls >= 2);

  const refused = remoteSource({
    url: "http://remote:1/streams/Order",
    token: "wrong-token-0123456789",
    fetch: ((input: RequestInfo | URL, init?: RequestInit) =>
      handler(new Request(input, init))) as typeof fetch,
  });
  await assert.rejects(
    run(refused, streamsSink({ handler: () => {} })),
    (error: unknown) => {
      const text = String(error) + String((error as { cause?: unknown }).cause ?? "");
      return error instanceof SubscriptionRefusedError || /InvalidToken|401/.test(text);
    },
  );
});

// remoteSource read no Retry-After: a 429 or 503 asking for a second was retried after the
// backoff's 10 ms. It now waits at least what the server asked, as subscribe() does.
Deno.test("delivery remoteSource: a Retry-After is waited for before the next read", async () => {
  const handler = await serving();
  for (const status of [429, 503]) {
    const at: number[] = [];
    const limited = ((input: RequestInfo | URL, init?: RequestInit) => {
      at.push(performance.now());
      if (at.length === 1) {
        return Promise.resolve(
          new Response("later", { status, headers: { "retry-after": "1" } }),
        );
      }
      return handler(new Request(input, init));
    }) as typeof fetch;
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(), 10_000);
    const handled: string[] = [];
    await run(
      remoteSource({
        url: "http://remote:1/streams/Order",
        token: TOKEN,
        fetch: limited,
        signal: ac.signal,
        retry: { initialDelayMs: 10, maxDelayMs: 20 },
      }),
      streamsSink({
        handler: (stream) => {
          handled.push(stream);
          ac.abort();
        },
      }),
    );
    clearTimeout(timer);
    assert.deepEqual(handled, ["Order-1"], `status ${status}`);
    // The timer may fire a little early on some runtimes; the backoff alone would be 10–20 ms.
    assert.ok(at[1] - at[0] >= 950, `status ${status}: retried after ${at[1] - at[0]} ms`);
  }
});
