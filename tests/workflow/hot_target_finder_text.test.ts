// MessageDB's findIdempotencyKey and keys jsonb cannot hold: the driver sends a lone surrogate as
// U+FFFD, so such a key found another ("a\ud800" found "a\ufffd") and a mayRepeat transact
// reported a duplicate, appending nothing; U+0000 failed as a raw driver error. Both are refused
// as InvalidArgumentError (no append could have stored them). Runs on the real server.
// @ts-types="@types/pg"
import pg from "pg";
import assert from "node:assert/strict";
import { createCodec } from "../../core/codec.ts";
import { createDecider, IDEMPOTENCY_KEY } from "../../core/decider.ts";
import { InvalidArgumentError } from "../../core/errors.ts";
import { messageDbStore } from "../../stores/messagedb.ts";
import { unique, url } from "../support/postgres.ts";

const isKeyError = (e: unknown) =>
  e instanceof InvalidArgumentError && e.field === "idempotencyKey";

Deno.test({
  name: "MessageDB findIdempotencyKey: a key jsonb cannot hold is refused, not matched to another",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const pool = new pg.Pool({
      connectionString: url,
      max: 2,
      options: "-c search_path=message_store,public",
    });
    pool.on("error", () => {});
    try {
      const store = messageDbStore(pool);
      const stream = unique("Text-");
      await store.append(stream, [
        { type: "Incremented", data: null, meta: { [IDEMPOTENCY_KEY]: "a\ufffd" } },
      ], 0);
      assert.equal(await store.findIdempotencyKey(stream, "a\ufffd"), 0);
      await assert.rejects(store.findIdempotencyKey(stream, "a\ud800"), isKeyError);
      await assert.rejects(store.findIdempotencyKey(stream, "a\u0000b"), isKeyError);

      // Through a decider: a re-send with that key beyond the window is not taken for a repeat.
      type Counted = { type: "Incremented"; data: null };
      const counter = createDecider<Counted, number>({
        store,
        codec: createCodec<Counted>({ Incremented: {} }),
        initial: 0,
        fold: (n, es) => n + es.length,
        idempotencyWindow: 1,
      });
      const add = () => [{ type: "Incremented" as const, data: null }];
      await counter.transact(stream, add, { idempotencyKey: "other" });
      await assert.rejects(
        counter.transactEx(stream, add, { idempotencyKey: "a\ud800", mayRepeat: true }),
        isKeyError,
      );
    } finally {
      await pool.end();
    }
  },
});
