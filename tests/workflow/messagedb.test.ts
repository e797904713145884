// The fulfilment scenarios against MessageDB on the real PostgreSQL server (IMPEL_PG_URL, default
// postgres://postgres@127.0.0.1:5432/impel_test): messageDbStore, messageDbSource with Postgres
// checkpoints, each run under its own consumer groups starting at the tail and its own timer
// category, so earlier runs' events in the shared database are not replayed.
// @ts-types="@types/pg"
import pg from "pg";
import { initPostgresCheckpoints, postgresCheckpoints } from "../../checkpoints/postgres.ts";
import { messageDbSource } from "../../sources/messagedb.ts";
import { messageDbStore, toBigInt } from "../../stores/messagedb.ts";
import { url } from "../support/postgres.ts";
import {
  completes,
  concurrentOrdersNeverOversell,
  correlationIsCarried,
  declinedPaymentReleases,
  type FulfilmentBackend,
  outOfStock,
  refusedShipmentUndoesInReverse,
  uncorrelatedInputJoinsInstance,
  unpaidOrderTimesOut,
  withFulfilment,
} from "./scenarios.ts";

// pg keeps sockets and timers of its pool until `end`, which each test awaits.
const pgTest = (name: string, fn: () => Promise<void>) =>
  Deno.test({ name, sanitizeOps: false, sanitizeResources: false, fn });

async function withMessageDb(fn: (backend: FulfilmentBackend) => Promise<void>): Promise<void> {
  const pool = new pg.Pool({
    connectionString: url,
    max: 8,
    options: "-c search_path=message_store,public",
  });
  pool.on("error", () => {});
  try {
    await initPostgresCheckpoints(pool);
    const checkpoints = postgresCheckpoints(pool);
    /** The next global position of each category: what a caught-up source has completed. */
    const heads = async (categories: readonly string[]) => {
      const { rows } = await pool.query(
        `SELECT c, (SELECT coalesce(max(global_position), 0) + 1 FROM message_store.messages
                     WHERE message_store.category(stream_name) = c)::text AS head
           FROM unnest($1::text[]) AS c`,
        [categories],
      );
      return new Map(rows.map((r) => [r.c as string, toBigInt(r.head)]));
    };
    await fn({
      store: messageDbStore(pool),
      source: (categories, group, signal) =>
        messageDbSource({
          client: pool,
          categories: [...categories],
          group,
          checkpoints,
          whenNoCheckpoint: "tail",
          tailSleepMs: 20,
          signal,
        }),
      async settle(sinks, idle) {
        const all = [...new Set(sinks.flatMap((s) => s.categories))];
        const deadline = Date.now() + 30_000;
        for (;;) {
          if (Date.now() > deadline) throw new Error("the pipelines did not catch up in 30 s");
          const before = await heads(all);
          for (const { sink } of sinks) {
            await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 30_000 });
          }
          await idle();
          const caughtUp = sinks.every(({ sink, categories }) =>
            categories.every((c) => {
              const completed = sink.stats().tranches.find((t) => t.tranche === c)?.completed;
              return completed !== undefined && completed >= before.get(c)!;
            })
          );
          const after = await heads(all);
          if (caughtUp && all.every((c) => after.get(c) === before.get(c))) return;
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
      },
    });
  } finally {
    await pool.end();
  }
}

const scenario = (fn: Parameters<typeof withFulfilment>[1]) => () =>
  withMessageDb((backend) => withFulfilment(backend, fn));

pgTest("workflow on MessageDB: reserve, pay, ship completes the order", scenario(completes));
pgTest(
  "workflow on MessageDB: a declined payment releases the reservation",
  scenario(declinedPaymentReleases),
);
pgTest(
  "workflow on MessageDB: an unpaid order times out once, cancels the payment and releases the stock",
  scenario(unpaidOrderTimesOut),
);
pgTest("workflow on MessageDB: out of stock compensates at once", scenario(outOfStock));
pgTest(
  "workflow on MessageDB: a refused shipment refunds, then releases (reverse order)",
  scenario(refusedShipmentUndoesInReverse),
);
pgTest(
  "workflow on MessageDB: correlation and causation ids are carried to every service",
  scenario(correlationIsCarried),
);
pgTest(
  "workflow on MessageDB: an input without correlation id joins the instance's",
  scenario(uncorrelatedInputJoinsInstance),
);
pgTest(
  "workflow on MessageDB: concurrent orders of one SKU never oversell",
  scenario(concurrentOrdersNeverOversell),
);
