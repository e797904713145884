/**
 * The `tail` commands: run a source into a stats-only sink and print throughput and lag, without
 * ever writing a checkpoint. Internal to the `impel` command line.
 *
 * @module
 */
import { ImpelError } from "../core/errors.ts";
import type { Batch, Position } from "../core/batch.ts";
import type { CheckpointStore } from "../core/checkpoints.ts";
import { errorText } from "../core/failure.ts";
import { run, streamsSink } from "../core/sink.ts";
import { memoryCheckpoints } from "../checkpoints/memory.ts";
import type { Args, Command, OptionSpec } from "./args.ts";
import {
  COSMOS,
  DYNAMO,
  existingContainer,
  load,
  mapCheckpointError,
  messageDb,
  messageDbHead,
  PG,
  PG_TABLE,
  postgresStore,
  withCosmos,
  withDynamo,
  withPostgres,
} from "./backends.ts";
import { CliError, EXIT, isConnectionError, unavailable, usage } from "./exit.ts";
import { createProgress } from "./progress.ts";

const TAIL_COMMON: OptionSpec[] = [
  {
    name: "group",
    kind: "string",
    arg: "NAME",
    help: "start from this group's checkpoints (read, never written)",
  },
  {
    name: "from",
    kind: "string",
    arg: "WHERE",
    help: "checkpoint (default with --group), start (default without), or tail",
  },
  { name: "interval", kind: "string", arg: "SECONDS", fallback: "1", help: "how often to print" },
  { name: "duration", kind: "string", arg: "SECONDS", help: "stop after this long" },
  { name: "until-tail", kind: "boolean", help: "stop once every tranche is caught up" },
  { name: "json", kind: "boolean", help: "print one JSON object per interval" },
];

/** A checkpoint store that reads from `store` and never writes: tail only watches. */
function readOnly(store: CheckpointStore): CheckpointStore {
  return {
    load: (key) => store.load(key),
    commit: () => Promise.resolve(),
    reset: () => Promise.reject(new ImpelError("ReadOnly", "tail never changes checkpoints")),
    list: (source, group) => store.list(source, group),
    // Tokens (Cosmos continuations) are read too, and never written either.
    ...(store.tokens === true
      ? {
        tokens: true,
        loadCheckpoint: (key) => store.loadCheckpoint!(key),
        commitCheckpoint: () => Promise.resolve(),
      }
      : {}),
  };
}

interface TailSetup {
  readonly source: (signal: AbortSignal) => ReadableStream<Batch>;
  readonly sourceName: string;
  readonly group: string;
  readonly head: (tranche: string) => Promise<Position | undefined>;
}

async function tailLoop(args: Args, setup: TailSetup): Promise<number> {
  const io = args.io;
  const intervalMs = args.seconds("interval", 1)! * 1000;
  const duration = args.seconds("duration", undefined);
  const ac = new AbortController();
  const stop = () => ac.abort();
  io.signal?.addEventListener("abort", stop, { once: true });
  const timer = duration === undefined ? undefined : setTimeout(stop, duration * 1000);
  const sink = streamsSink({ group: setup.group, handler: () => {}, statsIntervalMs: 0 });
  // prom-client only for this command, not for every run of the CLI.
  const { createMetrics } = await import("../observability/metrics.ts");
  const metrics = createMetrics({ defaultMetrics: false });
  const pipeline = metrics.addPipeline({
    group: setup.group,
    source: setup.sourceName,
    sink,
    positions: { head: setup.head },
  });
  const started = performance.now();
  const running = run(pipeline.observe(setup.source(ac.signal)), sink, { signal: ac.signal });
  let failure: unknown;
  running.catch((error) => {
    failure = error;
    stop();
  });
  if (args.flag("until-tail")) {
    // Rejects only when the pipeline stops first, which ends the wait anyway.
    sink.monitor.awaitCompletion({ tail: true }).then(stop, () => {});
  }
  const progress = createProgress(args, pipeline, started);
  const ticker = setInterval(() => void progress.print(sink.stats(), false), intervalMs);
  await new Promise<void>((resolve) =>
    ac.signal.aborted
      ? resolve()
      : ac.signal.addEventListener("abort", () => resolve(), { once: true })
  );
  clearInterval(ticker);
  clearTimeout(timer);
  io.signal?.removeEventListener("abort", stop);
  await running.catch(() => {});
  await progress.print(sink.stats(), true);
  if (failure !== undefined) {
    if (isConnectionError(failure)) {
      throw new CliError(
        EXIT.connection,
        "ConnectionFailed",
        `reading failed: ${errorText(failure)}`,
      );
    }
    throw failure;
  }
  return EXIT.ok;
}

/** `impel tail messagedb`: watches MessageDB categories. */
export const tailMessageDb: Command = {
  path: ["tail", "messagedb"],
  summary:
    "Reads MessageDB categories into a stats-only sink, printing throughput and lag (in global positions).",
  usage:
    "tail messagedb [--url URL] --category NAME... [--group NAME] [--from WHERE] [--until-tail] [--duration S]",
  details:
    "Checkpoints are read from the PostgreSQL checkpoint table with --group, and never written.",
  options: [
    ...PG,
    ...PG_TABLE,
    { name: "category", kind: "list", arg: "NAME", help: "a category to read" },
    {
      name: "source",
      kind: "string",
      arg: "NAME",
      fallback: "messagedb",
      help: "the source's name in checkpoint keys",
    },
    { name: "batch-size", kind: "string", arg: "N", fallback: "1000", help: "messages per read" },
    ...TAIL_COMMON,
  ],
  async run(args) {
    const categories = args.list("category");
    if (categories.length === 0) throw usage("--category is required");
    const group = args.string("group");
    const from = args.choice(
      "from",
      ["checkpoint", "start", "tail"] as const,
      group ? "checkpoint" : "start",
    );
    if (from === "checkpoint" && !group) throw usage("--from checkpoint needs --group");
    const batchSize = args.integer("batch-size", 1000, 1);
    return await withPostgres(args, async (pool) => {
      const m = await load("sources/messagedb.ts", () => import("../sources/messagedb.ts"));
      await messageDb(() => pool.query("SELECT message_store.message_store_version()"));
      const checkpoints = group ? readOnly(await postgresStore(args, pool)) : memoryCheckpoints();
      if (group && from === "checkpoint") {
        await checkpoints.list("probe", group).catch(mapCheckpointError);
      }
      const sourceName = args.string("source")!;
      return await tailLoop(args, {
        sourceName,
        group: group ?? "impel-tail",
        head: (tranche) => messageDbHead(pool, tranche),
        source: (signal) =>
          m.messageDbSource({
            client: pool,
            categories,
            group: group ?? "impel-tail",
            checkpoints,
            sourceName,
            batchSize,
            startFrom: from,
            tailSleepMs: 200,
            signal,
          }),
      });
    });
  },
};

/** `impel tail dynamo`: watches a DynamoDB store's index. */
export const tailDynamo: Command = {
  path: ["tail", "dynamo"],
  summary:
    "Reads a DynamoDB store's index into a stats-only sink, printing throughput and lag (in epoch×1e6+offset positions).",
  usage:
    "tail dynamo [--endpoint URL] --region REGION --index-table NAME [--event-table NAME] [--group NAME --checkpoints-table NAME]",
  options: [
    ...DYNAMO,
    { name: "index-table", kind: "string", arg: "NAME", help: "the index table" },
    {
      name: "event-table",
      kind: "string",
      arg: "NAME",
      help: "also read event bodies from this table",
    },
    {
      name: "checkpoints-table",
      kind: "string",
      arg: "NAME",
      help: "checkpoint table, with --group",
    },
    ...TAIL_COMMON,
  ],
  async run(args) {
    const indexTable = args.required("index-table");
    const group = args.string("group");
    const from = args.choice(
      "from",
      ["checkpoint", "start"] as const,
      group ? "checkpoint" : "start",
    );
    if (from === "checkpoint" && !group) throw usage("--from checkpoint needs --group");
    const cpTable = group ? args.required("checkpoints-table", " with --group") : undefined;
    return await withDynamo(args, async (client) => {
      const src = await load("sources/dynamo.ts", () => import("../sources/dynamo.ts"));
      const idx = await load(
        "stores/dynamo-indexer.ts",
        () => import("../stores/dynamo-indexer.ts"),
      );
      const sdk = await import("@aws-sdk/client-dynamodb");
      await client.send(new sdk.DescribeTableCommand({ TableName: indexTable }));
      let checkpoints: CheckpointStore = memoryCheckpoints();
      if (cpTable) {
        const cps = await load("checkpoints/dynamo.ts", () => import("../checkpoints/dynamo.ts"));
        checkpoints = readOnly(cps.dynamoCheckpoints(client, { tableName: cpTable }));
      }
      const indexer = idx.dynamoIndexer(client, { indexTable });
      return await tailLoop(args, {
        sourceName: `dynamo:${indexTable}`,
        group: group ?? "impel-tail",
        head: async (tranche) => {
          const tip = await indexer.tip(tranche);
          return src.encodePosition(tip.epoch, tip.offset);
        },
        source: (signal) =>
          src.dynamoSource({
            client,
            indexTable,
            eventTable: args.string("event-table"),
            group: group ?? "impel-tail",
            checkpoints,
            startFrom: from,
            tailSleepMs: 200,
            signal,
          }),
      });
    });
  },
};

/** `impel tail cosmos`: watches the change feed of a Cosmos events container. */
export const tailCosmos: Command = {
  path: ["tail", "cosmos"],
  summary:
    "Reads the change feed of a Cosmos DB events container into a stats-only sink, printing throughput (no lag: a range's end is not a position).",
  usage:
    "tail cosmos --endpoint URL --key KEY [--database NAME] --container NAME [--group NAME --aux-container NAME] [--page-size N]",
  options: [
    ...COSMOS,
    { name: "container", kind: "string", arg: "NAME", help: "the events container" },
    {
      name: "aux-container",
      kind: "string",
      arg: "NAME",
      help: "container of the group's checkpoints, with --group",
    },
    {
      name: "page-size",
      kind: "string",
      arg: "N",
      fallback: "1000",
      help: "documents per change-feed read",
    },
    ...TAIL_COMMON,
  ],
  async run(args) {
    const id = args.required("container");
    const group = args.string("group");
    const from = args.choice(
      "from",
      ["checkpoint", "start", "tail"] as const,
      group ? "checkpoint" : "start",
    );
    if (from === "checkpoint" && !group) throw usage("--from checkpoint needs --group");
    const aux = group ? args.required("aux-container", " with --group") : undefined;
    const pageSize = Number(args.string("page-size"));
    if (!Number.isInteger(pageSize) || pageSize < 1) {
      throw usage(`--page-size must be a positive integer, got ${args.string("page-size")}`);
    }
    return await withCosmos(args, async (database) => {
      const src = await load("sources/cosmos.ts", () => import("../sources/cosmos.ts"));
      const container = await existingContainer(database, id);
      let checkpoints: CheckpointStore = memoryCheckpoints();
      if (aux) {
        await existingContainer(database, aux);
        const cps = await load("checkpoints/cosmos.ts", () => import("../checkpoints/cosmos.ts"));
        checkpoints = readOnly(cps.cosmosCheckpoints(database.container(aux)));
      }
      return await tailLoop(args, {
        sourceName: `cosmos:${id}`,
        group: group ?? "impel-tail",
        head: () => Promise.resolve(undefined),
        source: (signal) =>
          src.cosmosSource({
            container,
            group: group ?? "impel-tail",
            checkpoints,
            startFrom: from,
            pageSize,
            tailSleepMs: 200,
            signal,
          }),
      });
    });
  },
};

/** `impel tail kafka`: not available, and says why. */
export const tailKafka: Command = {
  path: ["tail", "kafka"],
  summary:
    "Not available: the Kafka source keeps its offsets in a consumer group, which tail must not join.",
  usage: "tail kafka",
  details: "Use kafka-consumer-groups.sh --describe --group NAME for a group's lag.",
  options: [],
  run() {
    return Promise.reject(
      unavailable(
        "tail for Kafka (kafkaSource commits offsets to its consumer group; use kafka-consumer-groups.sh --describe)",
      ),
    );
  },
};
