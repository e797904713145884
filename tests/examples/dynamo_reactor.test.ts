// The README's DynamoDB reactor (examples/dynamo_reactor.ts) as a real process under Deno and Bun
// against DynamoDB Local: it creates its tables, indexes and handles its append, and stops on
// SIGTERM with its checkpoint committed. Also checks that the README shows exactly this file.
import assert from "node:assert/strict";
import { DeleteTableCommand } from "@aws-sdk/client-dynamodb";
import { dynamoCheckpoints } from "../../checkpoints/dynamo.ts";
import { client, endpoint } from "../support/dynamo.ts";
import { readmeForm, readmeShows } from "../support/readme.ts";

const root = new URL("../..", import.meta.url).pathname;
const file = `${root}examples/dynamo_reactor.ts`;
const bun = await Deno.stat(`${root}node_modules/.bin/bun`).then(
  () => `${root}node_modules/.bin/bun`,
  () => undefined,
);

Deno.test("README: the DynamoDB reactor is examples/dynamo_reactor.ts with the package's names", async () => {
  assert.ok(await readmeShows(await readmeForm("examples/dynamo_reactor.ts")));
});

for (const runtime of ["deno", "bun"] as const) {
  Deno.test({
    name: `examples/dynamo_reactor.ts under ${runtime}: indexes, handles, stops on SIGTERM`,
    ignore: runtime === "bun" && bun === undefined,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      const child = new Deno.Command(runtime === "deno" ? Deno.execPath() : bun!, {
        args: runtime === "deno" ? ["run", "-A", file] : ["run", file],
        cwd: root,
        env: { IMPEL_DYNAMO_ENDPOINT: endpoint, NO_COLOR: "1" },
        stdout: "piped",
        stderr: "inherit",
      }).spawn();
      let out = "";
      const reading = child.stdout.pipeThrough(new TextDecoderStream()).pipeTo(
        new WritableStream({ write: (chunk) => void (out += chunk) }),
      );
      const until = async (what: RegExp) => {
        const deadline = Date.now() + 60_000;
        while (!what.test(out)) {
          if (Date.now() > deadline) throw new Error(`no ${what} in:\n${out}`);
          await new Promise((r) => setTimeout(r, 50));
        }
      };
      try {
        await until(/Order-1 #\d+ Placed/);
        child.kill("SIGTERM");
        assert.equal((await child.status).code, 0, out);
        await reading;
        assert.match(out, /stopped, checkpoints committed/);
        const saved = await dynamoCheckpoints(client, { tableName: "shop-checkpoints" })
          .list("dynamo:shop-index", "order-printer");
        assert.ok(
          saved.length > 0 && saved.every((c) => c.position > 0n),
          JSON.stringify(saved, (_k, v) => typeof v === "bigint" ? String(v) : v),
        );
      } finally {
        try {
          child.kill("SIGKILL");
        } catch { /* already exited */ }
        // DynamoDB Local slows down as tables pile up: leave none behind.
        for (const TableName of ["shop-events", "shop-index", "shop-checkpoints"]) {
          await client.send(new DeleteTableCommand({ TableName })).catch(() => {});
        }
      }
    },
  });
}
