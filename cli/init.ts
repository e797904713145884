/**
 * The `init` commands: create what impel needs in PostgreSQL, MessageDB and DynamoDB. Internal to
 * the `impel` command line.
 *
 * @module
 */
import { errorText } from "../core/failure.ts";
import type { Args, Command } from "./args.ts";
import {
  COSMOS,
  DYNAMO,
  load,
  messageDb,
  PG,
  PG_TABLE,
  type Pool,
  withCosmos,
  withDynamo,
  withPostgres,
} from "./backends.ts";
import { CliError, EXIT, unavailable, usage } from "./exit.ts";
import { MESSAGEDB_RELEASE, schemaSource } from "./messagedb_schema.ts";
import { warnAboutSequence } from "./check.ts";

/** `impel init postgres`: creates the checkpoint table. */
export const initPostgres: Command = {
  path: ["init", "postgres"],
  summary: "Creates the PostgreSQL checkpoint table (and its schema) unless it exists.",
  usage: "init postgres [--url URL] [--schema NAME] [--table NAME]",
  options: [...PG, ...PG_TABLE],
  run: (args) =>
    withPostgres(args, async (pool) => {
      const m = await load("checkpoints/postgres.ts", () => import("../checkpoints/postgres.ts"));
      await m.initPostgresCheckpoints(pool, {
        schema: args.string("schema"),
        table: args.string("table"),
      });
      args.io.out(
        `checkpoint table "${args.string("schema")}"."${args.string("table")}" is ready\n`,
      );
      return EXIT.ok;
    }),
};

/** `impel init messagedb`: installs MessageDB's schema if missing, the trigger and checkpoints. */
export const initMessageDb: Command = {
  path: ["init", "messagedb"],
  summary:
    "Installs MessageDB's schema unless present, the NOTIFY trigger and the checkpoint table.",
  usage:
    "init messagedb [--url URL] [--sql-dir DIR] [--no-download] [--channel NAME] [--schema NAME] [--table NAME] [--uninstall]",
  details: `
Safe to repeat. On a database without MessageDB's schema it installs it, in one transaction, from
the @eventide/message-db package's own SQL files in its installer's order: the folder given with
--sql-dir, else an installed copy (node_modules of the working directory or next to impel), else
release ${MESSAGEDB_RELEASE} fetched from the npm registry and checked against the registry's integrity hash
(--no-download forbids that). It needs no psql. It then sets the database's search_path to
message_store, public (MessageDB's functions name their table unqualified), installs the trigger
that wakes MessageDB sources within milliseconds of an append, creates the checkpoint table, and
warns when rows lie above the global-position sequence (see impel check messagedb).
--uninstall removes only the trigger.`,
  options: [
    ...PG,
    {
      name: "sql-dir",
      kind: "string",
      arg: "DIR",
      help: "the database folder of @eventide/message-db",
    },
    { name: "no-download", kind: "boolean", help: "never fetch MessageDB from the npm registry" },
    {
      name: "channel",
      kind: "string",
      arg: "NAME",
      fallback: "impel_messagedb",
      help: "the NOTIFY channel",
    },
    ...PG_TABLE,
    { name: "uninstall", kind: "boolean", help: "remove the trigger instead" },
  ],
  run: (args) =>
    withPostgres(args, async (pool) => {
      const m = await load("sources/messagedb.ts", () => import("../sources/messagedb.ts"));
      const channel = args.string("channel");
      const version = await installedVersion(pool);
      if (args.flag("uninstall")) {
        if (version === undefined) throw unavailable("this database has no MessageDB schema");
        await messageDb(() => m.uninstallNotifyTrigger(pool, { channel }));
        args.io.out(`MessageDB notify trigger for channel ${channel} removed\n`);
        return EXIT.ok;
      }
      if (version !== undefined) {
        args.io.out(`MessageDB ${version} is installed\n`);
      } else {
        const files = await schemaSource(args.string("sql-dir"), !args.flag("no-download"));
        const store = await load("stores/messagedb.ts", () => import("../stores/messagedb.ts"));
        const scripts = await store.messageDbInstallScripts(files.read);
        await inTransaction(pool, async (query) => {
          for (const { path, sql } of scripts) {
            await query(sql).catch((error) => {
              throw new CliError(
                EXIT.failed,
                "MessageDbSetup",
                `MessageDB script ${path} failed (nothing was installed): ${errorText(error)}`,
                { cause: error },
              );
            });
          }
        });
        args.io.out(`MessageDB ${await installedVersion(pool)} installed from ${files.from}\n`);
      }
      await searchPath(args, pool);
      await messageDb(() => m.installNotifyTrigger(pool, { channel }));
      args.io.out(`MessageDB notify trigger for channel ${channel} installed\n`);
      const cps = await load("checkpoints/postgres.ts", () => import("../checkpoints/postgres.ts"));
      const schema = args.string("schema"), table = args.string("table");
      await cps.initPostgresCheckpoints(pool, { schema, table });
      args.io.out(`checkpoint table "${schema}"."${table}" is ready\n`);
      await warnAboutSequence(args, pool);
      return EXIT.ok;
    }),
};

async function installedVersion(pool: Pool): Promise<string | undefined> {
  const { rows } = await pool.query(
    "SELECT to_regclass('message_store.messages') IS NOT NULL AS present",
  );
  if (!rows[0].present) return undefined;
  const version = await pool.query("SELECT message_store.message_store_version() AS v").then(
    (r) => String(r.rows[0].v),
    () => "(version unknown: message_store_version() is missing)",
  );
  return version;
}

async function inTransaction(
  pool: Pool,
  fn: (query: (sql: string) => Promise<unknown>) => Promise<void>,
): Promise<void> {
  const client = await pool.connect();
  try {
    await client.query("BEGIN");
    await fn((sql) => client.query(sql));
    await client.query("COMMIT");
    client.release();
  } catch (error) {
    await client.query("ROLLBACK").catch(() => {});
    client.release(true);
    throw error;
  }
}

/** MessageDB's functions name their table unqualified, so sessions need it on the search path. */
async function searchPath(args: Args, pool: Pool): Promise<void> {
  const { rows } = await pool.query("SELECT current_database() AS db");
  const db = String(rows[0].db).replaceAll('"', '""');
  await pool.query(`ALTER DATABASE "${db}" SET search_path TO message_store, public`).then(
    () => args.io.out(`search_path of database "${db}" set to message_store, public\n`),
    (error) =>
      args.io.err(
        `warning: could not set the search_path of database "${db}" (${errorText(error)}); ` +
          `connections must set search_path=message_store,public themselves\n`,
      ),
  );
}

/** `impel init dynamo`: creates the events, index and checkpoint tables. */
export const initDynamo: Command = {
  path: ["init", "dynamo"],
  summary:
    "Creates the DynamoDB tables impel uses, unless they exist, and waits until they are active.",
  usage:
    "init dynamo [--endpoint URL] --region REGION [--events-table T] [--index-table T] [--checkpoints-table T]",
  options: [
    ...DYNAMO,
    {
      name: "events-table",
      kind: "string",
      arg: "NAME",
      help: "events table (with a stream of new images)",
    },
    { name: "index-table", kind: "string", arg: "NAME", help: "index table the indexer writes" },
    { name: "checkpoints-table", kind: "string", arg: "NAME", help: "checkpoint table" },
  ],
  async run(args) {
    const events = args.string("events-table"),
      index = args.string("index-table"),
      cps = args.string("checkpoints-table");
    if (!events && !index && !cps) {
      throw usage("name at least one of --events-table, --index-table, --checkpoints-table");
    }
    return await withDynamo(args, async (client) => {
      if (events) {
        const m = await load("stores/dynamo.ts", () => import("../stores/dynamo.ts"));
        await m.createEventTable(client, events);
        args.io.out(`events table ${events} is ready\n`);
      }
      if (index) {
        const m = await load(
          "stores/dynamo-indexer.ts",
          () => import("../stores/dynamo-indexer.ts"),
        );
        await m.createIndexTable(client, index);
        args.io.out(`index table ${index} is ready\n`);
      }
      if (cps) {
        const m = await load("checkpoints/dynamo.ts", () => import("../checkpoints/dynamo.ts"));
        await m.createCheckpointTable(client, cps);
        args.io.out(`checkpoint table ${cps} is ready\n`);
      }
      return EXIT.ok;
    });
  },
};

/** `impel init cosmos`: creates the events container and the container of leases and checkpoints. */
export const initCosmos: Command = {
  path: ["init", "cosmos"],
  summary:
    "Creates the Cosmos DB database and containers impel uses (partition key /p), unless they exist.",
  usage:
    "init cosmos --endpoint URL --key KEY [--database NAME] [--events-container C] [--aux-container C]",
  details:
    "The events container holds the store's tips and batch documents; the aux container holds the " +
    "source's checkpoints and leases (one container, so that commits can be fenced by leases).",
  options: [
    ...COSMOS,
    { name: "events-container", kind: "string", arg: "NAME", help: "events container" },
    {
      name: "aux-container",
      kind: "string",
      arg: "NAME",
      help: "container of checkpoints and leases",
    },
  ],
  async run(args) {
    const events = args.string("events-container"), aux = args.string("aux-container");
    if (!events && !aux) throw usage("name at least one of --events-container, --aux-container");
    return await withCosmos(args, async (database) => {
      const m = await load("stores/cosmos.ts", () => import("../stores/cosmos.ts"));
      for (const [id, what] of [[events, "events"], [aux, "checkpoints and leases"]] as const) {
        if (!id) continue;
        await m.ensureCosmosContainer(database, id);
        args.io.out(`container ${id} (${what}) is ready in database ${database.id}\n`);
      }
      return EXIT.ok;
    }, true);
  },
};
