// `impel init cosmos` and `impel tail cosmos` against the local Cosmos server
// (`tools/cosmos.sh start`): containers created (again: a no-op), the change feed tailed to its
// end from the start and from a group's checkpoints (read, never written), usage errors and a
// missing container.
import assert from "node:assert/strict";
import { type CliIo, EXIT, main } from "../cli.ts";
import { cosmosCheckpoints } from "../checkpoints/cosmos.ts";
import { cosmosStore } from "../stores/cosmos.ts";
import { cosmosSource } from "../sources/cosmos.ts";
import { run, streamsSink } from "../core/sink.ts";
import { client, endpoint, opts } from "./support/cosmos.ts";

async function cli(args: string[], env: Record<string, string> = {}) {
  let out = "", err = "";
  const io: CliIo = {
    out: (t) => void (out += t),
    err: (t) => void (err += t),
    env: (name) =>
      ({ IMPEL_COSMOS_ENDPOINT: endpoint, IMPEL_COSMOS_KEY: "bG9jYWw=", ...env })[name],
    isTerminal: false,
  };
  const code = await main(args, io);
  return { code, out, err };
}

Deno.test({
  name: "cli: init cosmos and tail cosmos against the local server",
  ...opts,
  async fn() {
    const database = `cli_${crypto.randomUUID().slice(0, 8)}`;
    try {
      const init = await cli([
        "init",
        "cosmos",
        "--database",
        database,
        "--events-container",
        "events",
        "--aux-container",
        "aux",
      ]);
      assert.equal(init.code, EXIT.ok, init.err);
      assert.deepEqual(init.out.trim().split("\n"), [
        `container events (events) is ready in database ${database}`,
        `container aux (checkpoints and leases) is ready in database ${database}`,
      ]);
      assert.equal(
        (await cli(["init", "cosmos", "--database", database, "--aux-container", "aux"])).code,
        EXIT.ok,
      );
      const db = client.database(database);
      const store = cosmosStore(db.container("events"));
      for (let k = 0; k < 5; k++) {
        await store.append(`Order-${k}`, [{ type: "A", data: k }, { type: "B", data: k }], 0);
      }

      const tail = await cli([
        "tail",
        "cosmos",
        "--database",
        database,
        "--container",
        "events",
        "--until-tail",
        "--json",
      ]);
      assert.equal(tail.code, EXIT.ok, tail.err);
      const last = JSON.parse(tail.out.trim().split("\n").at(-1)!);
      assert.equal(last.handled, 10, tail.out);
      assert.equal(last.caughtUp, true);
      assert.deepEqual(last.tranches.map((t: { tranche: string }) => t.tranche), ["-FF"]);
      assert.equal(last.tranches[0].lag, null, "no lag: a range's end is not a position");

      // A group's checkpoints are read, not written.
      const checkpoints = cosmosCheckpoints(db.container("aux"));
      const sink = streamsSink({
        group: "g",
        statsIntervalMs: 0,
        commitIntervalMs: 10,
        handler: () => {},
      });
      const ac = new AbortController();
      const running = run(
        cosmosSource({
          container: db.container("events"),
          group: "g",
          checkpoints,
          signal: ac.signal,
        }),
        sink,
        { signal: ac.signal },
      );
      await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 30_000 });
      ac.abort();
      await running;
      const [before] = await checkpoints.list("cosmos:events", "g");
      const fromCheckpoint = await cli([
        "tail",
        "cosmos",
        "--database",
        database,
        "--container",
        "events",
        "--group",
        "g",
        "--aux-container",
        "aux",
        "--until-tail",
        "--json",
      ]);
      assert.equal(fromCheckpoint.code, EXIT.ok, fromCheckpoint.err);
      // Resumed from the group's continuation: nothing new on this server.
      assert.equal(JSON.parse(fromCheckpoint.out.trim().split("\n").at(-1)!).handled, 0);
      const [after] = await checkpoints.list("cosmos:events", "g");
      assert.deepEqual(after, before, "tail never writes checkpoints");

      assert.equal((await cli(["tail", "cosmos", "--database", database])).code, EXIT.usage);
      assert.equal(
        (await cli([
          "tail",
          "cosmos",
          "--database",
          database,
          "--container",
          "events",
          "--group",
          "g",
        ])).code,
        EXIT.usage,
        "--group needs --aux-container",
      );
      assert.equal((await cli(["init", "cosmos", "--database", database])).code, EXIT.usage);
      assert.equal((await cli(["init", "cosmos"], { IMPEL_COSMOS_KEY: "" })).code, EXIT.usage);
      const missing = await cli([
        "tail",
        "cosmos",
        "--database",
        database,
        "--container",
        "nope",
        "--until-tail",
      ]);
      assert.equal(missing.code, EXIT.notFound, missing.err);
      assert.match(
        missing.err,
        new RegExp(`Cosmos container nope does not exist in database ${database}`),
      );
      const noDatabase = await cli([
        "tail",
        "cosmos",
        "--database",
        `${database}_nope`,
        "--container",
        "events",
        "--until-tail",
      ]);
      assert.equal(noDatabase.code, EXIT.notFound, noDatabase.err);
      assert.match(noDatabase.err, new RegExp(`Cosmos database ${database}_nope does not exist`));
      const noAux = await cli([
        "tail",
        "cosmos",
        "--database",
        database,
        "--container",
        "events",
        "--group",
        "g",
        "--aux-container",
        "nope-aux",
        "--until-tail",
      ]);
      assert.equal(noAux.code, EXIT.notFound, noAux.err);
      assert.match(noAux.err, /Cosmos container nope-aux does not exist/);
      const help = await cli(["tail", "cosmos", "--help"]);
      assert.match(help.out, /Usage: impel tail cosmos/);
    } finally {
      await client.database(database).delete().catch(() => {});
    }
  },
});
