// A delivery server in its own process over MessageDB, for measuring its RSS. Prints its port.
// Arguments: pgUrl category token.
// @ts-types="@types/pg"
import pg from "pg";
import { createDeliveryHandler, messageDbFeed } from "../../delivery/server.ts";

const runtime = globalThis as unknown as {
  Deno?: {
    args: string[];
    serve(o: unknown, h: unknown): { addr: { port: number } };
  };
  Bun?: { serve(o: unknown): { port: number } };
  process?: { argv: string[] };
};
const [url, category, token] = runtime.Deno?.args ?? runtime.process!.argv.slice(2);
const pool = new pg.Pool({ connectionString: url, max: 4 });
const handler = createDeliveryHandler({
  feed: messageDbFeed(pool, { pollMs: 50 }),
  tokens: { [token]: [`read:${category}`] },
  // The RSS test's stalled client reads again once the appends are done (tens of seconds under
  // load): it must be paused meanwhile, not dropped.
  stallTimeoutMs: 600_000,
});
const port = runtime.Deno
  ? runtime.Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, handler).addr.port
  : runtime.Bun!.serve({ hostname: "127.0.0.1", port: 0, idleTimeout: 255, fetch: handler }).port;
console.log(port);
