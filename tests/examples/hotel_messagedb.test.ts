// The hotel scenarios against MessageDB on a real PostgreSQL server, through the same wiring the
// demo uses. Needs the database prepared by tools/postgres.sh; IMPEL_PG_URL overrides the default
// postgres://postgres@127.0.0.1:5432/impel_test. Each test runs the reactor under its own
// consumer group starting at the tail, so earlier runs' events in the database are not replayed.
import assert from "node:assert/strict";
// @ts-types="@types/pg"
import pg from "pg";
import { postgresCheckpoints } from "../../checkpoints/postgres.ts";
import { GROUP_CHECKOUT } from "../../examples/hotel/groupCheckout.ts";
import { messageDbBackend } from "../../examples/hotel/postgres.ts";
import type { HotelBackend } from "../../examples/hotel/wiring.ts";
import {
  closedStaysFailCleanly,
  concurrentSelections,
  conflictingChargesRedecide,
  groupMergesAndConfirms,
  type HotelEnv,
  newId,
  withReactor,
} from "./hotel_scenarios.ts";
import { url } from "../support/postgres.ts";

// pg keeps sockets and timers of its pool until `end`, which each test awaits.
const pgTest = (name: string, fn: () => Promise<void>) =>
  Deno.test({ name, sanitizeOps: false, sanitizeResources: false, fn });

async function withBackend(
  fn: (backend: HotelBackend, group: string) => Promise<void>,
): Promise<void> {
  const group = `hotel-test-${newId()}`;
  const backend = await messageDbBackend(url, { group, whenNoCheckpoint: "tail" });
  try {
    await fn(backend, group);
  } finally {
    await backend.close();
  }
}

const scenario = (fn: (env: HotelEnv) => Promise<void>) => () =>
  withBackend((backend) =>
    withReactor(backend, async (env) => {
      await fn(env);
      assert.deepEqual(env.sink.stats().failing, []);
    })
  );

pgTest(
  "hotel on MessageDB: a group of several stays merges and confirms once paid",
  scenario(groupMergesAndConfirms),
);

pgTest(
  "hotel on MessageDB: stays checked out, merged elsewhere or unknown fail cleanly",
  scenario(closedStaysFailCleanly),
);

pgTest(
  "hotel on MessageDB: concurrent selections of one stay leave it in exactly one group",
  scenario(concurrentSelections),
);

pgTest(
  "hotel on MessageDB: the reactor's checkpoint is committed in PostgreSQL",
  () =>
    withBackend(async (backend, group) => {
      let completed: bigint | undefined;
      await withReactor(backend, async (env) => {
        await groupMergesAndConfirms(env);
        completed = env.sink.stats().tranches[0].completed;
      });
      // Stopping flushed the final checkpoint: what the reactor completed is stored.
      const pool = new pg.Pool({ connectionString: url, max: 1 });
      try {
        const key = { source: "messagedb", tranche: GROUP_CHECKOUT, group };
        const stored = await postgresCheckpoints(pool).load(key);
        assert.ok(completed !== undefined && completed > 1n);
        assert.equal(stored, completed);
      } finally {
        await pool.end();
      }
    }),
);

pgTest(
  "decider on MessageDB: a conflicting append is re-decided on the events it missed",
  () => withBackend(({ store }) => conflictingChargesRedecide(store)),
);
