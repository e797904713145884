/**
 * Checkpoints in a DynamoDB table: one item per (source, tranche, group), written with a
 * condition so that a checkpoint only ever moves forwards, however many processes commit at once
 * (a late commit from a process that lost its lease cannot undo a newer one). `reset` is the
 * only way back.
 *
 * Layout: partition key `p` = source; sort key `k` = `JSON.stringify([group, tranche])`, so that
 * a group's checkpoints share a key prefix; `pos` is the position (a number, exact up to 38
 * digits), plus `g`, `t` and the time of the last write `at`.
 *
 * @module
 */
import {
  type AttributeValue,
  ConditionalCheckFailedException,
  DeleteItemCommand,
  type DynamoDBClient,
  GetItemCommand,
  PutItemCommand,
  QueryCommand,
  type QueryCommandOutput,
  UpdateItemCommand,
} from "@aws-sdk/client-dynamodb";
import { createHash } from "node:crypto";
import type { Position } from "../core/batch.ts";
import {
  checkCheckpointKey,
  type CheckpointKey,
  type CheckpointStore,
  checkPosition,
} from "../core/checkpoints.ts";
import { ImpelError } from "../core/errors.ts";
import { backoff } from "../core/failure.ts";
import { retrying } from "../core/reader.ts";
import {
  checkTableName,
  type DynamoClient,
  ensureTable,
  isTransientDynamoError,
} from "../stores/dynamo.ts";

// Re-exported so that this entry point's documentation can show the client type it takes.
export type { DynamoClient } from "../stores/dynamo.ts";

/**
 * Options of {@linkcode dynamoCheckpoints}.
 *
 * @example
 * ```ts
 * import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
 * import {
 *   createCheckpointTable,
 *   dynamoCheckpoints,
 *   type DynamoCheckpointsOptions,
 * } from "@impel/impel/checkpoints/dynamo";
 * const client = new DynamoDBClient({
 *   endpoint: "http://127.0.0.1:8000",
 *   region: "local",
 *   credentials: { accessKeyId: "local", secretAccessKey: "local" }, // DynamoDB Local takes any
 * });
 * const options: DynamoCheckpointsOptions = { tableName: "orders-checkpoints" };
 * await createCheckpointTable(client, options.tableName);
 * const checkpoints = dynamoCheckpoints(client, options);
 * const saved = await checkpoints.list("dynamo:events-index", "reactor"); // [] at first
 * ```
 */
export interface DynamoCheckpointsOptions {
  /** The table, created by {@linkcode createCheckpointTable}. */
  readonly tableName: string;
}

/**
 * Creates the checkpoint table unless it exists (on-demand billing); waits until it is active.
 *
 * @example
 * ```ts
 * import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
 * import { createCheckpointTable } from "@impel/impel/checkpoints/dynamo";
 * const client = new DynamoDBClient({
 *   endpoint: "http://127.0.0.1:8000",
 *   region: "local",
 *   credentials: { accessKeyId: "local", secretAccessKey: "local" }, // DynamoDB Local takes any
 * });
 * await createCheckpointTable(client, "checkpoints");
 * ```
 */
export async function createCheckpointTable(
  client: DynamoClient,
  tableName: string,
): Promise<void> {
  await ensureTable(client, { tableName, partitionKey: ["p", "S"], sortKey: ["k", "S"] });
}

/**
 * A {@linkcode CheckpointStore} in DynamoDB. The client is the caller's.
 *
 * @example
 * ```ts
 * import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
 * import { createCheckpointTable, dynamoCheckpoints } from "@impel/impel/checkpoints/dynamo";
 * const client = new DynamoDBClient({
 *   endpoint: "http://127.0.0.1:8000",
 *   region: "local",
 *   credentials: { accessKeyId: "local", secretAccessKey: "local" }, // DynamoDB Local takes any
 * });
 * await createCheckpointTable(client, "checkpoints");
 * const checkpoints = dynamoCheckpoints(client, { tableName: "checkpoints" });
 * const key = { source: "dynamo:index", tranche: "0", group: "reactor" };
 * await checkpoints.commit(key, 2_000_015n);
 * await checkpoints.commit(key, 7n); // ignored: never backwards
 * await checkpoints.load(key); // 2000015n
 * ```
 */
export function dynamoCheckpoints(
  dynamo: DynamoClient,
  options: DynamoCheckpointsOptions,
): CheckpointStore {
  // The one cast at this boundary: DynamoClient only narrows the SDK client callers pass.
  const client = dynamo as DynamoDBClient;
  const tableName = checkTableName("tableName", options?.tableName);
  const itemKey = (key: CheckpointKey): Record<string, AttributeValue> => ({
    p: { S: key.source },
    k: { S: sortKey(key.group, key.tranche) },
  });
  const fail = (what: string, key: CheckpointKey | string, e: unknown): never => {
    const where = typeof key === "string" ? key : `${key.source}/${key.tranche}/${key.group}`;
    throw new ImpelError(
      "DynamoCheckpoint",
      `checkpoint ${what} for ${where} failed: ${(e as Error)?.message ?? e}`,
      {
        cause: e,
      },
    );
  };

  // Every call here is idempotent (a commit is conditional on moving forwards), so a transient
  // failure is sent again for a while: throttling, or DynamoDB Local's InternalServerError for a
  // write that waited too long on an item's lock ("… will succeed in actual DynamoDB"), which
  // racing commits of one checkpoint meet. What still fails after RETRY_MS rejects as before.
  const send = <T>(fn: () => Promise<T>): Promise<T> => {
    const deadline = Date.now() + RETRY_MS;
    return retrying(fn, {
      backoff: RETRY,
      signal: NEVER,
      isRetriable: (e) => isTransientDynamoError(e) && Date.now() < deadline,
    });
  };

  return {
    async load(key) {
      checkCheckpointKey(key);
      try {
        const { Item } = await send(() =>
          client.send(
            new GetItemCommand({ TableName: tableName, Key: itemKey(key), ConsistentRead: true }),
          )
        );
        return Item?.pos?.N === undefined ? undefined : BigInt(Item.pos.N);
      } catch (e) {
        return fail("load", key, e);
      }
    },
    async commit(key, position) {
      checkCheckpointKey(key);
      checkPosition(position);
      try {
        await send(() =>
          client.send(
            new UpdateItemCommand({
              TableName: tableName,
              Key: itemKey(key),
              UpdateExpression: "SET pos = :pos, g = :g, t = :t, #at = :at",
              ConditionExpression: "attribute_not_exists(pos) OR pos < :pos",
              ExpressionAttributeNames: { "#at": "at" },
              ExpressionAttributeValues: {
                ":pos": { N: position.toString() },
                ":g": { S: key.group },
                ":t": { S: key.tranche },
                ":at": { S: new Date().toISOString() },
              },
            }),
          )
        );
      } catch (e) {
        // The recorded position is already at or beyond this one: nothing to do.
        if (e instanceof ConditionalCheckFailedException) return;
        fail("commit", key, e);
      }
    },
    async reset(key, position) {
      checkCheckpointKey(key);
      try {
        if (position === undefined) {
          await send(() =>
            client.send(new DeleteItemCommand({ TableName: tableName, Key: itemKey(key) }))
          );
          return;
        }
        checkPosition(position);
        await send(() =>
          client.send(
            new PutItemCommand({
              TableName: tableName,
              Item: {
                ...itemKey(key),
                pos: { N: position.toString() },
                g: { S: key.group },
                t: { S: key.tranche },
                at: { S: new Date().toISOString() },
              },
            }),
          )
        );
      } catch (e) {
        if (e instanceof ImpelError) throw e;
        fail("reset", key, e);
      }
    },
    async list(source, group) {
      checkCheckpointKey({ source, tranche: "any", group: group ?? "any" });
      const out: Array<CheckpointKey & { position: Position }> = [];
      // JSON of [group, tranche] begins with this prefix exactly for the given group; a long
      // pair's key begins with its group's digest.
      const prefixes = group === undefined
        ? [undefined]
        : [`[${JSON.stringify(group)},`, `#${sha256(group)}`].filter((p) => fitsSortKey(p));
      try {
        for (const prefix of prefixes) await listFrom(prefix);
      } catch (e) {
        fail("list", source, e);
      }
      return out;

      async function listFrom(prefix: string | undefined): Promise<void> {
        let start: Record<string, AttributeValue> | undefined;
        do {
          const page: QueryCommandOutput = await send(() =>
            client.send(
              new QueryCommand({
                TableName: tableName,
                KeyConditionExpression: prefix === undefined
                  ? "p = :p"
                  : "p = :p AND begins_with(k, :k)",
                ExpressionAttributeValues: {
                  ":p": { S: source },
                  ...(prefix === undefined ? {} : { ":k": { S: prefix } }),
                },
                ConsistentRead: true,
                ExclusiveStartKey: start,
              }),
            )
          );
          for (const item of page.Items ?? []) {
            const [g, t] = item.k.S!.startsWith("#")
              ? [item.g?.S ?? "", item.t?.S ?? ""]
              : JSON.parse(item.k.S!) as [string, string];
            out.push({ source, tranche: t, group: g, position: BigInt(item.pos.N!) });
          }
          start = page.LastEvaluatedKey;
        } while (start);
      }
    },
  };
}

// Within a final commit's default stop timeout (5 s), with room for the write itself.
const RETRY_MS = 3_000;
const RETRY = backoff({ initialDelayMs: 20, maxDelayMs: 500 });
const NEVER = new AbortController().signal;

// DynamoDB's sort key holds at most 1 024 bytes. A longer [group, tranche] (a partition id near
// the indexer's 1 024-byte limit) is keyed by digests instead, its names kept in `g` and `t`;
// the group's digest leads so that list(source, group) finds it by prefix. Shorter keys keep
// their JSON form, so checkpoints written before stay where they are.
const MAX_SORT_KEY_BYTES = 1024;

function sortKey(group: string, tranche: string): string {
  const json = JSON.stringify([group, tranche]);
  if (fitsSortKey(json)) return json;
  return `#${sha256(group)}${sha256(json)}`;
}

function fitsSortKey(key: string): boolean {
  return new TextEncoder().encode(key).length <= MAX_SORT_KEY_BYTES;
}

function sha256(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}
