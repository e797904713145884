// `impel checkpoints show` and `impel checkpoints set` with `--store cosmos` against the local
// Cosmos server (`tools/cosmos.sh start`): a group's checkpoint shown (table and JSON), set back to
// the start (the source then reads the range again from its beginning) and deleted; a number or
// `tail` refused (a continuation cannot be made from one); refused while a member of the group with
// leases is live, unless --while-running; usage and missing-container errors.
import assert from "node:assert/strict";
import { type CliIo, EXIT, main } from "../cli.ts";
import { cosmosCheckpoints } from "../checkpoints/cosmos.ts";
import { cosmosLeases } from "../leases/cosmos.ts";
import { cosmosStore } from "../stores/cosmos.ts";
import { cosmosSource } from "../sources/cosmos.ts";
import { run, streamsSink } from "../core/sink.ts";
import { client, endpoint, opts } from "./support/cosmos.ts";

async function cli(args: string[]) {
  let out = "", err = "";
  // A DynamoDB endpoint in the environment must not be taken for the Cosmos one.
  const env: Record<string, string> = {
    IMPEL_COSMOS_ENDPOINT: endpoint,
    IMPEL_COSMOS_KEY: "bG9jYWw=",
    IMPEL_DYNAMO_ENDPOINT: "http://127.0.0.1:1",
  };
  const io: CliIo = {
    out: (t) => void (out += t),
    err: (t) => void (err += t),
    env: (name) => env[name],
    isTerminal: false,
  };
  const code = await main(args, io);
  return { code, out, err };
}

Deno.test({
  name: "cli: checkpoints show and set --store cosmos against the local server",
  ...opts,
  async fn() {
    const database = `cli_${crypto.randomUUID().slice(0, 8)}`;
    const store = ["--store", "cosmos", "--database", database, "--aux-container", "aux"];
    const key = ["--source", "cosmos:events", "--group", "g", "--tranche=-FF"];
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
      const db = client.database(database);
      const events = db.container("events"), aux = db.container("aux");
      for (let k = 0; k < 5; k++) {
        await cosmosStore(events).append(`Order-${k}`, [{ type: "A", data: k }], 0);
      }
      const checkpoints = cosmosCheckpoints(aux);
      /** Runs the group (with leases when `leased`) to its tail; the events it handled. */
      const member = (leased: boolean) => {
        const handled: string[] = [];
        const ac = new AbortController();
        const sink = streamsSink({
          group: "g",
          statsIntervalMs: 0,
          commitIntervalMs: 10,
          stopTimeoutMs: 500,
          handler: (stream, batch) =>
            void handled.push(...batch.map((e) => `${stream}@${e.index}`)),
        });
        const source = cosmosSource({
          container: events,
          group: "g",
          checkpoints,
          ...(leased
            ? {
              leases: {
                store: cosmosLeases(aux),
                member: "m1",
                durationMs: 3000,
                heartbeatMs: 300,
                handoverMs: 1500,
                stopTimeoutMs: 500,
              },
            }
            : {}),
          signal: ac.signal,
        });
        const running = run(source, sink, { signal: ac.signal });
        return {
          handled,
          done: () => sink.monitor.awaitCompletion({ tail: true, timeoutMs: 30_000 }),
          async stop() {
            ac.abort();
            await running;
            if ("released" in source) await source.released;
          },
        };
      };
      const first = member(false);
      await first.done();
      await first.stop();
      assert.equal(first.handled.length, 5);
      const [committed] = await checkpoints.list("cosmos:events", "g");
      assert.ok(committed.position > 0n, "the run committed");

      const show = await cli(["checkpoints", "show", "--source", "cosmos:events", ...store]);
      assert.equal(show.code, EXIT.ok, show.err);
      assert.match(show.out, new RegExp(`cosmos:events +g +-FF +${committed.position}\\b`));
      const json = await cli([
        "checkpoints",
        "show",
        "--source",
        "cosmos:events",
        "--group",
        "g",
        "--json",
        ...store,
      ]);
      assert.deepEqual(JSON.parse(json.out), [
        { source: "cosmos:events", tranche: "-FF", group: "g", position: `${committed.position}` },
      ]);

      // A number or tail cannot be turned into a continuation: refused, nothing changed.
      const number = await cli(["checkpoints", "set", ...key, "--position", "3", ...store]);
      assert.equal(number.code, EXIT.usage, number.err);
      assert.match(number.err, /--position 3: a Cosmos checkpoint is a change-feed continuation/);
      const tail = await cli(["checkpoints", "set", ...key, "--position", "tail", ...store]);
      assert.equal(tail.code, EXIT.usage, tail.err);
      assert.match(tail.err, /--position tail is not available with --store cosmos/);
      assert.deepEqual(await checkpoints.list("cosmos:events", "g"), [committed]);

      // A live member of the group with leases: refused unless --while-running.
      const leased = member(true);
      try {
        await leased.done();
        const refused = await cli(["checkpoints", "set", ...key, "--position", "start", ...store]);
        assert.equal(refused.code, EXIT.failed, refused.err);
        assert.match(refused.err, /cosmos:events\/g is running .*or give --while-running/);
        assert.deepEqual(await checkpoints.list("cosmos:events", "g"), [committed]);
      } finally {
        await leased.stop();
      }
      assert.equal(leased.handled.length, 0, "the leased member resumed from the checkpoint");

      // Stopped: back to the start, and the group reads the range again from its beginning.
      const reset = await cli(["checkpoints", "set", ...key, "--position", "start", ...store]);
      assert.equal(reset.code, EXIT.ok, reset.err);
      assert.equal(reset.out, `checkpoint cosmos:events/-FF/g: ${committed.position} -> 0\n`);
      const again = member(false);
      await again.done();
      await again.stop();
      assert.equal(again.handled.length, 5, "read again from the beginning");

      const deleted = await cli(["checkpoints", "set", ...key, "--delete", ...store]);
      assert.equal(deleted.code, EXIT.ok, deleted.err);
      assert.match(deleted.out, / -> deleted\n$/);
      const none = await cli(["checkpoints", "show", "--source", "cosmos:events", ...store]);
      assert.equal(none.code, EXIT.notFound, none.err);

      const noAux = await cli([
        "checkpoints",
        "show",
        "--source",
        "cosmos:events",
        "--store",
        "cosmos",
        "--database",
        database,
      ]);
      assert.equal(noAux.code, EXIT.usage, noAux.err);
      assert.match(noAux.err, /--aux-container is required with --store cosmos/);
      const missing = await cli([
        "checkpoints",
        "show",
        "--source",
        "cosmos:events",
        "--store",
        "cosmos",
        "--database",
        database,
        "--aux-container",
        "nope",
      ]);
      assert.equal(missing.code, EXIT.notFound, missing.err);
      assert.match(
        missing.err,
        new RegExp(`Cosmos container nope does not exist in database ${database}`),
      );
      const help = await cli(["checkpoints", "set", "--help"]);
      assert.match(help.out, /--store cosmos/);
      assert.match(help.out, /--aux-container/);
    } finally {
      await client.database(database).delete().catch(() => {});
    }
  },
});
