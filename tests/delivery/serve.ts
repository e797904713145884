// A loopback server for the delivery tests whose open subscriptions can be cut from the server
// side (a forced disconnect: the client sees the connection break mid-body).
import type { DeliveryHandler } from "../../delivery/server.ts";

/**
 * Serves `handler` on a free loopback port; `cut()` breaks every open response body; `extra` answers
 * other routes first (a page for the browser).
 */
export function serve(
  handler: DeliveryHandler,
  extra?: (request: Request) => Response | undefined,
) {
  const open = new Set<AbortController>();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    async (request) => {
      const response = extra?.(request) ?? await handler(request);
      const type = response.headers.get("content-type") ?? "";
      if (response.body === null || !(type.includes("ndjson") || type.includes("event-stream"))) {
        return response;
      }
      const ac = new AbortController();
      open.add(ac);
      const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>();
      response.body.pipeTo(writable, { signal: ac.signal }).catch(() => {}).finally(() =>
        open.delete(ac)
      );
      return new Response(readable, { headers: response.headers });
    },
  );
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    cut: () => [...open].forEach((ac) => ac.abort(new Error("forced disconnect"))),
    get open() {
      return open.size;
    },
    close: async () => {
      [...open].forEach((ac) => ac.abort());
      await server.shutdown();
    },
  };
}
