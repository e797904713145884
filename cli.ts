/**
 * The `impel` command line: set up backends, inspect and move checkpoints, watch a source, and
 * inspect the DynamoDB index.
 *
 * ```sh
 * deno run -A jsr:@impel/impel/cli <command> [options]    # or: bun run cli.ts <command> [options]
 * ```
 *
 * | command | what it does |
 * | --- | --- |
 * | `init postgres` | creates the PostgreSQL checkpoint table |
 * | `init messagedb` | installs (or with `--uninstall` removes) the MessageDB NOTIFY trigger |
 * | `init dynamo` | creates DynamoDB event, index and checkpoint tables |
 * | `checkpoints show` | lists the checkpoints of a source (and group) |
 * | `checkpoints set` | sets a checkpoint to a position, the start or the tail, or deletes it |
 * | `tail messagedb\|dynamo` | runs a source into a stats-only sink, printing throughput and lag (`tail kafka`: not available, exit 3) |
 * | `index` | shows the DynamoDB index: partitions, open epochs, a stream's entry |
 *
 * Every command takes `--help`. Connections: `--url` or `IMPEL_PG_URL` for PostgreSQL (else
 * libpq's `PG*` variables); `--endpoint` or `IMPEL_DYNAMO_ENDPOINT` and `--region` or
 * `AWS_REGION` for DynamoDB, with credentials from the AWS SDK's usual chain.
 *
 * Exit codes ({@linkcode EXIT}): 0 done; 1 the operation failed; 2 usage error; 3 not available
 * (an impel module or the backend's schema is missing); 4 not found (no checkpoints, no such
 * table or tranche); 5 could not connect.
 *
 * @module
 */
import { describe, ImpelError } from "./core/errors.ts";
import type { Batch, Position } from "./core/batch.ts";
import type { CheckpointStore } from "./core/checkpoints.ts";
import { errorText } from "./core/failure.ts";
import { run, streamsSink } from "./core/sink.ts";
import { memoryCheckpoints } from "./checkpoints/memory.ts";
import { createMetrics, type Lags, type MeteredPipeline } from "./observability/metrics.ts";

/**
 * The exit codes that scripts can rely on.
 *
 * @example
 * ```ts
 * import { EXIT } from "@impel/impel/cli";
 * // impel checkpoints show --source messagedb --group reactor; [ $? -eq 4 ] && echo "none yet"
 * console.log(EXIT.notFound); // 4
 * ```
 */
export const EXIT: {
  readonly ok: 0;
  readonly failed: 1;
  readonly usage: 2;
  readonly unavailable: 3;
  readonly notFound: 4;
  readonly connection: 5;
} = { ok: 0, failed: 1, usage: 2, unavailable: 3, notFound: 4, connection: 5 };

/** Where the CLI reads its environment and writes its output; the real process by default. */
export interface CliIo {
  /** Writes to standard output (no newline added). */
  out(text: string): void;
  /** Writes to standard error (no newline added). */
  err(text: string): void;
  /** An environment variable. */
  env(name: string): string | undefined;
  /** Whether standard output is a terminal (progress bars are drawn only then). */
  readonly isTerminal: boolean;
  /** Aborted to stop a long-running command (Ctrl-C). */
  readonly signal?: AbortSignal;
}

/** A failure with the exit code it maps to. */
class CliError extends ImpelError {
  readonly exitCode: number;
  constructor(exitCode: number, code: string, message: string, options?: ErrorOptions) {
    super(code, message, options);
    this.exitCode = exitCode;
  }
}
const usage = (message: string) => new CliError(EXIT.usage, "Usage", message);
const notFound = (message: string) => new CliError(EXIT.notFound, "NotFound", message);
const unavailable = (message: string, cause?: unknown) =>
  new CliError(EXIT.unavailable, "NotAvailable", `not available: ${message}`, { cause });

// ---------------------------------------------------------------------------------------------
// Options

interface OptionSpec {
  readonly name: string;
  readonly kind: "string" | "boolean" | "list";
  readonly help: string;
  readonly arg?: string;
  readonly fallback?: string;
  readonly env?: string;
}

type Values = Record<string, string | boolean | string[] | undefined>;

interface Parsed {
  readonly values: Values;
  readonly positionals: string[];
}

interface Command {
  readonly path: readonly string[];
  readonly summary: string;
  readonly usage: string;
  readonly details?: string;
  readonly options: readonly OptionSpec[];
  readonly positionals?: number;
  run(args: Args, io: CliIo): Promise<number>;
}

const HELP: OptionSpec = { name: "help", kind: "boolean", help: "show this help" };
const JSON_OUT: OptionSpec = {
  name: "json",
  kind: "boolean",
  help: "print JSON instead of a table",
};
const PG: OptionSpec[] = [
  {
    name: "url",
    kind: "string",
    arg: "URL",
    env: "IMPEL_PG_URL",
    help: "PostgreSQL connection URL (else libpq's PG* variables)",
  },
];
const PG_TABLE: OptionSpec[] = [
  {
    name: "schema",
    kind: "string",
    arg: "NAME",
    fallback: "impel",
    help: "schema of the checkpoint table",
  },
  { name: "table", kind: "string", arg: "NAME", fallback: "checkpoints", help: "checkpoint table" },
];
const DYNAMO: OptionSpec[] = [
  {
    name: "endpoint",
    kind: "string",
    arg: "URL",
    env: "IMPEL_DYNAMO_ENDPOINT",
    help: "DynamoDB endpoint (e.g. DynamoDB Local)",
  },
  { name: "region", kind: "string", arg: "REGION", env: "AWS_REGION", help: "AWS region" },
];

function parse(argv: readonly string[], specs: readonly OptionSpec[]): Parsed {
  const byName = new Map(specs.map((s) => [s.name, s]));
  const values: Values = {};
  const positionals: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--") {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (arg === "-h") {
      values.help = true;
      continue;
    }
    if (!arg.startsWith("--")) {
      if (arg.startsWith("-") && arg.length > 1) throw usage(`unknown option ${arg}`);
      positionals.push(arg);
      continue;
    }
    const eq = arg.indexOf("=");
    const name = arg.slice(2, eq < 0 ? undefined : eq);
    const spec = byName.get(name);
    if (!spec) throw usage(`unknown option --${name}`);
    if (spec.kind === "boolean") {
      if (eq >= 0) throw usage(`--${name} takes no value`);
      values[name] = true;
      continue;
    }
    let value: string;
    if (eq >= 0) value = arg.slice(eq + 1);
    else {
      if (i + 1 >= argv.length) throw usage(`--${name} needs a value (${spec.arg ?? "VALUE"})`);
      value = argv[++i];
    }
    if (value === "") throw usage(`--${name} must not be empty`);
    if (spec.kind === "list") {
      values[name] = [...((values[name] as string[] | undefined) ?? []), ...value.split(",")];
    } else if (values[name] !== undefined) throw usage(`--${name} given twice`);
    else values[name] = value;
  }
  return { values, positionals };
}

/** Typed access to parsed options, with defaults from the spec and the environment. */
class Args {
  constructor(
    readonly command: Command,
    readonly parsed: Parsed,
    readonly io: CliIo,
  ) {}
  string(name: string): string | undefined {
    const spec = this.command.options.find((o) => o.name === name);
    const v = this.parsed.values[name];
    if (typeof v === "string") return v;
    const fromEnv = spec?.env ? this.io.env(spec.env) : undefined;
    return fromEnv || spec?.fallback;
  }
  required(name: string, why = ""): string {
    const v = this.string(name);
    if (v === undefined) throw usage(`--${name} is required${why}`);
    return v;
  }
  flag(name: string): boolean {
    return this.parsed.values[name] === true;
  }
  list(name: string): string[] {
    return (this.parsed.values[name] as string[] | undefined) ?? [];
  }
  integer(name: string, fallback: number, min: number): number {
    const v = this.string(name);
    if (v === undefined) return fallback;
    if (!/^\d+$/.test(v) || Number(v) < min || !Number.isSafeInteger(Number(v))) {
      throw usage(`--${name} must be an integer >= ${min}, got ${describe(v)}`);
    }
    return Number(v);
  }
  seconds(name: string, fallback: number | undefined): number | undefined {
    const v = this.string(name);
    if (v === undefined) return fallback;
    const n = Number(v);
    if (!/^\d+(\.\d+)?$/.test(v) || !(n > 0)) {
      throw usage(`--${name} must be a positive number of seconds, got ${describe(v)}`);
    }
    return n;
  }
  choice<T extends string>(name: string, choices: readonly T[], fallback: T): T {
    const v = this.string(name) ?? fallback;
    if (!choices.includes(v as T)) {
      throw usage(`--${name} must be one of ${choices.join(", ")}, got ${describe(v)}`);
    }
    return v as T;
  }
}

function helpText(c: Command): string {
  const lines = [`${c.summary}\n`, `Usage: impel ${c.usage}\n`];
  if (c.details) lines.push(c.details.trim() + "\n");
  lines.push("Options:");
  for (const o of [...c.options, HELP]) {
    const left = `  --${o.name}${o.arg ? ` ${o.arg}` : ""}`;
    const extra = [o.fallback ? `default ${o.fallback}` : "", o.env ? `env ${o.env}` : ""].filter(
      Boolean,
    ).join("; ");
    lines.push(
      `${left.padEnd(30)} ${o.help}${extra ? ` (${extra})` : ""}${
        o.kind === "list" ? " [repeatable, or comma-separated]" : ""
      }`,
    );
  }
  lines.push("", EXIT_HELP);
  return lines.join("\n") + "\n";
}

const EXIT_HELP =
  "Exit codes: 0 done, 1 failed, 2 usage error, 3 not available, 4 not found, 5 cannot connect.";

// ---------------------------------------------------------------------------------------------
// Backends, loaded only when a command needs them

async function load<T>(what: string, importer: () => Promise<T>): Promise<T> {
  try {
    return await importer();
  } catch (error) {
    if (
      (error as { code?: string })?.code === "ERR_MODULE_NOT_FOUND" ||
      /module not found|cannot find module/i.test(String(error))
    ) {
      throw unavailable(
        `${what} missing (${String((error as Error)?.message ?? error).split("\n")[0]})`,
        error,
      );
    }
    throw error;
  }
}

const CONNECTION_CODES = new Set([
  "ECONNREFUSED",
  "ENOTFOUND",
  "EHOSTUNREACH",
  "ECONNRESET",
  "ETIMEDOUT",
  "EAI_AGAIN",
  "3D000",
  "28P01",
  "28000",
]);

function isConnectionError(error: unknown): boolean {
  for (let e = error, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && CONNECTION_CODES.has(code)) return true;
    if (/ECONNREFUSED|connection refused|getaddrinfo/i.test(String((e as Error).message ?? ""))) {
      return true;
    }
    const errors = (e as { errors?: unknown[] }).errors;
    if (Array.isArray(errors) && errors.some(isConnectionError)) return true;
  }
  return false;
}

interface Pool {
  query(text: string, params?: unknown[]): Promise<{ rows: Record<string, unknown>[] }>;
  end(): Promise<void>;
}

async function withPostgres<T>(args: Args, fn: (pool: Pool) => Promise<T>): Promise<T> {
  const pg = await load("the pg package", () => import("pg"));
  const url = args.string("url");
  const pool = new pg.default.Pool({
    connectionString: url,
    max: 4,
    connectionTimeoutMillis: 10_000,
  });
  pool.on("error", () => {}); // idle clients that lose the server are replaced on the next query
  try {
    try {
      await pool.query("SELECT 1");
    } catch (error) {
      throw new CliError(
        EXIT.connection,
        "ConnectionFailed",
        `cannot connect to PostgreSQL${url ? ` at ${redact(url)}` : ""}: ${errorText(error)}`,
        {
          cause: error,
        },
      );
    }
    return await fn(pool);
  } finally {
    await pool.end();
  }
}

const redact = (url: string) => url.replace(/\/\/([^:@/]+):[^@/]*@/, "//$1:***@");

async function withDynamo<T>(
  args: Args,
  fn: (client: import("@aws-sdk/client-dynamodb").DynamoDBClient) => Promise<T>,
): Promise<T> {
  const sdk = await load(
    "the @aws-sdk/client-dynamodb package",
    () => import("@aws-sdk/client-dynamodb"),
  );
  const region = args.string("region") ?? args.io.env("AWS_DEFAULT_REGION");
  if (region === undefined) throw usage("--region (or AWS_REGION) is required for DynamoDB");
  const endpoint = args.string("endpoint");
  const client = new sdk.DynamoDBClient({
    region,
    ...(endpoint ? { endpoint } : {}),
    maxAttempts: 2,
  });
  try {
    return await fn(client);
  } catch (error) {
    if (error instanceof CliError) throw error;
    if (isConnectionError(error)) {
      throw new CliError(
        EXIT.connection,
        "ConnectionFailed",
        `cannot connect to DynamoDB${endpoint ? ` at ${endpoint}` : ""}: ${errorText(error)}`,
        {
          cause: error,
        },
      );
    }
    if ((error as Error)?.name === "ResourceNotFoundException") {
      throw notFound(`DynamoDB: ${(error as Error).message}`);
    }
    throw error;
  } finally {
    client.destroy();
  }
}

const sqlState = (error: unknown): string | undefined => {
  for (let e = error, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && /^[0-9A-Z]{5}$/.test(code)) return code;
  }
  return undefined;
};

/** Runs a query against MessageDB's schema, mapping a missing schema to "not available". */
async function messageDb<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (error) {
    const state = sqlState(error);
    if (state === "3F000" || state === "42P01" || state === "42883") {
      throw unavailable(`this database has no MessageDB schema (${errorText(error)})`, error);
    }
    throw error;
  }
}

async function messageDbHead(pool: Pool, tranche: string): Promise<Position> {
  const category = tranche.split(":")[0];
  const { rows } = await messageDb(() =>
    pool.query(
      `SELECT (coalesce(max(global_position), 0) + 1)::text AS head FROM message_store.messages
        WHERE message_store.category(stream_name) = $1`,
      [category],
    )
  );
  return BigInt(rows[0].head as string);
}

async function postgresStore(args: Args, pool: Pool): Promise<CheckpointStore> {
  const m = await load("checkpoints/postgres.ts", () => import("./checkpoints/postgres.ts"));
  return m.postgresCheckpoints(pool, {
    schema: args.string("schema"),
    table: args.string("table"),
  });
}

function mapCheckpointError(error: unknown): never {
  if ((error as { code?: string })?.code === "CheckpointTableMissing") {
    throw notFound(`${(error as Error).message} (impel init postgres creates it)`);
  }
  throw error;
}

// ---------------------------------------------------------------------------------------------
// Commands

const initPostgres: Command = {
  path: ["init", "postgres"],
  summary: "Creates the PostgreSQL checkpoint table (and its schema) unless it exists.",
  usage: "init postgres [--url URL] [--schema NAME] [--table NAME]",
  options: [...PG, ...PG_TABLE],
  run: (args) =>
    withPostgres(args, async (pool) => {
      const m = await load("checkpoints/postgres.ts", () => import("./checkpoints/postgres.ts"));
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

const initMessageDb: Command = {
  path: ["init", "messagedb"],
  summary:
    "Installs the MessageDB trigger that wakes MessageDB sources within milliseconds of an append.",
  usage: "init messagedb [--url URL] [--channel NAME] [--uninstall]",
  details:
    "The database must already hold MessageDB's schema (tools/postgres.sh or Eventide's installer).",
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
      const m = await load("sources/messagedb.ts", () => import("./sources/messagedb.ts"));
      const channel = args.string("channel");
      await messageDb(async () => {
        // The trigger creation reports a missing schema through its own error class.
        await pool.query("SELECT message_store.message_store_version()");
        if (args.flag("uninstall")) await m.uninstallNotifyTrigger(pool, { channel });
        else await m.installNotifyTrigger(pool, { channel });
      });
      args.io.out(
        `MessageDB notify trigger for channel ${channel} ${
          args.flag("uninstall") ? "removed" : "installed"
        }\n`,
      );
      return EXIT.ok;
    }),
};

const initDynamo: Command = {
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
        const m = await load("stores/dynamo.ts", () => import("./stores/dynamo.ts"));
        await m.createEventTable(client, events);
        args.io.out(`events table ${events} is ready\n`);
      }
      if (index) {
        const m = await load(
          "stores/dynamo-indexer.ts",
          () => import("./stores/dynamo-indexer.ts"),
        );
        await m.createIndexTable(client, index);
        args.io.out(`index table ${index} is ready\n`);
      }
      if (cps) {
        const m = await load("checkpoints/dynamo.ts", () => import("./checkpoints/dynamo.ts"));
        await m.createCheckpointTable(client, cps);
        args.io.out(`checkpoint table ${cps} is ready\n`);
      }
      return EXIT.ok;
    });
  },
};

const STORE: OptionSpec[] = [
  {
    name: "store",
    kind: "string",
    arg: "KIND",
    fallback: "postgres",
    help: "where checkpoints are kept: postgres or dynamo",
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
  ...DYNAMO,
];

async function withStore<T>(
  args: Args,
  fn: (store: CheckpointStore, tail: (tranche: string) => Promise<Position>) => Promise<T>,
): Promise<T> {
  const kind = args.choice("store", ["postgres", "dynamo"] as const, "postgres");
  if (kind === "postgres") {
    return await withPostgres(
      args,
      async (pool) => fn(await postgresStore(args, pool), (t) => messageDbHead(pool, t)),
    );
  }
  return await withDynamo(args, async (client) => {
    const m = await load("checkpoints/dynamo.ts", () => import("./checkpoints/dynamo.ts"));
    const store = m.dynamoCheckpoints(client, { tableName: args.required("table") });
    const tail = async (tranche: string) => {
      const indexTable = args.required("index-table", " for --position tail with --store dynamo");
      const idx = await load(
        "stores/dynamo-indexer.ts",
        () => import("./stores/dynamo-indexer.ts"),
      );
      const src = await load("sources/dynamo.ts", () => import("./sources/dynamo.ts"));
      const tip = await idx.dynamoIndexer(client, { indexTable }).tip(tranche);
      return src.encodePosition(tip.epoch, tip.offset);
    };
    return await fn(store, tail);
  });
}

function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join("  "))
    .join("\n") + "\n";
}

const checkpointsShow: Command = {
  path: ["checkpoints", "show"],
  summary: "Lists the checkpoints of a source, for one group or all.",
  usage: "checkpoints show --source NAME [--group NAME] [--store postgres|dynamo] [--json]",
  details: "Exits 4 when there is no checkpoint to show.",
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

const checkpointsSet: Command = {
  path: ["checkpoints", "set"],
  summary:
    "Sets one checkpoint (backwards too), or deletes it. Stop the pipeline first: its own commits would move it on.",
  usage:
    "checkpoints set --source NAME --group NAME --tranche NAME (--position N|start|tail | --delete)",
  details: `
--position start sets 0, before the first item of every built-in source. --position tail asks the
backend for its head: with --store postgres the MessageDB category of the tranche in the same
database; with --store dynamo the open epoch of the index partition (--index-table). The previous
position is printed so that the change can be undone.`,
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
    return await withStore(args, async (store, tail) => {
      const previous = await store.load(key).catch(mapCheckpointError);
      const position = given === undefined
        ? undefined
        : given === "start"
        ? 0n
        : given === "tail"
        ? await tail(key.tranche)
        : BigInt(given);
      await store.reset(key, position).catch(mapCheckpointError);
      args.io.out(
        `checkpoint ${key.source}/${key.tranche}/${key.group}: ${previous ?? "none"} -> ${
          position ?? "deleted"
        }\n`,
      );
      return EXIT.ok;
    });
  },
};

// ---------------------------------------------------------------------------------------------
// tail

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

function createProgress(args: Args, pipeline: MeteredPipeline, started: number) {
  const io = args.io;
  let last = { at: started, handled: 0 };
  let drawn = false;
  const fmt = (n: number) => Math.round(n).toLocaleString("en-US");
  return {
    async print(stats: ReturnType<MeteredPipeline["stats"]>, final: boolean) {
      const lags: Lags = await pipeline.lags(stats).catch(() => ({ tranches: new Map() }));
      const now = performance.now();
      const handled = stats.counters.handled;
      const rate = (handled - last.handled) / Math.max(1e-3, (now - last.at) / 1000);
      last = { at: now, handled };
      let total = 0;
      for (const t of lags.tranches.values()) total += t.lag ?? 0;
      const caughtUp = stats.tranches.length > 0 && stats.tranches.every((t) => t.isTail) &&
        stats.uncompletedBatches === 0 && total === 0;
      // Done over done plus remaining: lag is in position units, so this is indicative only.
      const fraction = total === 0 ? (caughtUp ? 1 : 0) : handled / (handled + total);
      if (args.flag("json")) {
        io.out(
          JSON.stringify({
            elapsedMs: Math.round(now - started),
            handled,
            eventsPerSecond: Math.round(
              final ? handled / Math.max(1e-3, (now - started) / 1000) : rate,
            ),
            caughtUp,
            progress: Number(fraction.toFixed(4)),
            tranches: pipeline.tranches(stats).map((tranche) => {
              const t = stats.tranches.find((x) => x.tranche === tranche);
              const lag = lags.tranches.get(tranche);
              return {
                tranche,
                completed: t?.completed?.toString() ?? null,
                head: lag?.head.toString() ?? null,
                lag: lag?.lag ?? null,
                isTail: t?.isTail ?? false,
              };
            }),
            ...(final ? { final: true } : {}),
          }) + "\n",
        );
        return;
      }
      const lagText = lags.tranches.size === 0 ? "lag unknown" : `lag ${fmt(total)}`;
      if (final) {
        const secs = (now - started) / 1000;
        if (drawn) io.out("\r\x1b[K");
        io.out(
          `${fmt(handled)} events in ${secs.toFixed(1)} s (${
            fmt(handled / Math.max(secs, 1e-3))
          }/s); ${lagText}${caughtUp ? "; caught up" : ""}\n`,
        );
        return;
      }
      const width = 30, filled = Math.round(Math.max(0, Math.min(1, fraction)) * width);
      const bar = caughtUp
        ? "at tail"
        : `[${"#".repeat(filled)}${"-".repeat(width - filled)}] ${(fraction * 100).toFixed(1)}%`;
      const line = `${fmt(rate)} events/s, ${fmt(handled)} handled, ${lagText}, ${bar}`;
      if (io.isTerminal) {
        io.out(`\r\x1b[K${line}`);
        drawn = true;
      } else io.out(line + "\n");
    },
  };
}

const tailMessageDb: Command = {
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
      const m = await load("sources/messagedb.ts", () => import("./sources/messagedb.ts"));
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

const tailDynamo: Command = {
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
      const src = await load("sources/dynamo.ts", () => import("./sources/dynamo.ts"));
      const idx = await load(
        "stores/dynamo-indexer.ts",
        () => import("./stores/dynamo-indexer.ts"),
      );
      const sdk = await import("@aws-sdk/client-dynamodb");
      await client.send(new sdk.DescribeTableCommand({ TableName: indexTable }));
      let checkpoints: CheckpointStore = memoryCheckpoints();
      if (cpTable) {
        const cps = await load("checkpoints/dynamo.ts", () => import("./checkpoints/dynamo.ts"));
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

const tailKafka: Command = {
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

// ---------------------------------------------------------------------------------------------
// index

const indexCommand: Command = {
  path: ["index"],
  summary:
    "Shows the DynamoDB index: its partitions with their open epochs, closed epochs, or one stream's entry.",
  usage:
    "index [--endpoint URL] --region REGION --index-table NAME [--partition P] [--epochs] [--stream NAME] [--json]",
  options: [
    ...DYNAMO,
    { name: "index-table", kind: "string", arg: "NAME", help: "the index table" },
    { name: "partition", kind: "string", arg: "P", help: "only this partition" },
    { name: "epochs", kind: "boolean", help: "also list each closed epoch's entry count" },
    { name: "stream", kind: "string", arg: "NAME", help: "show how far this stream is indexed" },
    JSON_OUT,
  ],
  async run(args) {
    const indexTable = args.required("index-table");
    return await withDynamo(args, async (client) => {
      const idx = await load(
        "stores/dynamo-indexer.ts",
        () => import("./stores/dynamo-indexer.ts"),
      );
      const sdk = await import("@aws-sdk/client-dynamodb");
      const get = async (p: string, i: number) =>
        (await client.send(
          new sdk.GetItemCommand({
            TableName: indexTable,
            Key: { p: { S: p }, i: { N: String(i) } },
            ConsistentRead: true,
          }),
        ))
          .Item;
      const num = (v: { N?: string } | undefined) => (v?.N === undefined ? undefined : Number(v.N));
      const stream = args.string("stream");
      if (stream !== undefined) {
        const item = await get(`$stream#${stream}`, 0);
        if (!item) {
          args.io.err(`stream ${stream} is not in index ${indexTable}\n`);
          return EXIT.notFound;
        }
        const entry = {
          stream,
          nextVersion: num(item.n),
          partition: item.pt?.S,
          epoch: num(item.ep),
        };
        args.io.out(
          args.flag("json")
            ? JSON.stringify(entry) + "\n"
            : `stream ${stream}: indexed up to version ${entry.nextVersion} in partition ${entry.partition}, epoch ${entry.epoch}\n`,
        );
        return EXIT.ok;
      }
      const all = [...((await get(idx.PARTITIONS_KEY, 0))?.ps?.SS ?? [])].sort();
      const only = args.string("partition");
      const partitions = only === undefined ? all : all.filter((p) => p === only);
      if (partitions.length === 0) {
        args.io.err(
          only === undefined
            ? `index ${indexTable} has no partitions yet\n`
            : `index ${indexTable} has no partition ${only}\n`,
        );
        return EXIT.notFound;
      }
      const indexer = idx.dynamoIndexer(client, { indexTable });
      const rows = [];
      for (const partition of partitions) {
        const tip = await indexer.tip(partition);
        const epochs: Array<{ epoch: number; entries: number | undefined }> = [];
        if (args.flag("epochs")) {
          for (let e = Math.max(0, tip.epoch - 100); e < tip.epoch; e++) {
            epochs.push({
              epoch: e,
              entries: num((await get(idx.epochKey(partition, e), idx.EPOCH_FACTOR))?.c),
            });
          }
        }
        rows.push({
          partition,
          epoch: tip.epoch,
          entries: tip.offset,
          bytes: tip.bytes,
          streams: tip.streams,
          closedEpochs: epochs,
        });
      }
      if (args.flag("json")) {
        args.io.out(JSON.stringify({ indexTable, partitions: rows }) + "\n");
        return EXIT.ok;
      }
      args.io.out(`index ${indexTable}: ${all.length} partition${all.length === 1 ? "" : "s"}\n`);
      args.io.out(table([
        ["PARTITION", "OPEN EPOCH", "ENTRIES", "BYTES", "STREAMS"],
        ...rows.map((
          r,
        ) => [r.partition, String(r.epoch), String(r.entries), String(r.bytes), String(r.streams)]),
      ]));
      for (const r of rows) {
        for (const e of r.closedEpochs) {
          args.io.out(
            `  partition ${r.partition} epoch ${e.epoch}: ${e.entries ?? "?"} entries (closed)\n`,
          );
        }
      }
      return EXIT.ok;
    });
  },
};

const COMMANDS: readonly Command[] = [
  initPostgres,
  initMessageDb,
  initDynamo,
  checkpointsShow,
  checkpointsSet,
  tailMessageDb,
  tailDynamo,
  tailKafka,
  indexCommand,
];

function overview(prefix: readonly string[] = []): string {
  const list = COMMANDS.filter((c) => prefix.every((p, i) => c.path[i] === p));
  const lines = [
    "impel: set up backends, inspect checkpoints, watch sources.\n",
    `Usage: impel ${
      prefix.length ? prefix.join(" ") + " " : ""
    }<command> [options]   (every command takes --help)\n`,
    "Commands:",
    ...list.map((c) =>
      `  ${c.path.join(" ").padEnd(22)} ${c.summary.split(". ")[0].replace(/\.$/, "")}`
    ),
    "",
    EXIT_HELP,
  ];
  return lines.join("\n") + "\n";
}

/**
 * Runs the CLI with `argv` (without the program name) and returns the exit code; never exits
 * the process itself.
 *
 * @example
 * ```ts
 * import { main } from "@impel/impel/cli";
 * let text = "";
 * const code = await main(["--help"], { out: (t) => void (text += t), err: () => {}, env: () => undefined, isTerminal: false });
 * console.log(code, text.includes("checkpoints show")); // 0 true
 * ```
 */
export async function main(argv: readonly string[], io: CliIo = processIo()): Promise<number> {
  const first = argv.findIndex((a) => a.startsWith("-"));
  const words = first < 0 ? [...argv] : argv.slice(0, first);
  const wantsHelp = argv.includes("--help") || argv.includes("-h");
  const asked = words[0] === "help" ? words.slice(1) : words;
  const command = COMMANDS.find((c) =>
    c.path.length <= asked.length && c.path.every((p, i) => asked[i] === p)
  );
  if (command && words[0] === "help") {
    io.out(helpText(command));
    return EXIT.ok;
  }
  if (!command) {
    const group = COMMANDS.some((c) => c.path[0] === asked[0]) ? asked.slice(0, 1) : [];
    if (
      (asked.length === 0 || (group.length === 1 && asked.length === 1)) &&
      (wantsHelp || words[0] === "help")
    ) {
      io.out(overview(group));
      return EXIT.ok;
    }
    const problem = asked.length === 0
      ? "a command is needed"
      : group.length === 1 && asked.length === 1
      ? `${asked[0]} needs a subcommand`
      : `unknown command ${JSON.stringify(asked.join(" "))}`;
    io.err(`impel: ${problem}\n\n${overview(group)}`);
    return EXIT.usage;
  }
  try {
    const parsed = parse(argv.slice(command.path.length), [...command.options, HELP]);
    if (parsed.values.help) {
      io.out(helpText(command));
      return EXIT.ok;
    }
    if (parsed.positionals.length > (command.positionals ?? 0)) {
      throw usage(`unexpected argument ${JSON.stringify(parsed.positionals[0])}`);
    }
    return await command.run(new Args(command, parsed, io), io);
  } catch (error) {
    if (error instanceof CliError) {
      io.err(`impel ${command.path.join(" ")}: ${error.message}\n`);
      if (error.exitCode === EXIT.usage) {
        io.err(`usage: impel ${command.usage}\n(see impel ${command.path.join(" ")} --help)\n`);
      }
      return error.exitCode;
    }
    if (isConnectionError(error)) {
      io.err(`impel ${command.path.join(" ")}: cannot connect: ${errorText(error)}\n`);
      return EXIT.connection;
    }
    if (error instanceof ImpelError && error.code === "InvalidArgument") {
      io.err(`impel ${command.path.join(" ")}: ${error.message}\n`);
      return EXIT.usage;
    }
    io.err(`impel ${command.path.join(" ")}: ${errorText(error)}\n`);
    return EXIT.failed;
  }
}

// ---------------------------------------------------------------------------------------------
// The process, on Deno or Bun

interface DenoLike {
  readonly args: string[];
  exit(code: number): never;
  readonly env: { get(name: string): string | undefined };
  readonly stdout: { writeSync(p: Uint8Array): number; isTerminal(): boolean };
  readonly stderr: { writeSync(p: Uint8Array): number };
  addSignalListener(signal: "SIGINT" | "SIGTERM", handler: () => void): void;
}
interface ProcessLike {
  readonly argv: string[];
  exit(code: number): never;
  readonly env: Record<string, string | undefined>;
  readonly stdout: { write(s: string): boolean; readonly isTTY?: boolean };
  readonly stderr: { write(s: string): boolean };
  on(signal: "SIGINT" | "SIGTERM", handler: () => void): void;
}
const runtime = globalThis as unknown as { Deno?: DenoLike; process?: ProcessLike };

function writeAll(w: { writeSync(p: Uint8Array): number }, text: string) {
  let bytes = new TextEncoder().encode(text);
  while (bytes.length > 0) bytes = bytes.subarray(w.writeSync(bytes));
}

/**
 * The real process's output, environment and Ctrl-C, on Deno or Bun. Ctrl-C is taken over only
 * once a command asks for `signal` (tail, to stop cleanly and print a summary); a second Ctrl-C,
 * or one during any other command, ends the process with 130.
 */
function processIo(): CliIo {
  const deno = runtime.Deno;
  const proc = runtime.process;
  let ac: AbortController | undefined;
  const onSignal = () => {
    if (ac === undefined || ac.signal.aborted) return deno ? deno.exit(130) : proc!.exit(130);
    ac.abort();
  };
  const signal = () => {
    if (ac === undefined) {
      ac = new AbortController();
      for (const s of ["SIGINT", "SIGTERM"] as const) {
        deno ? deno.addSignalListener(s, onSignal) : proc!.on(s, onSignal);
      }
    }
    return ac.signal;
  };
  if (deno) {
    return {
      out: (t) => writeAll(deno.stdout, t),
      err: (t) => writeAll(deno.stderr, t),
      env: (name) => deno.env.get(name),
      isTerminal: deno.stdout.isTerminal(),
      get signal() {
        return signal();
      },
    };
  }
  return {
    out: (t) => void proc!.stdout.write(t),
    err: (t) => void proc!.stderr.write(t),
    env: (name) => proc!.env[name],
    isTerminal: proc!.stdout.isTTY === true,
    get signal() {
      return signal();
    },
  };
}

if (import.meta.main) {
  const args = runtime.Deno ? runtime.Deno.args : runtime.process!.argv.slice(2);
  const code = await main(args);
  if (runtime.Deno) runtime.Deno.exit(code);
  else runtime.process!.exit(code);
}
