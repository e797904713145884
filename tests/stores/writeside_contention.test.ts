// Conflicts under 8 contending writers on one MessageDB stream (the real PostgreSQL server):
// jittered backoff between attempts fails fewer transacts than re-deciding at once, and writers
// of one process (one store object) take turns and never conflict. Rounds alternate in one run.
import assert from "node:assert/strict";
import { createCodec } from "../../core/codec.ts";
import { createDecider, MaxAttemptsExceededError } from "../../core/decider.ts";
import type { RetryOptions } from "../../core/failure.ts";
import type { EventStore } from "../../core/store.ts";
import { messageDbStore } from "../../stores/messagedb.ts";
import { poolFixture, unique } from "../support/postgres.ts";

const withPool = poolFixture({ max: 9 });
type Event = { type: "Added"; data: { by: number } };
const codec = createCodec<Event>({ Added: {} });
const WRITERS = 8;
const PER_WRITER = 12;

/** Runs 8 writers of `PER_WRITER` transacts each on one fresh stream; returns the failures. */
async function contend(stores: readonly EventStore[], retry: RetryOptions): Promise<number> {
  const stream = `${unique("wsContend")}-1`;
  let failures = 0;
  let appended = 0;
  await Promise.all(stores.map(async (store, w) => {
    const decider = createDecider<Event, number>({
      store,
      codec,
      initial: 0,
      fold: (n, events) => n + events.length,
      retry,
    });
    for (let k = 0; k < PER_WRITER; k++) {
      try {
        await decider.transact(stream, () => [{ type: "Added", data: { by: w } }]);
        appended++;
      } catch (error) {
        if (!(error instanceof MaxAttemptsExceededError)) throw error;
        failures++;
      }
    }
  }));
  // Nothing lost, nothing doubled: the stream holds exactly the successful transacts.
  assert.equal((await stores[0].readStream(stream)).length, appended);
  return failures;
}

Deno.test({
  name: "decider on MessageDB: backoff and in-process turns lower conflict failures of 8 writers",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: () =>
    withPool(async (pool) => {
      // A store object per writer: eight "processes" that only the expected version orders.
      const apart = Array.from({ length: WRITERS }, () => messageDbStore(pool));
      const shared = messageDbStore(pool);
      const together = Array.from({ length: WRITERS }, () => shared);
      const immediate: RetryOptions = { initialDelayMs: 0, jitter: 0 };
      let atOnce = 0, backedOff = 0, turns = 0;
      for (let round = 0; round < 2; round++) {
        atOnce += await contend(apart, immediate);
        backedOff += await contend(apart, {}); // the default backoff
        turns += await contend(together, immediate);
      }
      const total = 2 * WRITERS * PER_WRITER;
      console.log(
        `failed transacts of ${total}: at once ${atOnce}, with backoff ${backedOff}, ` +
          `one process ${turns}`,
      );
      assert.ok(atOnce > 0, "the writers must contend for the comparison to mean anything");
      assert.ok(backedOff < 0.75 * atOnce, `backoff ${backedOff} vs at once ${atOnce}`);
      assert.equal(turns, 0);
    }),
});
