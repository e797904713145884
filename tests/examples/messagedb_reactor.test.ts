// The README's MessageDB reactor (examples/messagedb_reactor.ts) as a real process under Deno and
// Bun against the PostgreSQL server: it handles an appended event, answers /health, and stops on
// SIGTERM with its checkpoint committed. Also checks that the README shows exactly this file.
import assert from "node:assert/strict";
// @ts-types="@types/pg"
import pg from "pg";
import { postgresCheckpoints } from "../../checkpoints/postgres.ts";
import { messageDbStore } from "../../stores/messagedb.ts";
import { url } from "../support/postgres.ts";
import { readmeForm, readmeShows } from "../support/readme.ts";
import { bun, spawnExample } from "../support/example_process.ts";

const cli = new URL("../../cli.ts", import.meta.url).pathname;

Deno.test("README: the MessageDB reactor is examples/messagedb_reactor.ts with the package's names", async () => {
  const code = await readmeForm("examples/messagedb_reactor.ts");
  assert.ok(await readmeShows(code), "README shows the example as it is");
});

for (const runtime of ["deno", "bun"] as const) {
  Deno.test({
    name:
      `examples/messagedb_reactor.ts under ${runtime}: handles, answers /health, stops on SIGTERM`,
    ignore: runtime === "bun" && bun === undefined,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      // The README's set-up step for this example.
      const init = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", cli, "init", "messagedb", "--url", url],
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.ok(init.success, new TextDecoder().decode(init.stderr));
      const pool = new pg.Pool({ connectionString: url, max: 2 });
      const port = 20_000 + Math.floor(Math.random() * 20_000);
      const stream = `Order-${crypto.randomUUID().slice(0, 8)}`;
      const example = spawnExample("examples/messagedb_reactor.ts", runtime, {
        IMPEL_PG_URL: url,
        PORT: String(port),
      }, 30_000);
      try {
        await example.until(/running; metrics and health/);
        await messageDbStore(pool).append(stream, [{ type: "Placed", data: {} }], 0);
        await example.until(new RegExp(`${stream} #0 Placed`));
        const health = await fetch(`http://127.0.0.1:${port}/health`);
        assert.equal(health.status, 200);
        assert.match((await health.json()).status, /^(ok|degraded)$/);
        const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
        assert.match(metrics, /impel_/);
        example.child.kill("SIGTERM");
        assert.equal(await example.ended(), 0, example.out());
        assert.match(example.out(), /stopped, checkpoints committed/);
        const committed = await postgresCheckpoints(pool).load({
          source: "messagedb",
          tranche: "Order",
          group: "order-printer",
        });
        assert.ok(committed !== undefined && committed > 0n);
      } finally {
        example.kill();
        await pool.end();
      }
    },
  });
}
