// A reactor over a MessageDB category with PostgreSQL checkpoints, /metrics and /health, that
// stops cleanly on Ctrl-C or `kill`. The same file runs under Deno and Bun:
//   deno run -A examples/messagedb_reactor.ts     bun run examples/messagedb_reactor.ts
// It needs a database set up by `impel init messagedb --url $IMPEL_PG_URL`. (The README shows
// this file with the package's import names; tests/examples/messagedb_reactor.test.ts runs it.)
import pg from "pg";
import { pipeline, stopOnSignals } from "../mod.ts";
import { postgresCheckpoints } from "../checkpoints/postgres.ts";
import { messageDbSource } from "../sources/messagedb.ts";
import { createMetrics } from "../observability/metrics.ts";
import { createHttpHandler } from "../observability/http.ts";

const url = process.env.IMPEL_PG_URL;
if (!url) throw new Error("set IMPEL_PG_URL to the database, e.g. postgres://user@host:5432/app");
const pool = new pg.Pool({ connectionString: url, options: "-c search_path=message_store,public" });
const checkpoints = postgresCheckpoints(pool);
const metrics = createMetrics();

// The name is the consumer group everywhere: checkpoints, parked streams, logs, metrics, health.
const printer = pipeline({
  name: "order-printer",
  source: ({ group }) =>
    messageDbSource({ client: pool, categories: ["Order"], group, checkpoints }),
  checkpoints,
  metrics,
  handler: (stream, events) => {
    for (const e of events) console.log(`${stream} #${e.index} ${e.type}`);
  },
});

const handler = createHttpHandler({ metrics, token: process.env.IMPEL_ADMIN_TOKEN });
const port = Number(process.env.PORT ?? 9464);
type Serve = (o: { hostname: string; port: number; fetch: typeof handler }) => { stop(): void };
const bun = (globalThis as { Bun?: { serve: Serve } }).Bun;
const server = bun
  ? bun.serve({ hostname: "127.0.0.1", port, fetch: handler })
  : Deno.serve({ hostname: "127.0.0.1", port, onListen() {} }, handler);

console.log(`reactor ${printer.name} running; metrics and health on http://127.0.0.1:${port}`);
await printer.run({ signal: stopOnSignals().signal });
await ("shutdown" in server ? server.shutdown() : server.stop());
await pool.end();
console.log("stopped, checkpoints committed");
