// A permanent gap found while a batch is ingested faults the sink at once; run() must then end
// with the fault instead of waiting for room in a read-ahead that a stopped sink never frees
// (it hung: accept() waited on a write release after the stop). Real MessageDB (IMPEL_PG_URL):
// events deleted ahead of a reader held by a slow first call and maxReadAhead 1.
import assert from "node:assert/strict";
import { initPostgresCheckpoints, postgresCheckpoints } from "../../checkpoints/postgres.ts";
import { PipelineFaultError, StreamGapError } from "../../core/failure.ts";
import { run, streamsSink } from "../../core/sink.ts";
import { messageDbSource } from "../../sources/messagedb.ts";
import { messageDbStore } from "../../stores/messagedb.ts";
import { unique, withSchema } from "../support/postgres.ts";

Deno.test("run: a gap fault while ingesting a batch ends run() with the fault (events deleted ahead of the reader)", () =>
  withSchema(async (pool, schema) => {
    await initPostgresCheckpoints(pool, { schema });
    const category = unique("Hang");
    const store = messageDbStore(pool);
    for (let p = 0; p < 30; p++) {
      for (let s = 0; s < 2; s++) {
        await store.append(`${category}-${s}`, [{ type: "E", data: {} }], p);
      }
    }
    let release!: () => void;
    const gate = new Promise<void>((r) => release = r);
    let calls = 0;
    const sink = streamsSink({
      handler: async () => {
        if (calls++ === 0) await gate;
      },
      failure: { kind: "fault", maxAttempts: 1 },
      maxConcurrentStreams: 1,
      maxReadAhead: 1,
      statsIntervalMs: 0,
    });
    const source = messageDbSource({
      client: pool,
      checkpoints: postgresCheckpoints(pool, { schema }),
      categories: [category],
      group: "g",
      batchSize: 4,
      maxBatchItems: 4,
    });
    const running = run(source, sink).then(() => undefined, (e) => e);
    while (calls === 0) await new Promise((r) => setTimeout(r, 10));
    await pool.query(
      `DELETE FROM message_store.messages WHERE stream_name LIKE $1 AND position BETWEEN 8 AND 24`,
      [`${category}-%`],
    );
    release();
    const error = await running;
    assert.ok(error instanceof PipelineFaultError, `got ${error}`);
    assert.ok(error.cause instanceof StreamGapError);
  }));
