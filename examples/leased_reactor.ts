// A MessageDB reactor that shares its category with every other copy of itself through leases:
// start as many as you like, under Deno or Bun, and they split the category's slots between them;
// Ctrl-C or `kill` stops one cleanly, the others taking its slots within a heartbeat.
//   deno run -A examples/leased_reactor.ts     bun run examples/leased_reactor.ts
// It needs a database set up by `impel init messagedb --url $IMPEL_PG_URL`. (The README shows
// this file with the package's import names; tests/examples/leased_reactor.test.ts runs two.)
import pg from "pg";
import { pipeline, stopOnSignals } from "../mod.ts";
import { postgresCheckpoints } from "../checkpoints/postgres.ts";
import { initPostgresLeases, postgresLeases } from "../leases/postgres.ts";
import { messageDbSource } from "../sources/messagedb.ts";

const url = process.env.IMPEL_PG_URL;
if (!url) throw new Error("set IMPEL_PG_URL to the database, e.g. postgres://user@host:5432/app");
const pool = new pg.Pool({ connectionString: url, options: "-c search_path=message_store,public" });
const leasePool = new pg.Pool({ connectionString: url, max: 2 });
await initPostgresLeases(leasePool); // one table, impel.leases; every member may run it at once
const checkpoints = postgresCheckpoints(pool); // commits fenced against impel.leases

let source: ReturnType<typeof messageDbSource> | undefined;
const printer = pipeline({
  name: "order-printer",
  // The run's signal stops the member: its slots are revoked and released.
  source: ({ group, signal }) =>
    source = messageDbSource({
      client: pool,
      categories: ["Order"],
      group,
      checkpoints,
      leases: { store: postgresLeases(leasePool), slots: 12 }, // own pool: never behind handlers
      signal,
    }),
  checkpoints,
  handler: (stream, events) => {
    for (const e of events) console.log(`${stream} #${e.index} ${e.type}`);
  },
});

console.log(`reactor ${printer.name} running, sharing the Order slots`);
await printer.run({ signal: stopOnSignals().signal });
await source?.released; // every slot released: the others take them at their next heartbeat
await leasePool.end();
await pool.end();
console.log("stopped, checkpoints committed, slots released");
