// The CLI against the real PostgreSQL server prepared by tools/postgres.sh (IMPEL_PG_URL, default
// postgres://postgres@127.0.0.1:5432/impel_test) and DynamoDB Local (DYNAMODB_ENDPOINT, default
// http://127.0.0.1:8000; tools/dynamodb.sh start). Most cases call main() in-process; a few run
// the CLI as a process under Deno and Bun to check real exit codes.
import assert from "node:assert/strict";
import { DeleteTableCommand, DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { type CliIo, EXIT, main } from "../cli.ts";
import { postgresCheckpoints } from "../checkpoints/postgres.ts";
import { messageDbStore } from "../stores/messagedb.ts";
import { dynamoIndexer } from "../stores/dynamo-indexer.ts";
import { run, streamsSink } from "../core/sink.ts";
import { messageDbSource } from "../sources/messagedb.ts";
import { config as dynamoConfig, endpoint as dynamoEndpoint } from "./support/dynamo.ts";
import { poolFixture, unique as uniqueName, url } from "./support/postgres.ts";

const unique = (prefix: string) => uniqueName(prefix, 10);
const root = new URL("..", import.meta.url).pathname;

/** Bun from node_modules (CI installs it there); the Bun cases run under Deno when it is absent. */
const bunPath = await Deno.stat(`${root}node_modules/.bin/bun`).then(
  () => `${root}node_modules/.bin/bun`,
  () => undefined,
);

interface Result {
  code: number;
  out: string;
  err: string;
}

/** Runs the CLI in-process with `env` as its environment. */
async function cli(
  args: string[],
  env: Record<string, string> = {},
  signal?: AbortSignal,
): Promise<Result> {
  let out = "", err = "";
  const io: CliIo = {
    out: (t) => void (out += t),
    err: (t) => void (err += t),
    env: (name) => ({ IMPEL_PG_URL: url, ...env })[name],
    isTerminal: false,
    signal,
  };
  const code = await main(args, io);
  return { code, out, err };
}

/** Runs the CLI as a process. */
async function spawn(
  runtime: "deno" | "bun",
  args: string[],
  cwd = root,
  script = "cli.ts",
): Promise<Result> {
  const bin = runtime === "deno" ? Deno.execPath() : bunPath!;
  const command = new Deno.Command(bin, {
    args: runtime === "deno" ? ["run", "-A", script, ...args] : ["run", script, ...args],
    cwd,
    env: { IMPEL_PG_URL: url, NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  });
  const { code, stdout, stderr } = await command.output();
  const dec = new TextDecoder();
  return { code, out: dec.decode(stdout), err: dec.decode(stderr) };
}

const withPool = poolFixture({ max: 4 });

Deno.test("cli: help and usage errors", async () => {
  const top = await cli(["--help"]);
  assert.equal(top.code, EXIT.ok);
  for (
    const c of [
      "init postgres",
      "init messagedb",
      "init dynamo",
      "checkpoints show",
      "checkpoints set",
      "tail messagedb",
      "tail dynamo",
      "index",
      "check messagedb",
    ]
  ) {
    assert.match(top.out, new RegExp(`^  ${c} `, "m"), c);
    const help = await cli([...c.split(" "), "--help"]);
    assert.equal(help.code, EXIT.ok, c);
    assert.match(help.out, new RegExp(`Usage: impel ${c}`), c);
    assert.match(help.out, /Exit codes: 0 done/);
  }
  assert.equal(
    (await cli(["help", "checkpoints", "set"])).out.includes("--position N|start|tail"),
    true,
  );
  const cases: Array<[string[], RegExp]> = [
    [[], /a command is needed/],
    [["nothing"], /unknown command "nothing"/],
    [["checkpoints"], /checkpoints needs a subcommand/],
    [["checkpoints", "show"], /--source is required/],
    [["checkpoints", "show", "--source"], /--source needs a value/],
    [["checkpoints", "show", "--source", "s", "--bogus"], /unknown option --bogus/],
    [["checkpoints", "show", "--source", "s", "extra"], /unexpected argument "extra"/],
    [
      ["checkpoints", "show", "--source", "s", "--store", "kafka"],
      /--store must be one of postgres, dynamo, cosmos/,
    ],
    [
      ["checkpoints", "set", "--source", "s", "--group", "g", "--tranche", "t"],
      /exactly one of --position and --delete/,
    ],
    [
      ["checkpoints", "set", "--source", "s", "--group", "g", "--tranche", "t", "--position", "-1"],
      /unknown option -1|--position must be/,
    ],
    [
      ["checkpoints", "set", "--source", "s", "--group", "g", "--tranche", "t", "--position", "x1"],
      /--position must be start, tail or an integer/,
    ],
    [[
      "checkpoints",
      "set",
      "--source",
      "s",
      "--group",
      "g",
      "--tranche",
      "t",
      "--position",
      "9223372036854775808",
    ], /--position must be/],
    [[
      "checkpoints",
      "set",
      "--source",
      "s",
      "--group",
      "g",
      "--tranche",
      "t",
      "--position",
      "1",
      "--delete",
    ], /exactly one/],
    [["tail", "messagedb"], /--category is required/],
    [
      ["tail", "messagedb", "--category", "A", "--from", "checkpoint"],
      /--from checkpoint needs --group/,
    ],
    [
      ["tail", "messagedb", "--category", "A", "--interval", "0"],
      /--interval must be a positive number/,
    ],
    [["init", "dynamo", "--region", "local"], /name at least one of/],
    [["index", "--region", "local"], /--index-table is required/],
  ];
  for (const [args, message] of cases) {
    const r = await cli(args);
    assert.equal(r.code, EXIT.usage, `${args.join(" ")}: ${r.err}`);
    assert.match(r.err, message, args.join(" "));
  }
});

Deno.test("cli: exit codes of a real process under Deno and Bun", async () => {
  const help = await spawn("deno", ["checkpoints", "show", "--help"]);
  assert.equal(help.code, EXIT.ok);
  assert.match(help.out, /Usage: impel checkpoints show/);
  assert.equal((await spawn("deno", ["checkpoints", "show"])).code, EXIT.usage);
  const refused = await spawn("deno", [
    "checkpoints",
    "show",
    "--source",
    "s",
    "--url",
    "postgres://postgres@127.0.0.1:1/x",
  ]);
  assert.equal(refused.code, EXIT.connection);
  assert.match(refused.err, /cannot connect to PostgreSQL/);
  const schema = unique("cli_");
  const other = bunPath ? "bun" : "deno";
  if (!bunPath) console.warn("bun is not in node_modules/.bin: running the Bun cases under Deno");
  const bun = await spawn(other, ["init", "postgres", "--schema", schema]);
  assert.equal(bun.code, EXIT.ok, bun.err);
  assert.match(bun.out, new RegExp(`"${schema}"."checkpoints" is ready`));
  const empty = await spawn(other, ["checkpoints", "show", "--source", "s", "--schema", schema]);
  assert.equal(empty.code, EXIT.notFound, empty.err);
  await withPool((pool) => pool.query(`DROP SCHEMA "${schema}" CASCADE`).then(() => {}));
});

Deno.test("cli: a missing module is reported as not available", async () => {
  // A copy of the CLI with its core but without the MessageDB source.
  const dir = await Deno.makeTempDir({ prefix: "impel-cli-" });
  try {
    for (
      const f of [
        "cli.ts",
        "version.ts",
        "deno.json",
        "checkpoints/memory.ts",
        "observability/metrics.ts",
      ]
    ) {
      await Deno.mkdir(`${dir}/${f.split("/").slice(0, -1).join("/")}`, { recursive: true });
      await Deno.copyFile(`${root}${f}`, `${dir}/${f}`);
    }
    const copyDir = async (d: string) => {
      await Deno.mkdir(`${dir}/${d}`);
      for await (const e of Deno.readDir(`${root}${d}`)) {
        if (e.isDirectory) await copyDir(`${d}/${e.name}`);
        else await Deno.copyFile(`${root}${d}/${e.name}`, `${dir}/${d}/${e.name}`);
      }
    };
    for (const d of ["core", "cli"]) await copyDir(d);
    await Deno.symlink(`${root}node_modules`, `${dir}/node_modules`);
    const r = await spawn(
      "deno",
      ["tail", "messagedb", "--category", "Nothing", "--until-tail"],
      dir,
    );
    assert.equal(r.code, EXIT.unavailable, r.err);
    assert.match(r.err, /not available: sources\/messagedb\.ts missing/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli: init postgres, checkpoints show and set against PostgreSQL", async () => {
  const schema = unique("cli_");
  await withPool(async (pool) => {
    try {
      const missing = await cli([
        "checkpoints",
        "show",
        "--source",
        "messagedb",
        "--schema",
        schema,
      ]);
      assert.equal(missing.code, EXIT.notFound);
      assert.match(missing.err, /does not exist.*impel init postgres creates it/);

      const init = await cli(["init", "postgres", "--schema", schema]);
      assert.equal(init.code, EXIT.ok, init.err);
      assert.equal(
        (await cli(["init", "postgres", "--schema", schema])).code,
        EXIT.ok,
        "idempotent",
      );
      const empty = await cli(["checkpoints", "show", "--source", "messagedb", "--schema", schema]);
      assert.equal(empty.code, EXIT.notFound);
      assert.match(empty.err, /no checkpoints for source messagedb/);

      // Positions past the tail of GuestStay, on purpose (the tail check has its own test).
      const base = [
        ...["--source", "messagedb", "--group", "reactor", "--schema", schema],
        ...["--force", "--create"],
      ];
      const set = await cli([
        "checkpoints",
        "set",
        ...base,
        "--tranche",
        "GuestStay",
        "--position",
        "42",
      ]);
      assert.equal(set.code, EXIT.ok, set.err);
      assert.equal(set.out, "checkpoint messagedb/GuestStay/reactor: none -> 42\n");
      const back = await cli([
        "checkpoints",
        "set",
        ...base,
        "--tranche",
        "GuestStay",
        "--position=7",
      ]);
      assert.equal(
        back.out,
        "checkpoint messagedb/GuestStay/reactor: 42 -> 7\n",
        "backwards on purpose",
      );
      await cli(["checkpoints", "set", ...base, "--tranche", "Other", "--position", "start"]);
      await cli([
        "checkpoints",
        "set",
        "--source",
        "messagedb",
        "--group",
        "audit",
        "--tranche",
        "GuestStay",
        "--position",
        "9",
        "--schema",
        schema,
        "--force",
        "--create",
      ]);

      const store = postgresCheckpoints(pool, { schema });
      assert.equal(
        await store.load({ source: "messagedb", tranche: "GuestStay", group: "reactor" }),
        7n,
      );
      assert.equal(
        await store.load({ source: "messagedb", tranche: "Other", group: "reactor" }),
        0n,
      );
      const shown = await cli([
        "checkpoints",
        "show",
        "--source",
        "messagedb",
        "--group",
        "reactor",
        "--schema",
        schema,
      ]);
      assert.equal(shown.code, EXIT.ok);
      assert.deepEqual(shown.out.trim().split("\n").map((l) => l.split(/\s+/)), [
        ["SOURCE", "GROUP", "TRANCHE", "POSITION"],
        ["messagedb", "reactor", "GuestStay", "7"],
        ["messagedb", "reactor", "Other", "0"],
      ]);
      const all = await cli([
        "checkpoints",
        "show",
        "--source",
        "messagedb",
        "--schema",
        schema,
        "--json",
      ]);
      assert.deepEqual(
        JSON.parse(all.out).map((c: { group: string; position: string }) =>
          `${c.group}@${c.position}`
        ).sort(),
        [
          "audit@9",
          "reactor@0",
          "reactor@7",
        ],
      );
      const deleted = await cli(["checkpoints", "set", ...base, "--tranche", "Other", "--delete"]);
      assert.equal(deleted.out, "checkpoint messagedb/Other/reactor: 0 -> deleted\n");
      assert.equal(
        await store.load({ source: "messagedb", tranche: "Other", group: "reactor" }),
        undefined,
      );
      // A mistyped tranche: neither set nor deleted, and the held tranches are named.
      const keyOf = ["--source", "messagedb", "--group", "reactor", "--schema", schema];
      const typo = await cli([
        "checkpoints",
        "set",
        ...keyOf,
        "--tranche",
        "GuestSaty",
        "--position",
        "1",
      ]);
      assert.equal(typo.code, EXIT.notFound);
      assert.match(
        typo.err,
        /no checkpoint messagedb\/GuestSaty\/reactor \(its tranches are GuestStay\); give --create/,
      );
      const gone = await cli(["checkpoints", "set", ...keyOf, "--tranche", "Other", "--delete"]);
      assert.equal(gone.code, EXIT.notFound);
      assert.match(gone.err, /no checkpoint messagedb\/Other\/reactor .*nothing to delete/);
      assert.equal(
        await store.load({ source: "messagedb", tranche: "GuestSaty", group: "reactor" }),
        undefined,
      );

      const refused = await cli(["checkpoints", "show", "--source", "s"], {
        IMPEL_PG_URL: "postgres://postgres@127.0.0.1:1/impel_test",
      });
      assert.equal(refused.code, EXIT.connection);
      const noDb = await cli([
        "checkpoints",
        "show",
        "--source",
        "s",
        "--url",
        url.replace(/\/[^/]*$/, "/no_such_db_here"),
      ]);
      assert.equal(noDb.code, EXIT.connection);
      assert.match(noDb.err, /no_such_db_here/);
    } finally {
      await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    }
  });
});

Deno.test("cli: init messagedb, checkpoints set to the tail, and tail messagedb", async () => {
  const schema = unique("cli_");
  const category = unique("CliTail");
  const channel = unique("cli_ch_");
  await withPool(async (pool) => {
    try {
      const trigger = async () =>
        (await pool.query("SELECT count(*)::int AS n FROM pg_trigger WHERE tgname = $1", [
          `impel_notify_${channel}`,
        ])).rows[0].n;
      assert.equal((await cli(["init", "messagedb", "--channel", channel])).code, EXIT.ok);
      assert.equal(await trigger(), 1);
      assert.equal(
        (await cli(["init", "messagedb", "--channel", channel, "--uninstall"])).code,
        EXIT.ok,
      );
      assert.equal(await trigger(), 0);
      // (Without --uninstall, init would install MessageDB there: tests/cli_setup.test.ts.)
      const noSchema = await cli([
        "init",
        "messagedb",
        "--uninstall",
        "--url",
        url.replace(/\/[^/]*$/, "/postgres"),
      ]);
      assert.equal(noSchema.code, EXIT.unavailable);
      assert.match(noSchema.err, /not available: this database has no MessageDB schema/);

      // 4 streams x 25 events.
      const store = messageDbStore(pool);
      for (let s = 0; s < 4; s++) {
        await store.append(
          `${category}-${s}`,
          Array.from({ length: 25 }, (_, i) => ({ type: "Happened", data: { i } })),
          0,
        );
      }
      const tail = await cli([
        "tail",
        "messagedb",
        "--category",
        category,
        "--until-tail",
        "--json",
        "--batch-size",
        "30",
        "--interval",
        "0.05",
      ]);
      assert.equal(tail.code, EXIT.ok, tail.err);
      const lines = tail.out.trim().split("\n").map((l) => JSON.parse(l));
      const last = lines[lines.length - 1];
      assert.equal(last.final, true);
      assert.equal(last.handled, 100);
      assert.equal(last.caughtUp, true);
      assert.equal(last.tranches[0].tranche, category);
      assert.equal(last.tranches[0].lag, 0);
      const head = (await pool.query(
        "SELECT max(global_position) + 1 AS h FROM message_store.messages WHERE message_store.category(stream_name) = $1",
        [category],
      )).rows[0].h;
      assert.equal(last.tranches[0].head, String(head));
      assert.equal(last.tranches[0].completed, String(head));

      // A group's checkpoint at the tail: tail from it sees nothing, and writes nothing.
      assert.equal((await cli(["init", "postgres", "--schema", schema])).code, EXIT.ok);
      const set = await cli([
        "checkpoints",
        "set",
        "--source",
        "messagedb",
        "--group",
        "g",
        "--tranche",
        category,
        "--position",
        "tail",
        "--schema",
        schema,
        "--create",
      ]);
      assert.equal(set.out, `checkpoint messagedb/${category}/g: none -> ${head}\n`);
      await store.append(`${category}-9`, [{ type: "Late", data: {} }], 0);
      const resumed = await cli([
        "tail",
        "messagedb",
        "--category",
        category,
        "--group",
        "g",
        "--schema",
        schema,
        "--until-tail",
      ]);
      assert.equal(resumed.code, EXIT.ok, resumed.err);
      assert.match(resumed.out, /^1 events in [\d.]+ s .*lag 0; caught up\n$/);
      const checkpoint = await postgresCheckpoints(pool, { schema }).load({
        source: "messagedb",
        tranche: category,
        group: "g",
      });
      assert.equal(checkpoint, BigInt(head), "tail never commits");

      // Stopped by a signal (Ctrl-C) rather than at the tail: a summary, and exit 0.
      const ac = new AbortController();
      setTimeout(() => ac.abort(), 300);
      const stopped = await cli(
        ["tail", "messagedb", "--category", category, "--interval", "0.1"],
        {},
        ac.signal,
      );
      assert.equal(stopped.code, EXIT.ok, stopped.err);
      assert.match(stopped.out, / 101 handled, lag 0, at tail\n/);
      assert.match(stopped.out, /^101 events in [\d.]+ s/m);
    } finally {
      await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    }
  });
});

Deno.test("cli: init dynamo, index, tail dynamo and dynamo checkpoints against DynamoDB Local", async () => {
  const env = { IMPEL_DYNAMO_ENDPOINT: dynamoEndpoint, AWS_REGION: "local" };
  // The AWS SDK reads credentials from the process environment.
  const saved = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"].map((k) =>
    [k, Deno.env.get(k)] as const
  );
  for (const [k, v] of saved) if (v === undefined) Deno.env.set(k, "local");
  const client = new DynamoDBClient(dynamoConfig);
  const index = unique("cli_idx_"), checkpoints = unique("cli_cp_"), events = unique("cli_ev_");
  try {
    const init = await cli([
      "init",
      "dynamo",
      "--index-table",
      index,
      "--checkpoints-table",
      checkpoints,
      "--events-table",
      events,
    ], env);
    assert.equal(init.code, EXIT.ok, init.err);
    assert.deepEqual(init.out.trim().split("\n"), [
      `events table ${events} is ready`,
      `index table ${index} is ready`,
      `checkpoint table ${checkpoints} is ready`,
    ]);
    assert.equal(
      (await cli(["index", "--index-table", index], env)).code,
      EXIT.notFound,
      "no partitions yet",
    );

    const indexer = dynamoIndexer(client, {
      indexTable: index,
      maxEpochEntries: 2,
      partitionOf: (s) => (s.startsWith("A") ? "0" : "1"),
    });
    const append = (stream: string, index: number, n: number) => ({
      stream,
      index,
      next: index + n,
      types: Array(n).fill("E"),
      time: Date.now(),
      sizes: Array(n).fill(10),
    });
    await indexer.ingestAppends([append("A-1", 0, 2), append("A-2", 0, 1), append("B-1", 0, 3)]);
    await indexer.ingestAppends([append("A-3", 0, 1), append("A-1", 2, 1)]);
    const shown = await cli(["index", "--index-table", index, "--epochs", "--json"], env);
    assert.equal(shown.code, EXIT.ok, shown.err);
    const parts = JSON.parse(shown.out).partitions;
    assert.deepEqual(parts.map((p: { partition: string }) => p.partition), ["0", "1"]);
    assert.equal(parts[0].epoch, 1, "partition 0 closed its first epoch at 2 entries");
    assert.deepEqual(parts[0].closedEpochs, [{ epoch: 0, entries: 2 }]);
    assert.equal(parts[0].entries, 2);
    assert.equal(parts[1].entries, 1);
    const text = await cli(["index", "--index-table", index, "--partition", "1"], env);
    assert.match(
      text.out,
      /^index .*: 2 partitions\nPARTITION +OPEN EPOCH +ENTRIES +BYTES +STREAMS\n1 +0 +1 /,
    );
    const stream = await cli(["index", "--index-table", index, "--stream", "A-1", "--json"], env);
    assert.deepEqual(JSON.parse(stream.out), {
      stream: "A-1",
      nextVersion: 3,
      partition: "0",
      epoch: 1,
    });
    assert.equal(
      (await cli(["index", "--index-table", index, "--stream", "A-404"], env)).code,
      EXIT.notFound,
    );
    assert.equal((await cli(["index", "--index-table", unique("nope_")], env)).code, EXIT.notFound);

    const tail = await cli(
      ["tail", "dynamo", "--index-table", index, "--until-tail", "--json"],
      env,
    );
    assert.equal(tail.code, EXIT.ok, tail.err);
    const last = JSON.parse(tail.out.trim().split("\n").pop()!);
    assert.equal(last.handled, 8);
    assert.equal(last.caughtUp, true);

    const key = [
      "--store",
      "dynamo",
      "--table",
      checkpoints,
      "--source",
      `dynamo:${index}`,
      "--group",
      "g",
    ];
    const set = await cli([
      "checkpoints",
      "set",
      ...key,
      "--tranche",
      "0",
      "--position",
      "tail",
      "--index-table",
      index,
      "--create",
    ], env);
    assert.equal(set.code, EXIT.ok, set.err);
    assert.equal(set.out, `checkpoint dynamo:${index}/0/g: none -> 1000002\n`);
    const listed = await cli([
      "checkpoints",
      "show",
      "--store",
      "dynamo",
      "--table",
      checkpoints,
      "--source",
      `dynamo:${index}`,
      "--json",
    ], env);
    assert.deepEqual(JSON.parse(listed.out), [{
      source: `dynamo:${index}`,
      tranche: "0",
      group: "g",
      position: "1000002",
    }]);
    const resumed = await cli([
      "tail",
      "dynamo",
      "--index-table",
      index,
      "--group",
      "g",
      "--checkpoints-table",
      checkpoints,
      "--until-tail",
      "--json",
    ], env);
    assert.equal(
      JSON.parse(resumed.out.trim().split("\n").pop()!).handled,
      3,
      "partition 0 from its tail, partition 1 from the start",
    );

    const refused = await cli(["index", "--index-table", index], {
      ...env,
      IMPEL_DYNAMO_ENDPOINT: "http://127.0.0.1:1",
    });
    assert.equal(refused.code, EXIT.connection);
  } finally {
    for (const t of [index, checkpoints, events]) {
      await client.send(new DeleteTableCommand({ TableName: t })).catch(() => {});
    }
    client.destroy();
    for (const [k, v] of saved) if (v === undefined) Deno.env.delete(k);
  }
});

Deno.test("cli: checkpoints set refuses a MessageDB position past the store's head, notes one past the category's tail", async () => {
  const schema = unique("cli_");
  const category = unique("CliHead");
  await withPool(async (pool) => {
    try {
      assert.equal((await cli(["init", "postgres", "--schema", schema])).code, EXIT.ok);
      await messageDbStore(pool).append(
        `${category}-1`,
        [0, 1, 2].map((i) => ({ type: "Happened", data: { i } })),
        0,
      );
      const tail = BigInt(
        (await pool.query(
          `SELECT max(global_position) + 1 AS t FROM message_store.messages
            WHERE message_store.category(stream_name) = $1`,
          [category],
        )).rows[0].t,
      );
      const store = postgresCheckpoints(pool, { schema });
      const set = (tranche: string, position: bigint | string, ...more: string[]) =>
        cli([
          "checkpoints",
          "set",
          ...["--source", "messagedb", "--group", "g", "--schema", schema, "--create"],
          ...["--tranche", tranche, "--position", String(position), ...more],
        ]);
      const load = (tranche: string) => store.load({ source: "messagedb", tranche, group: "g" });

      const atTail = await set(category, tail);
      assert.equal(atTail.code, EXIT.ok, atTail.err);
      assert.equal(atTail.err, "");
      // The store's head: what the source itself bounds checkpoints by, and starts a tail from.
      const head = BigInt(
        (await pool.query(
          `SELECT greatest(max(global_position), pg_sequence_last_value(pg_get_serial_sequence(
             'message_store.messages', 'global_position')::regclass)) + 1 AS h
             FROM message_store.messages`,
        )).rows[0].h,
      );
      // Far past the head, so that other writers to the database cannot catch up meanwhile.
      const far = head + 1_000_000n;
      const past = await set(category, far);
      assert.equal(past.code, EXIT.failed);
      const refusal = past.err.match(
        new RegExp(
          `^impel checkpoints set: position ${far} is past the head of the MessageDB store ` +
            `\\((\\d+), the next global position it hands out\\): the source refuses such a ` +
            `checkpoint at start, and reading from it would skip the messages of category ` +
            `${category} written at global positions (\\d+) to ${far - 1n}; give --force to ` +
            "set it anyway\n$",
        ),
      );
      assert.ok(refusal, past.err);
      assert.ok(BigInt(refusal[1]) >= head && refusal[1] === refusal[2]);
      assert.equal(await load(category), tail, "refused: unchanged");

      // A consumer-group member's tranche is checked against its category.
      const member = `${category}-0/2`;
      assert.equal((await set(member, far)).code, EXIT.failed);
      assert.equal(await load(member), undefined);
      assert.equal((await set(member, "start")).code, EXIT.ok);

      const forced = await set(category, far, "--force");
      assert.equal(forced.code, EXIT.ok, forced.err);
      assert.match(
        forced.err,
        new RegExp(`^warning: --force: position ${far} is past the head .* to ${far - 1n}\n$`),
      );
      assert.equal(await load(category), far);

      // Past the category's tail but not the store's head (another category's messages lie
      // between): set, with a note that says what is compared and what could be skipped.
      const empty = unique("CliEmpty");
      const between = await set(empty, 2n);
      assert.equal(between.code, EXIT.ok, between.err);
      assert.match(
        between.err,
        new RegExp(
          `^note: position 2 is past the last message of MessageDB category ${empty} \\(its ` +
            `tail, the last global position \\+ 1, is 1\\) but not past the store's head ` +
            `\\(\\d+\\): global positions 1 to 1 are other categories' messages, or writes ` +
            `not committed yet; .* in flight .*\n$`,
        ),
      );
      assert.equal(await load(empty), 2n);
      assert.equal((await set(empty, 1n)).err, "");
      const other = await cli([
        "checkpoints",
        "set",
        ...["--source", "feed", "--group", "g", "--schema", schema],
        ...["--tranche", empty, "--position", "99", "--create"],
      ]);
      assert.equal(other.code, EXIT.ok, other.err);
    } finally {
      await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    }
  });
  // Checkpoints kept where there are no messages: the tail cannot be read, so only --force sets.
  const elsewhere = url.replace(/\/[^/]*$/, "/postgres");
  await withPool(async (pool) => {
    try {
      const args = [
        ...["checkpoints", "set", "--url", elsewhere, "--schema", schema],
        ...["--source", "messagedb", "--group", "g", "--tranche", "Order", "--position", "5"],
        "--create",
      ];
      assert.equal(
        (await cli(["init", "postgres", "--url", elsewhere, "--schema", schema])).code,
        0,
      );
      const refused = await cli(args);
      assert.equal(refused.code, EXIT.unavailable);
      assert.match(refused.err, /no MessageDB schema/);
      const forced = await cli([...args, "--force"]);
      assert.equal(forced.code, EXIT.ok, forced.err);
      assert.match(
        forced.err,
        /^warning: --force: not checked against the tail: .*MessageDB schema/,
      );
      assert.equal(forced.out, "checkpoint messagedb/Order/g: none -> 5\n");
    } finally {
      await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    }
  }, { connectionString: elsewhere });
});

Deno.test("cli: check messagedb and init messagedb find rows not written through write_message", async () => {
  // A database of its own: the sequence case puts a row above the shared sequence on purpose.
  const db = unique("cli_check_");
  const made = await new Deno.Command("bash", {
    args: [`${root}tools/postgres.sh`, db],
    stdout: "null",
    stderr: "piped",
  }).output();
  assert.ok(made.success, new TextDecoder().decode(made.stderr));
  const dbUrl = url.replace(/\/[^/]*$/, `/${db}`);
  const check = (...more: string[]) => cli(["check", "messagedb", "--url", dbUrl, ...more]);
  try {
    await withPool(async (pool) => {
      const store = messageDbStore(pool);
      await store.append("Order-1", [0, 1, 2].map((i) => ({ type: "Placed", data: { i } })), 0);
      await store.append("Order-2", [{ type: "Placed", data: {} }], 0);
      const clean = await check();
      assert.equal(clean.code, EXIT.ok, clean.err);
      assert.match(clean.out, /^sequence: ok \(last value \d+, rows up to \d+\)\nstreams: ok/);
      assert.match(clean.out, /not detectable: .*committed out of global-position order/);
      const init = await cli(["init", "messagedb", "--url", dbUrl]);
      assert.equal(init.code, EXIT.ok, init.err);
      assert.equal(init.err, "", "no warning for a clean table");

      // A deleted message: a permanent gap.
      await pool.query(
        "DELETE FROM message_store.messages WHERE stream_name = 'Order-1' AND position = 1",
      );
      // Indexes inserted around write_message, the later one first.
      for (const position of [1, 0]) {
        await pool.query(
          `INSERT INTO message_store.messages (stream_name, position, type, data)
           VALUES ('Invoice-7', $1, 'Raised', '{}')`,
          [position],
        );
      }
      const found = await check("--json");
      assert.equal(found.code, EXIT.failed);
      const report = JSON.parse(found.out);
      assert.equal(report.ok, false);
      assert.equal(report.sequence.ok, true);
      assert.deepEqual(
        report.streams.map((
          p: Record<string, string>,
        ) => [p.stream, p.index, p.expected, p.problem]),
        [["Invoice-7", "1", "0", "order"], ["Order-1", "2", "1", "missing"]],
      );
      const one = await check("--category", "Order");
      assert.equal(one.code, EXIT.failed);
      assert.match(one.out, /streams: 1 with misplaced messages \(categories Order\)/);
      assert.match(one.out, /Order-1 .* index 1 missing/);
      const limited = await check("--limit", "1");
      assert.match(limited.out, /\.\.\. and 1 more/);
      assert.equal((await check("--category", "Nope")).code, EXIT.notFound);

      // A restore that kept its global positions but not the sequence.
      const { rows } = await pool.query(
        "SELECT max(global_position) + 100 AS p FROM message_store.messages",
      );
      await pool.query(
        `INSERT INTO message_store.messages (global_position, stream_name, position, type, data)
         VALUES ($1, 'Order-3', 0, 'Placed', '{}')`,
        [rows[0].p],
      );
      const sequence = await check("--category", "Invoice", "--json");
      assert.equal(sequence.code, EXIT.failed);
      assert.equal(JSON.parse(sequence.out).sequence.max, String(rows[0].p));
      const warned = await cli(["init", "messagedb", "--url", dbUrl]);
      assert.equal(warned.code, EXIT.ok, "init still succeeds");
      assert.match(
        warned.err,
        new RegExp(`^warning: sequence: rows go up to global position ${rows[0].p} .*setval`),
      );
    }, { connectionString: dbUrl });
  } finally {
    await withPool(async (pool) => {
      await pool.query(`DROP DATABASE IF EXISTS "${db}" WITH (FORCE)`);
    }, { connectionString: url.replace(/\/[^/]*$/, "/postgres") });
  }
});

Deno.test("cli checkpoints set: refused while a pipeline holds the group's checkpoints, unless --force", () =>
  withPool(async (pool) => {
    const schema = uniqueName("cp_run_");
    const category = uniqueName("Run");
    assert.equal((await cli(["init", "postgres", "--schema", schema])).code, EXIT.ok);
    const checkpoints = postgresCheckpoints(pool, { schema });
    await messageDbStore(pool).append(`${category}-1`, [{ type: "T", data: {} }], 0);
    const set = (...more: string[]) =>
      cli([
        "checkpoints",
        "set",
        "--source",
        "messagedb",
        "--group",
        "g",
        "--tranche",
        category,
        "--position",
        "start",
        "--schema",
        schema,
        ...more,
      ]);
    const sink = streamsSink({ group: "g", handler: () => {}, statsIntervalMs: 0 });
    const ac = new AbortController();
    const running = run(
      messageDbSource({ client: pool, categories: [category], group: "g", checkpoints }),
      sink,
      { signal: ac.signal },
    );
    try {
      await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 10_000 });
      await sink.flush();
      const refused = await set();
      assert.equal(refused.code, EXIT.failed, refused.err);
      assert.match(refused.err, /messagedb\/g is running/);
      const forced = await set("--while-running");
      assert.equal(forced.code, EXIT.ok, forced.err);
      assert.match(forced.err, /its next commit replaces this one/);
    } finally {
      ac.abort();
      await running;
    }
    const stopped = await set();
    assert.equal(stopped.code, EXIT.ok, `a stopped pipeline holds nothing: ${stopped.err}`);
    await pool.query(`DROP SCHEMA "${schema}" CASCADE`);
  }));
