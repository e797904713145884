// Review of issue 19: subscribe() kept a cut multi-byte character's first bytes in its decoder
// across a reconnection, so the next connection's first line began with U+FFFD: a SyntaxError
// and one more reconnection than the cut called for.
import assert from "node:assert/strict";
import { subscribe } from "../../delivery/client.ts";

const line = (p: number, s: string) =>
  JSON.stringify({
    position: String(p),
    stream: "Order-1",
    index: p,
    type: "T",
    id: String(p),
    time: new Date(0).toISOString(),
    data: { s },
    meta: null,
  }) + "\n";

Deno.test("delivery subscribe(): a connection cut inside a character reconnects once, cleanly", async () => {
  const encoder = new TextEncoder();
  const headers = { "content-type": "application/x-ndjson" };
  let calls = 0;
  const cutting = (() => {
    calls++;
    if (calls > 1) return Promise.resolve(new Response(line(1, "é") + line(2, "b"), { headers }));
    const full = encoder.encode(line(0, "a") + line(1, "é"));
    const cut = full.lastIndexOf(0xc3) + 1; // after the first byte of event 1's "é"
    let sent = false;
    return Promise.resolve(
      new Response(
        new ReadableStream<Uint8Array>({
          pull(controller) {
            if (sent) return controller.error(new Error("forced disconnect"));
            sent = true;
            controller.enqueue(full.slice(0, cut));
          },
        }),
        { headers },
      ),
    );
  }) as typeof fetch;
  const reasons: string[] = [];
  const got: Array<[string, unknown]> = [];
  for await (
    const e of subscribe("http://remote/streams/Order", {
      fetch: cutting,
      retry: { initialDelayMs: 1 },
      onReconnect: (reason) => reasons.push(String(reason)),
    })
  ) {
    got.push([e.position, (e.data as { s: string }).s]);
    if (got.length === 3) break;
  }
  assert.deepEqual(got, [["0", "a"], ["1", "é"], ["2", "b"]]);
  assert.deepEqual(reasons, ["Error: forced disconnect"]);
});
