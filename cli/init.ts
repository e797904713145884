/**
 * The `init` commands: create what impel needs in PostgreSQL, MessageDB and DynamoDB. Internal to
 * the `impel` command line.
 *
 * @module
 */
import type { Command } from "./args.ts";
import { DYNAMO, load, messageDb, PG, PG_TABLE, withDynamo, withPostgres } from "./backends.ts";
import { EXIT, usage } from "./exit.ts";
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

/** `impel init messagedb`: installs or removes the NOTIFY trigger. */
export const initMessageDb: Command = {
  path: ["init", "messagedb"],
  summary:
    "Installs the MessageDB trigger that wakes MessageDB sources within milliseconds of an append.",
  usage: "init messagedb [--url URL] [--channel NAME] [--uninstall]",
  details:
    `The database must already hold MessageDB's schema (tools/postgres.sh or Eventide's installer).
It also warns when rows lie above the global-position sequence (see impel check messagedb).`,
  options: [
    ...PG,
    {
      name: "channel",
      kind: "string",
      arg: "NAME",
      fallback: "impel_messagedb",
      help: "the NOTIFY channel",
    },
    { name: "uninstall", kind: "boolean", help: "remove the trigger instead" },
  ],
  run: (args) =>
    withPostgres(args, async (pool) => {
      const m = await load("sources/messagedb.ts", () => import("../sources/messagedb.ts"));
      const channel = args.string("channel");
      await messageDb(async () => {
        // The trigger creation reports a missing schema through its own error class.
        await pool.query("SELECT message_store.message_store_version()");
        if (args.flag("uninstall")) await m.uninstallNotifyTrigger(pool, { channel });
        else await m.installNotifyTrigger(pool, { channel });
      });
      if (!args.flag("uninstall")) await warnAboutSequence(args, pool);
      args.io.out(
        `MessageDB notify trigger for channel ${channel} ${
          args.flag("uninstall") ? "removed" : "installed"
        }\n`,
      );
      return EXIT.ok;
    }),
};

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
