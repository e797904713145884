// `impel leases list` (cli/leases.ts) against the real PostgreSQL, run in-process with captured
// output: the table and JSON of leases and members, and exit 4 without a table or leases.
import assert from "node:assert/strict";
import { Args, HELP, parse } from "../../cli/args.ts";
import { CliError, EXIT } from "../../cli/exit.ts";
import { leasesList } from "../../cli/leases.ts";
import { initPostgresLeases, postgresLeases } from "../../leases/postgres.ts";
import { url, withSchema } from "../support/postgres.ts";

async function list(argv: string[]) {
  let out = "", err = "";
  const io = {
    out: (t: string) => void (out += t),
    err: (t: string) => void (err += t),
    env: (name: string) => (name === "IMPEL_PG_URL" ? url : undefined),
    isTerminal: false,
  };
  const parsed = parse(argv, [...leasesList.options, HELP]);
  // As cli.ts runs a command: a CliError ends it with its exit code.
  const code = await leasesList.run(new Args(leasesList, parsed, io as never), io as never).catch(
    (e) => {
      if (!(e instanceof CliError)) throw e;
      err += e.message;
      return e.exitCode;
    },
  );
  return { code, out, err };
}

Deno.test("cli leases list: owners, generations, ages and members; JSON; exit 4 when none", () =>
  withSchema(async (pool, schema) => {
    const missing = await list(["--schema", schema]);
    assert.equal(missing.code, EXIT.notFound);
    assert.match(missing.err, /lease table .* does not exist; call initPostgresLeases first/);
    await initPostgresLeases(pool, { schema });
    assert.equal((await list(["--schema", schema])).code, EXIT.notFound, "empty table");
    const store = postgresLeases(pool, { schema });
    await store.acquire("messagedb/g", "Order-10/12", "a", 60_000);
    await store.acquire("messagedb/g", "Order-0/2", "a", 60_000);
    await store.acquire("messagedb/g", "Order-2/12", "a", 60_000);
    await store.acquire("messagedb/g", "Order-1/2", "b", 60_000);
    await store.request("messagedb/g", "Order-1/2", "a");
    await store.heartbeat("messagedb/g", "a", 60_000, [], "12:0badf00d");
    await store.acquire("other/h", "x", "c", 1);
    await new Promise((r) => setTimeout(r, 20));
    const shown = await list(["--schema", schema]);
    assert.equal(shown.code, EXIT.ok, shown.err);
    assert.match(
      shown.out,
      /^SCOPE\s+UNIT\s+OWNER\s+GENERATION\s+HELD FOR\s+EXPIRES IN\s+ASKED BY$/m,
    );
    assert.match(shown.out, /^messagedb\/g\s+Order-0\/2\s+a\s+1\s+\d+\.\d s\s+\d+\.\d s\s+-$/m);
    assert.match(shown.out, /^messagedb\/g\s+Order-1\/2\s+b\s+1\s.*\s+a$/m);
    assert.match(shown.out, /^other\/h\s+x\s+\(c\)\s+1\s+-\s+free\s+-$/m, "lapsed: free");
    assert.match(shown.out, /^messagedb\/g\s+a\s+live\s+\d+\.\d s ago\s+\d+\.\d s ago\s+12$/m);
    const units = [...shown.out.matchAll(/^messagedb\/g\s+(Order-\S+)/gm)].map((m) => m[1]);
    assert.deepEqual(units, ["Order-0/2", "Order-1/2", "Order-2/12", "Order-10/12"], "numeric");
    const one = await list(["--schema", schema, "--scope", "other/h", "--json"]);
    assert.equal(one.code, EXIT.ok);
    const [view] = JSON.parse(one.out);
    assert.equal(view.scope, "other/h");
    assert.deepEqual(
      view.leases.map((l: { unit: string; generation: string }) => [l.unit, l.generation]),
      [["x", "1"]],
    );
    const none = await list(["--schema", schema, "--scope", "nothing/here"]);
    assert.equal(none.code, EXIT.notFound);
    assert.match(none.err, /no leases in scope nothing\/here/);
  }));
