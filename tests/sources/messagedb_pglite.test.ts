// The same MessageDB adapters on an embedded PGlite database, with the schema installed from the
// @eventide/message-db package's own SQL files in its installer's order.
import assert from "node:assert/strict";
import { PGlite } from "@electric-sql/pglite";
import { pgcrypto } from "@electric-sql/pglite/contrib/pgcrypto";
import { run, streamsSink } from "../../core/sink.ts";
import { WrongExpectedVersionError } from "../../core/store.ts";
import { initPostgresCheckpoints, postgresCheckpoints } from "../../checkpoints/postgres.ts";
import {
  installMessageDbSchema,
  messageDbInstallScripts,
  messageDbStore,
} from "../../stores/messagedb.ts";
import { installNotifyTrigger, messageDbSource } from "../../sources/messagedb.ts";

const schemaDir = new URL("../../node_modules/@eventide/message-db/database/", import.meta.url);
const readSchemaFile = (path: string) => Deno.readTextFile(new URL(path, schemaDir));

Deno.test("messagedb on PGlite: the installer's script order comes from install.sh", async () => {
  const scripts = await messageDbInstallScripts(readSchemaFile);
  const paths = scripts.map((s) => s.path);
  const at = (p: string) => paths.indexOf(p);
  assert.ok(at("tables/messages.sql") > at("schema/message-store.sql"));
  assert.ok(at("functions/write-message.sql") > at("functions/stream-version.sql"));
  assert.ok(at("functions/get-category-messages.sql") > at("types/message.sql"));
  assert.ok(at("indexes/messages-category.sql") > at("functions/category.sql"));
  assert.ok(at("privileges/functions.sql") > at("functions/get-last-stream-message.sql"));
  assert.ok(paths.every((p) => at(p) >= 0 && scripts[at(p)].sql.length > 0));
  assert.equal(new Set(paths).size, paths.length);
});

Deno.test({
  name: "messagedb on PGlite: the pipeline with store, checkpoints and NOTIFY wake-up",
  sanitizeResources: false, // PGlite keeps its WebAssembly instance's resources until exit
  sanitizeOps: false,
  fn: async () => {
    const db = await PGlite.create({ extensions: { pgcrypto } });
    try {
      await installMessageDbSchema(db, readSchemaFile);
      await installNotifyTrigger(db);
      await initPostgresCheckpoints(db);
      const store = messageDbStore(db);
      const checkpoints = postgresCheckpoints(db);

      for (let s = 0; s < 20; s++) {
        await store.append(
          `Room-${s}`,
          Array.from({ length: 10 }, (_, i) => ({ type: "Booked", data: { s, i } })),
          0,
        );
      }
      await assert.rejects(
        store.append("Room-0", [{ type: "Late", data: {} }], 3),
        (e) => e instanceof WrongExpectedVersionError && e.actual === 10,
      );

      const byStream = new Map<string, number[]>();
      let handled = 0;
      let arrived: (() => void) | undefined;
      const sink = streamsSink({
        handler: (stream, events) => {
          byStream.set(stream, [...(byStream.get(stream) ?? []), ...events.map((e) => e.index)]);
          handled += events.length;
          if (handled === 201) arrived?.();
        },
        statsIntervalMs: 0,
      });
      const controller = new AbortController();
      const running = run(
        messageDbSource({
          client: db,
          categories: ["Room"],
          group: "pglite",
          checkpoints,
          batchSize: 64,
          tailSleepMs: 30_000,
          notifications: db,
        }),
        sink,
        { signal: controller.signal },
      );
      await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 20_000 });
      assert.equal(handled, 200);
      for (let s = 0; s < 20; s++) {
        assert.deepEqual(byStream.get(`Room-${s}`), Array.from({ length: 10 }, (_, i) => i));
      }

      // the tail sleep is 30 s: only the trigger's NOTIFY can deliver this in time
      const t0 = performance.now();
      const delivered = new Promise<void>((resolve) => arrived = resolve);
      await store.append("Room-0", [{ type: "Extended", data: {} }], 10);
      await Promise.race([delivered, new Promise((r) => setTimeout(r, 5000))]);
      assert.equal(handled, 201, "the append was not handled within 5 s");
      assert.ok(performance.now() - t0 < 2000, `arrived after ${performance.now() - t0} ms`);
      assert.deepEqual(byStream.get("Room-0")!.at(-1), 10);

      controller.abort();
      await running;
      const key = { source: "messagedb", tranche: "Room", group: "pglite" };
      const { rows } = await db.query<{ max: number }>(
        "SELECT max(global_position)::int AS max FROM message_store.messages",
      );
      assert.equal(await checkpoints.load(key), BigInt(rows[0].max) + 1n);
    } finally {
      await db.close();
    }
  },
});
