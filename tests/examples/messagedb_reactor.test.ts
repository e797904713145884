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

const root = new URL("../..", import.meta.url).pathname;
const file = `${root}examples/messagedb_reactor.ts`;
const bun = await Deno.stat(`${root}node_modules/.bin/bun`).then(
  () => `${root}node_modules/.bin/bun`,
  () => undefined,
);

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
      const pool = new pg.Pool({ connectionString: url, max: 2 });
      const port = 20_000 + Math.floor(Math.random() * 20_000);
      const stream = `Order-${crypto.randomUUID().slice(0, 8)}`;
      const child = new Deno.Command(runtime === "deno" ? Deno.execPath() : bun!, {
        args: runtime === "deno" ? ["run", "-A", file] : ["run", file],
        cwd: root,
        env: { IMPEL_PG_URL: url, PORT: String(port), NO_COLOR: "1" },
        stdout: "piped",
        stderr: "inherit",
      }).spawn();
      let out = "";
      const reading = child.stdout.pipeThrough(new TextDecoderStream()).pipeTo(
        new WritableStream({ write: (chunk) => void (out += chunk) }),
      );
      const until = async (what: RegExp) => {
        const deadline = Date.now() + 30_000;
        while (!what.test(out)) {
          if (Date.now() > deadline) throw new Error(`no ${what} in:\n${out}`);
          await new Promise((r) => setTimeout(r, 20));
        }
      };
      try {
        await until(/running; metrics and health/);
        await messageDbStore(pool).append(stream, [{ type: "Placed", data: {} }], 0);
        await until(new RegExp(`${stream} #0 Placed`));
        const health = await fetch(`http://127.0.0.1:${port}/health`);
        assert.equal(health.status, 200);
        assert.match((await health.json()).status, /^(ok|degraded)$/);
        const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
        assert.match(metrics, /impel_/);
        child.kill("SIGTERM");
        assert.equal((await child.status).code, 0, out);
        await reading;
        assert.match(out, /stopped, checkpoints committed/);
        const committed = await postgresCheckpoints(pool).load({
          source: "messagedb",
          tranche: "Order",
          group: "order-printer",
        });
        assert.ok(committed !== undefined && committed > 0n);
      } finally {
        try {
          child.kill("SIGKILL");
        } catch { /* already exited */ }
        await pool.end();
      }
    },
  });
}
