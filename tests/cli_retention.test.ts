// `impel retention run` against the PostgreSQL + MessageDB of tools/postgres.sh (IMPEL_PG_URL):
// one pass with rules from a file, its table and JSON output, bad rules (exit 2) and missing
// tables (exit 4).
import assert from "node:assert/strict";
import { type CliIo, main } from "../cli.ts";
import { initPostgresRetention } from "../retention/postgres.ts";
import { messageDbStore } from "../stores/messagedb.ts";
import { unique, url, withSchema } from "./support/postgres.ts";

async function cli(args: string[]) {
  let out = "", err = "";
  const io: CliIo = {
    out: (t) => void (out += t),
    err: (t) => void (err += t),
    env: (name) => ({ IMPEL_PG_URL: url } as Record<string, string>)[name],
    isTerminal: false,
  };
  const code = await main(args, io);
  return { code, out, err };
}

Deno.test("cli retention run: one pass by the rules of a file; bad rules exit 2, missing tables 4", () =>
  withSchema(async (pool, schema) => {
    const category = unique("CliRet");
    const store = messageDbStore(pool);
    for (let p = 0; p < 4; p++) {
      await store.append(`${category}-1`, [{ type: "Happened", data: { p } }], p);
    }
    await pool.query(
      `UPDATE message_store.messages SET time = time - interval '2 days' WHERE stream_name = $1`,
      [`${category}-1`],
    );
    const file = await Deno.makeTempFile({ suffix: ".json" });
    try {
      const rules = [{ target: "category", match: category, policy: { maxAgeMs: 86_400_000 } }];
      await Deno.writeTextFile(file, JSON.stringify(rules));
      const missing = await cli(["retention", "run", "--rules", file, "--schema", schema]);
      assert.equal(missing.code, 4, missing.err);
      assert.match(missing.err, /initPostgresRetention/);

      await initPostgresRetention(pool, { schema });
      const done = await cli(["retention", "run", "--rules", file, "--schema", schema]);
      assert.equal(done.code, 0, done.err);
      assert.match(done.out, new RegExp(`category\\s+${category}\\s+3\\s+0`));
      const again = await cli(["retention", "run", "--rules", file, "--schema", schema, "--json"]);
      assert.equal(again.code, 0, again.err);
      assert.deepEqual(JSON.parse(again.out).categories, {});

      await Deno.writeTextFile(
        file,
        JSON.stringify([{ target: "category", match: "A-*", policy: {} }]),
      );
      const bad = await cli(["retention", "run", "--rules", file, "--schema", schema]);
      assert.equal(bad.code, 2);
      assert.match(bad.err, /rules\[0\]\.match/);
      await Deno.writeTextFile(file, "{ not json");
      assert.equal((await cli(["retention", "run", "--rules", file])).code, 2);
    } finally {
      await Deno.remove(file);
    }
  }));
