/**
 * Connections to the backends (PostgreSQL, MessageDB, DynamoDB, Cosmos DB) and their options, with each
 * backend's failures mapped to exit codes. `pg`, the AWS SDK and impel's backend modules are
 * imported only when a command calls for them. Internal to the `impel` command line.
 *
 * @module
 */
import type { Position } from "../core/batch.ts";
import type { CheckpointStore } from "../core/checkpoints.ts";
import { errorText } from "../core/failure.ts";
import type { Args, OptionSpec } from "./args.ts";
import { CliError, EXIT, isConnectionError, notFound, unavailable, usage } from "./exit.ts";

/** The PostgreSQL connection option. */
export const PG: OptionSpec[] = [
  {
    name: "url",
    kind: "string",
    arg: "URL",
    env: "IMPEL_PG_URL",
    help: "PostgreSQL connection URL (else libpq's PG* variables)",
  },
];

/** Where the PostgreSQL checkpoint table is. */
export const PG_TABLE: OptionSpec[] = [
  {
    name: "schema",
    kind: "string",
    arg: "NAME",
    fallback: "impel",
    help: "schema of the checkpoint table",
  },
  { name: "table", kind: "string", arg: "NAME", fallback: "checkpoints", help: "checkpoint table" },
];

/** The DynamoDB connection options. */
export const DYNAMO: OptionSpec[] = [
  {
    name: "endpoint",
    kind: "string",
    arg: "URL",
    env: "IMPEL_DYNAMO_ENDPOINT",
    help: "DynamoDB endpoint (e.g. DynamoDB Local)",
  },
  { name: "region", kind: "string", arg: "REGION", env: "AWS_REGION", help: "AWS region" },
];

/** The Cosmos DB connection options. */
export const COSMOS: OptionSpec[] = [
  {
    name: "endpoint",
    kind: "string",
    arg: "URL",
    env: "IMPEL_COSMOS_ENDPOINT",
    help: "Cosmos DB account endpoint (plain http: a local test server)",
  },
  { name: "key", kind: "string", arg: "KEY", env: "IMPEL_COSMOS_KEY", help: "account key" },
  {
    name: "database",
    kind: "string",
    arg: "NAME",
    fallback: "impel",
    help: "the database",
  },
];

/** Imports a module on demand; a missing module is "not available" (exit 3), naming `what`. */
export async function load<T>(what: string, importer: () => Promise<T>): Promise<T> {
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

/** The part of a `pg` pool the CLI uses. */
export interface Pool {
  /** Runs one statement. */
  query(text: string, params?: unknown[]): Promise<{ rows: Record<string, unknown>[] }>;
  /** Closes every connection. */
  end(): Promise<void>;
  /** One connection of the pool, for statements that must share it (a transaction). */
  connect(): Promise<
    { query(text: string): Promise<unknown>; release(error?: Error | boolean): void }
  >;
}

/** Runs `fn` with a pool connected per `--url`, closed afterwards; exit 5 when it cannot connect. */
export async function withPostgres<T>(args: Args, fn: (pool: Pool) => Promise<T>): Promise<T> {
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

/**
 * Runs `fn` with a DynamoDB client per `--endpoint` and `--region`, destroyed afterwards;
 * unreachable endpoints exit 5 and missing tables exit 4.
 */
export async function withDynamo<T>(
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

/**
 * Runs `fn` with a Cosmos client per `--endpoint`, `--key` and `--database` (created when
 * `create`); an unreachable endpoint exits 5, a missing database or container 4.
 */
export async function withCosmos<T>(
  args: Args,
  fn: (database: import("@azure/cosmos").Database) => Promise<T>,
  create = false,
): Promise<T> {
  const sdk = await load("the @azure/cosmos package", () => import("@azure/cosmos"));
  const endpoint = args.string("endpoint");
  if (endpoint === undefined) throw usage("--endpoint (or IMPEL_COSMOS_ENDPOINT) is required");
  const key = args.string("key");
  if (key === undefined) throw usage("--key (or IMPEL_COSMOS_KEY) is required");
  // A plain-HTTP endpoint is a local server, whose account lists endpoints it does not serve.
  const client = new sdk.CosmosClient({
    endpoint,
    key,
    connectionPolicy: { enableEndpointDiscovery: !endpoint.startsWith("http://") },
  });
  const id = args.string("database")!;
  try {
    const database = create
      ? (await client.databases.createIfNotExists({ id })).database
      : client.database(id);
    return await fn(database);
  } catch (error) {
    if (error instanceof CliError) throw error;
    const status = (error as { code?: unknown })?.code;
    if (status === 404) throw notFound(`Cosmos DB: ${errorText(error)}`);
    if (isConnectionError(error) || status === "ECONNREFUSED") {
      throw new CliError(
        EXIT.connection,
        "ConnectionFailed",
        `cannot connect to Cosmos DB at ${endpoint}: ${errorText(error)}`,
        { cause: error },
      );
    }
    throw error;
  } finally {
    client.dispose();
  }
}

/**
 * The container `id` of `database`, read once so that a missing database or container is "not
 * found" (exit 4) naming it: the SDK's 404 says neither.
 */
export async function existingContainer(
  database: import("@azure/cosmos").Database,
  id: string,
): Promise<import("@azure/cosmos").Container> {
  const container = database.container(id);
  try {
    await container.read();
  } catch (error) {
    if ((error as { code?: unknown })?.code !== 404) throw error;
    const exists = await database.read().then(() => true, (e) => {
      if ((e as { code?: unknown })?.code === 404) return false;
      throw e;
    });
    throw exists
      ? notFound(`Cosmos container ${id} does not exist in database ${database.id}`)
      : notFound(`Cosmos database ${database.id} does not exist`);
  }
  return container;
}

const sqlState = (error: unknown): string | undefined => {
  for (let e = error, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && /^[0-9A-Z]{5}$/.test(code)) return code;
  }
  return undefined;
};

/** Runs a query against MessageDB's schema, mapping a missing schema to "not available". */
export async function messageDb<T>(fn: () => Promise<T>): Promise<T> {
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

/**
 * The MessageDB category a checkpoint tranche reads: the tranche itself, or for a consumer-group
 * member (`<category>-<member>/<size>`) the part before the `-`, which no category contains.
 */
export const messageDbCategory = (tranche: string): string => tranche.split("-")[0];

/** The tail of the tranche's MessageDB category: its last global position + 1 (1 if empty). */
export async function messageDbHead(pool: Pool, tranche: string): Promise<Position> {
  const category = messageDbCategory(tranche);
  const { rows } = await messageDb(() =>
    pool.query(
      `SELECT (coalesce(max(global_position), 0) + 1)::text AS head FROM message_store.messages
        WHERE message_store.category(stream_name) = $1`,
      [category],
    )
  );
  return BigInt(rows[0].head as string);
}

/**
 * The head of the whole MessageDB store: the next global position it hands out, i.e. the
 * global-position sequence's last value + 1, or the last message's + 1 if higher (the source's
 * own past-tail bound and tail start).
 */
export async function messageDbStoreHead(pool: Pool): Promise<Position> {
  const { rows } = await messageDb(() =>
    pool.query(
      `SELECT (greatest(coalesce((SELECT max(global_position) FROM message_store.messages), 0),
                        coalesce(pg_sequence_last_value(pg_get_serial_sequence(
                          'message_store.messages', 'global_position')::regclass), 0)) + 1
              )::text AS head`,
    )
  );
  return BigInt(rows[0].head as string);
}

/** The PostgreSQL checkpoint store named by `--schema` and `--table`. */
export async function postgresStore(args: Args, pool: Pool): Promise<CheckpointStore> {
  const m = await load("checkpoints/postgres.ts", () => import("../checkpoints/postgres.ts"));
  return m.postgresCheckpoints(pool, {
    schema: args.string("schema"),
    table: args.string("table"),
  });
}

/** Rethrows a checkpoint store's failure, a missing table as "not found" (exit 4). */
export function mapCheckpointError(error: unknown): never {
  if ((error as { code?: string })?.code === "CheckpointTableMissing") {
    throw notFound(`${(error as Error).message} (impel init postgres creates it)`);
  }
  throw error;
}
