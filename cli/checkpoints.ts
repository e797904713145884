/**
 * The `checkpoints show` and `checkpoints set` commands, on a PostgreSQL, DynamoDB or Cosmos DB
 * checkpoint store. Internal to the `impel` command line.
 *
 * @module
 */
import { describe } from "../core/errors.ts";
import { errorText } from "../core/failure.ts";
import type { Position } from "../core/batch.ts";
import {
  type CheckpointKey,
  type CheckpointScope,
  type CheckpointStore,
  PipelineRunningError,
} from "../core/checkpoints.ts";
import { CheckpointPastTailError } from "../core/reader.ts";
import { Args, type Command, JSON_OUT, type OptionSpec } from "./args.ts";
import {
  COSMOS,
  DYNAMO,
  existingContainer,
  load,
  mapCheckpointError,
  messageDbCategory,
  messageDbHead,
  messageDbStoreHead,
  PG,
  postgresStore,
  withCosmos,
  withDynamo,
  withPostgres,
} from "./backends.ts";
import { CliError, EXIT, notFound, usage } from "./exit.ts";
import { table } from "./table.ts";

const STORE: OptionSpec[] = [
  {
    name: "store",
    kind: "string",
    arg: "KIND",
    fallback: "postgres",
    help: "where checkpoints are kept: postgres, dynamo or cosmos",
  },
  ...PG,
  {
    name: "schema",
    kind: "string",
    arg: "NAME",
    fallback: "impel",
    help: "schema of the PostgreSQL checkpoint table",
  },
  { name: "table", kind: "string", arg: "NAME", fallback: "checkpoints", help: "checkpoint table" },
  // One --endpoint for both: DynamoDB's, or with --store cosmos the account's (and its variable).
  {
    ...DYNAMO[0],
    help: "DynamoDB endpoint (e.g. DynamoDB Local); with --store cosmos the Cosmos DB account " +
      "endpoint, env IMPEL_COSMOS_ENDPOINT",
  },
  ...DYNAMO.slice(1),
  ...COSMOS.slice(1),
  {
    name: "aux-container",
    kind: "string",
    arg: "NAME",
    help: "with --store cosmos: the container of checkpoints and leases",
  },
];

/** `args` as withCosmos reads them: --endpoint falls back on IMPEL_COSMOS_ENDPOINT. */
function cosmosArgs(args: Args): Args {
  const options = args.command.options.map((o) => o.name === COSMOS[0].name ? COSMOS[0] : o);
  return new Args({ ...args.command, options }, args.parsed, args.io);
}

/** The tail of a tranche of the source whose checkpoints the store holds. */
type Tail = (tranche: string) => Promise<Position>;

async function withStore<T>(
  args: Args,
  fn: (
    store: CheckpointStore,
    tail: Tail,
    kind: "postgres" | "dynamo" | "cosmos",
    storeHead?: () => Promise<Position>,
  ) => Promise<T>,
): Promise<T> {
  const kind = args.choice("store", ["postgres", "dynamo", "cosmos"] as const, "postgres");
  if (kind === "cosmos") {
    return await withCosmos(cosmosArgs(args), async (database) => {
      const container = await existingContainer(
        database,
        args.required("aux-container", " with --store cosmos"),
      );
      const m = await load("checkpoints/cosmos.ts", () => import("../checkpoints/cosmos.ts"));
      const store = m.cosmosCheckpoints(container);
      // No running mark in Cosmos: a member of the group with leases heartbeats in the same
      // container, so a live member or lease of the scope means it runs. Checked just before the
      // reset, not with it; a group without leases cannot be seen.
      const running = async (scope: CheckpointScope) => {
        const l = await load("leases/cosmos.ts", () => import("../leases/cosmos.ts"));
        const views = await l.cosmosLeases(container).list(`${scope.source}/${scope.group}`);
        return views.some((v) =>
          v.members.some((b) => b.expiresAt > v.now) ||
          v.leases.some((x) => x.owner !== undefined && x.expiresAt > v.now)
        );
      };
      const checked: CheckpointStore = {
        ...store,
        async resetUnlessRunning(scope, key, position) {
          if (await running(scope)) throw new PipelineRunningError(scope);
          await store.reset(key, position);
        },
      };
      const tail = () => {
        throw usage(
          "--position tail is not available with --store cosmos: a Cosmos checkpoint is a " +
            "change-feed continuation, which the command line does not read; --delete, and a " +
            'source with whenNoCheckpoint: "tail", starts the range at its end',
        );
      };
      return await fn(checked, tail, kind);
    });
  }
  if (kind === "postgres") {
    return await withPostgres(
      args,
      async (pool) =>
        fn(
          await postgresStore(args, pool),
          (t) => messageDbHead(pool, t),
          kind,
          () => messageDbStoreHead(pool),
        ),
    );
  }
  return await withDynamo(args, async (client) => {
    const m = await load("checkpoints/dynamo.ts", () => import("../checkpoints/dynamo.ts"));
    const store = m.dynamoCheckpoints(client, { tableName: args.required("table") });
    const tail = async (tranche: string) => {
      const indexTable = args.required("index-table", " for --position tail with --store dynamo");
      const idx = await load(
        "stores/dynamo-indexer.ts",
        () => import("../stores/dynamo-indexer.ts"),
      );
      const src = await load("sources/dynamo.ts", () => import("../sources/dynamo.ts"));
      const tip = await idx.dynamoIndexer(client, { indexTable }).tip(tranche);
      return src.encodePosition(tip.epoch, tip.offset);
    };
    return await fn(store, tail, kind);
  });
}

/** `impel checkpoints show`: lists a source's checkpoints. */
export const checkpointsShow: Command = {
  path: ["checkpoints", "show"],
  summary: "Lists the checkpoints of a source, for one group or all.",
  usage: "checkpoints show --source NAME [--group NAME] [--store postgres|dynamo|cosmos] [--json]",
  details: "With --store cosmos, --aux-container names the container of checkpoints and leases, " +
    "and a Cosmos source's name is cosmos:<events container> unless it was given one. " +
    "Exits 4 when there is no checkpoint to show.",
  options: [
    {
      name: "source",
      kind: "string",
      arg: "NAME",
      help: "the source's name in checkpoint keys (e.g. messagedb)",
    },
    { name: "group", kind: "string", arg: "NAME", help: "only this consumer group" },
    ...STORE,
    JSON_OUT,
  ],
  async run(args) {
    const source = args.required("source");
    const group = args.string("group");
    return await withStore(args, async (store) => {
      const list = await store.list(source, group).catch(mapCheckpointError);
      if (args.flag("json")) {
        args.io.out(
          JSON.stringify(list.map((c) => ({ ...c, position: c.position.toString() }))) + "\n",
        );
      } else if (list.length > 0) {
        args.io.out(
          table([
            ["SOURCE", "GROUP", "TRANCHE", "POSITION"],
            ...list.map((c) => [c.source, c.group, c.tranche, c.position.toString()]),
          ]),
        );
      }
      if (list.length === 0) {
        args.io.err(`no checkpoints for source ${source}${group ? ` and group ${group}` : ""}\n`);
        return EXIT.notFound;
      }
      return EXIT.ok;
    });
  },
};

const MAX_POSITION = (1n << 63n) - 1n;

/** The name `messageDbSource` keeps its checkpoints under unless given `sourceName`. */
const MESSAGEDB_SOURCE = "messagedb";

/** A MessageDB position past the store's head (exit 1), with the source's error as cause. */
function pastTail(tranche: string, position: Position, head: Position): CliError {
  const category = messageDbCategory(tranche);
  return new CliError(
    EXIT.failed,
    "CheckpointPastTail",
    `position ${position} is past the head of the MessageDB store (${head}, the next global ` +
      `position it hands out): the source refuses such a checkpoint at start, and reading from ` +
      `it would skip the messages of category ${category} written at global positions ${head} ` +
      `to ${position - 1n}; give --force to set it anyway`,
    { cause: new CheckpointPastTailError(MESSAGEDB_SOURCE, tranche, position, head) },
  );
}

/** Why a MessageDB position past its category's last message but not the store's head is risky. */
function pastCategory(tranche: string, position: Position, tail: Position, head: Position) {
  const category = messageDbCategory(tranche);
  return `note: position ${position} is past the last message of MessageDB category ${category} ` +
    `(its tail, the last global position + 1, is ${tail}) but not past the store's head ` +
    `(${head}): global positions ` +
    `${tail} to ${position - 1n} are other categories' messages, or writes not committed yet; a ` +
    `write to ${category} in flight now could hold one of them and would be skipped (a source ` +
    `that starts from the tail commits such a position itself)\n`;
}

/** No checkpoint under `key`: exit 4, naming the tranches the store holds for its source and group. */
async function unknownTranche(
  store: CheckpointStore,
  key: CheckpointKey,
  deleting: boolean,
): Promise<CliError> {
  const known = (await store.list(key.source, key.group).catch(mapCheckpointError))
    .map((c) => c.tranche).sort();
  const held = known.length === 0
    ? `the store holds no checkpoints for source ${key.source} and group ${key.group}`
    : `its tranches are ${known.join(", ")}`;
  return notFound(
    `no checkpoint ${key.source}/${key.tranche}/${key.group} (${held}); ` +
      (deleting ? "nothing to delete" : "give --create to set a new one"),
  );
}

/** `impel checkpoints set`: moves one checkpoint, or deletes it. */
export const checkpointsSet: Command = {
  path: ["checkpoints", "set"],
  summary:
    "Sets one checkpoint (backwards too), or deletes it; refused while the pipeline runs (its own commits would move it on).",
  usage:
    "checkpoints set --source NAME --group NAME --tranche NAME (--position N|start|tail [--force] [--create] | --delete) [--while-running]",
  details: `
--position start sets 0, before the first item of every built-in source. --position tail asks the
backend for its head: with --store postgres the MessageDB category of the tranche in the same
database; with --store dynamo the open epoch of the index partition (--index-table). The previous
position is printed so that the change can be undone. A checkpoint the store does not hold yet is
set only with --create, and deleting one it does not hold exits 4: both name the tranches it holds
for the source and group, so a mistyped tranche is caught.

For --source messagedb with --store postgres, a position is checked against two bounds (a
consumer-group tranche <category>-<member>/<size> reads <category>):
- past the store's head (the next global position the store hands out: the global-position
  sequence's last value + 1, or the last message's if higher) it is refused with exit 1: the
  source refuses such a checkpoint at start too, and would skip the category's messages written
  until the store reaches that position. --force sets it anyway, with a warning (also when the
  bounds cannot be read, e.g. the messages live in another database than the checkpoints).
- past the category's tail (its last message's global position + 1) but not the store's head, it
  is set, with a note: the positions in between are other categories' messages or writes not yet
  committed, and whether a write to the category is in flight is not knowable from here; one
  that is would be skipped. A source that starts from the tail commits such positions itself, so
  they can be put back. --position tail sets the category's tail, which skips no such write.

With --store cosmos (--aux-container: the container of checkpoints and leases) a checkpoint is a
change-feed continuation with the count of documents read: only --position start (no
continuation: the range is read from its beginning) and --delete (the source starts the range as
configured) can be set; a number or tail is refused (exit 2). The pipeline counts as running
while a member of the group with leases is live in that container (checked just before the
change, not with it; a group without leases is not seen).`,
  options: [
    { name: "source", kind: "string", arg: "NAME", help: "the source's name in checkpoint keys" },
    { name: "group", kind: "string", arg: "NAME", help: "the consumer group" },
    {
      name: "tranche",
      kind: "string",
      arg: "NAME",
      help: "the tranche (category, partition, ...)",
    },
    { name: "position", kind: "string", arg: "N|start|tail", help: "the new position" },
    {
      name: "delete",
      kind: "boolean",
      help: "forget the checkpoint (the source then starts as configured)",
    },
    {
      name: "force",
      kind: "boolean",
      help: "set a MessageDB position past the store's head anyway (with a warning)",
    },
    {
      name: "while-running",
      kind: "boolean",
      help: "set it although the pipeline runs (its next commit replaces it; with a warning)",
    },
    {
      name: "create",
      kind: "boolean",
      help: "set a checkpoint the store does not hold yet (else refused: a typo?)",
    },
    {
      name: "index-table",
      kind: "string",
      arg: "NAME",
      help: "index table, for --position tail with --store dynamo",
    },
    ...STORE,
  ],
  async run(args) {
    const key = {
      source: args.required("source"),
      group: args.required("group"),
      tranche: args.required("tranche"),
    };
    const given = args.string("position");
    if ((given === undefined) === !args.flag("delete")) {
      throw usage("give exactly one of --position and --delete");
    }
    if (given !== undefined && !["start", "tail"].includes(given)) {
      if (!/^\d{1,19}$/.test(given) || BigInt(given) > MAX_POSITION) {
        throw usage(
          `--position must be start, tail or an integer in [0, 2^63), got ${describe(given)}`,
        );
      }
    }
    return await withStore(args, async (store, tail, kind, storeHead) => {
      const previous = await store.load(key).catch(mapCheckpointError);
      const position = given === undefined
        ? undefined
        : given === "start"
        ? 0n
        : given === "tail"
        ? await tail(key.tranche)
        : BigInt(given);
      if (kind === "cosmos" && position !== undefined && position !== 0n) {
        throw usage(
          `--position ${position}: a Cosmos checkpoint is a change-feed continuation and a ` +
            "position alone cannot be resumed from (the source would fail the range with " +
            "CosmosTokenMissingError); give --position start (read the range from its " +
            "beginning) or --delete (start it as the source is configured)",
        );
      }
      if (previous === undefined && (position === undefined || !args.flag("create"))) {
        throw await unknownTranche(store, key, position === undefined);
      }
      if (
        position !== undefined && given !== "tail" && kind === "postgres" &&
        key.source === MESSAGEDB_SOURCE
      ) {
        const force = args.flag("force");
        // Forced, bounds that cannot be read (the messages live in another database) are no bar.
        const bounds = await Promise.all([tail(key.tranche), storeHead!()]).catch((error) => {
          if (!force) throw error;
          args.io.err(`warning: --force: not checked against the tail: ${errorText(error)}\n`);
          return undefined;
        });
        if (bounds !== undefined && position > bounds[0]) {
          const [categoryTail, head] = bounds;
          if (position > head) {
            const error = pastTail(key.tranche, position, head);
            if (!force) throw error;
            args.io.err(`warning: --force: ${error.message.replace(/; give --force.*$/, "")}\n`);
          } else {
            args.io.err(pastCategory(key.tranche, position, categoryTail, head));
          }
        }
      }
      // A running pipeline would commit over the change (the HTTP API refuses it too): checked
      // and reset in one step where the store can tell.
      const scope = { source: key.source, group: key.group };
      if (store.resetUnlessRunning === undefined || args.flag("while-running")) {
        if (args.flag("while-running")) {
          args.io.err(
            "warning: --while-running: if the pipeline runs, its next commit replaces this one\n",
          );
        }
        await store.reset(key, position).catch(mapCheckpointError);
      } else {
        await store.resetUnlessRunning(scope, key, position).catch((error) => {
          if (!(error instanceof PipelineRunningError)) return mapCheckpointError(error);
          throw new CliError(
            EXIT.failed,
            "PipelineRunning",
            `${error.message}, or give --while-running`,
            { cause: error },
          );
        });
      }
      args.io.out(
        `checkpoint ${key.source}/${key.tranche}/${key.group}: ${previous ?? "none"} -> ${
          position ?? "deleted"
        }\n`,
      );
      return EXIT.ok;
    });
  },
};
