/**
 * A {@linkcode CheckpointStore} in a Cosmos DB container (partition key `/p`): one document per
 * (source, tranche, group), in the partition `{source}/{group}`, holding the position (decimal
 * text, exact past 2^53) and, for sources that resume from one, an opaque token (`tokens`: the
 * Cosmos source keeps its change-feed continuations here). Writes are conditioned on the
 * document's etag, so a checkpoint never moves backwards whatever commits race.
 *
 * Fenced commits: keep the leases in the same container (`cosmosLeases(container)` of
 * `leases/cosmos.ts`, whose scopes are `{source}/{group}`, the checkpoints' partitions). A fenced
 * commit reads the committer's lease and writes it back unchanged, conditioned on its etag, in
 * one transactional batch with the checkpoint's write: if the lease moved in between (renewed
 * by no one else, taken, released), the batch fails and the lease is looked at again. A lease
 * that is not the committer's current, unexpired one is a {@linkcode StaleCommitError}; expiry is
 * judged on this process's clock, as the lease store does.
 *
 * @module
 */
import {
  BulkOperationType,
  type Container,
  type JSONObject,
  type OperationInput,
} from "@azure/cosmos";
import type { Position } from "../core/batch.ts";
import {
  checkCheckpoint,
  checkCheckpointKey,
  checkFence,
  type Checkpoint,
  type CheckpointFence,
  type CheckpointKey,
  type CheckpointStore,
  checkPosition,
  StaleCommitError,
} from "../core/checkpoints.ts";
import { ImpelError, InvalidArgumentError } from "../core/errors.ts";
import { type CosmosLeaseDocument, leaseDocumentId } from "../leases/cosmos.ts";
import {
  type CosmosContainer,
  type CosmosDatabase,
  documentId,
  ensureCosmosContainer,
  errorText,
  statusOf,
} from "../stores/cosmos.ts";

export type { Checkpoint, CheckpointKey, CheckpointStore } from "../core/checkpoints.ts";

/** Commits that lose a race with another writer of the same checkpoint try again this often. */
const RACE_ATTEMPTS = 10;

/**
 * A Cosmos checkpoint store: `fenced` against the leases of its own container, keeping tokens.
 *
 * @example
 * ```ts
 * import { CosmosClient } from "@azure/cosmos";
 * import { type CosmosCheckpointStore, cosmosCheckpoints } from "@impel/impel/checkpoints/cosmos";
 * const client = new CosmosClient({ endpoint: "https://my-account.documents.azure.com", key: "<account key>" });
 * const checkpoints: CosmosCheckpointStore = cosmosCheckpoints(client.database("app").container("aux"));
 * console.log(checkpoints.fenced, checkpoints.tokens, checkpoints.fenceLocation); // true true "cosmos app/aux"
 * ```
 */
export interface CosmosCheckpointStore extends CheckpointStore {
  /** The container the checkpoints (and the leases that fence them) are kept in. */
  readonly container: CosmosContainer;
  /** Always true: fences are checked against the leases of the same container. */
  readonly fenced: true;
  /** Always true: tokens are kept with positions. */
  readonly tokens: true;
  /** `cosmos {database}/{container}`, as `cosmosLeases` over the same container names it. */
  readonly fenceLocation: string;
  /** The committed position and its token. */
  loadCheckpoint(key: CheckpointKey): Promise<Checkpoint | undefined>;
  /** Records a position with its token (never backwards; fenced as `commit`). */
  commitCheckpoint(
    key: CheckpointKey,
    checkpoint: Checkpoint,
    fence?: CheckpointFence,
  ): Promise<void>;
}

/**
 * A checkpoint commit kept losing races with other writers of the same checkpoint, or Cosmos
 * refused its write.
 *
 * @example
 * ```ts
 * import { CosmosCheckpointError } from "@impel/impel/checkpoints/cosmos";
 * const e = new CosmosCheckpointError({ source: "cosmos:events", tranche: "0", group: "g" }, "refused (413)");
 * console.log(e.code); // "CosmosCheckpoint"
 * ```
 */
export class CosmosCheckpointError extends ImpelError {
  /** The checkpoint concerned. */
  readonly key: CheckpointKey;
  /** Creates the error; `problem` says what went wrong. */
  constructor(key: CheckpointKey, problem: string, options?: ErrorOptions) {
    super(
      "CosmosCheckpoint",
      `commit of ${key.source}/${key.tranche}/${key.group} failed: ${problem}`,
      options,
    );
    this.key = key;
  }
}

/**
 * Creates the container for checkpoints (and leases: keep both in one container, so that commits
 * can be fenced) unless it exists; partition key `/p`.
 *
 * @example
 * ```ts
 * import { CosmosClient } from "@azure/cosmos";
 * import { cosmosCheckpoints, initCosmosCheckpoints } from "@impel/impel/checkpoints/cosmos";
 * const client = new CosmosClient({ endpoint: "https://my-account.documents.azure.com", key: "<account key>" });
 * const { database } = await client.databases.createIfNotExists({ id: "app" });
 * const checkpoints = cosmosCheckpoints(await initCosmosCheckpoints(database, "aux"));
 * ```
 */
export function initCosmosCheckpoints(
  database: CosmosDatabase,
  containerId: string,
): Promise<CosmosContainer> {
  return ensureCosmosContainer(database, containerId);
}

/**
 * The partition of a checkpoint's document: `{source}/{group}`, the lease scope of the source's
 * consumer group, so that a commit can be fenced by its lease in one batch.
 *
 * @example
 * ```ts
 * import { checkpointPartition } from "@impel/impel/checkpoints/cosmos";
 * console.log(checkpointPartition({ source: "cosmos:events", tranche: "0", group: "g" })); // "cosmos:events/g"
 * ```
 */
export function checkpointPartition(key: CheckpointKey): string {
  return `${key.source}/${key.group}`;
}

interface CheckpointDocument {
  readonly id: string;
  readonly p: string;
  readonly kind: "checkpoint";
  readonly source: string;
  readonly tranche: string;
  readonly group: string;
  readonly position: string;
  readonly token?: string;
  readonly ts: number;
  readonly _etag?: string;
}

/**
 * The checkpoint store over `container` (made by {@linkcode initCosmosCheckpoints}).
 *
 * @example
 * ```ts
 * import { CosmosClient } from "@azure/cosmos";
 * import { cosmosCheckpoints } from "@impel/impel/checkpoints/cosmos";
 * const client = new CosmosClient({ endpoint: "https://my-account.documents.azure.com", key: "<account key>" });
 * const checkpoints = cosmosCheckpoints(client.database("app").container("aux"));
 * const key = { source: "cosmos:events", tranche: "0", group: "reactor" };
 * await checkpoints.commit(key, 10n);
 * await checkpoints.commit(key, 5n); // ignored: never backwards
 * console.log(await checkpoints.load(key)); // 10n
 * ```
 */
export function cosmosCheckpoints(kept: CosmosContainer): CosmosCheckpointStore {
  if (kept === null || typeof kept !== "object" || typeof kept.item !== "function") {
    throw new InvalidArgumentError("container", "must be a Container of @azure/cosmos");
  }
  // The interface only narrows the SDK's Container, which callers are documented to pass.
  const container = kept as unknown as Container;

  async function read(key: CheckpointKey): Promise<CheckpointDocument | undefined> {
    checkCheckpointKey(key);
    const id = await documentId("cp", [key.source, key.tranche, key.group]);
    const { resource } = await container.item(id, checkpointPartition(key))
      .read<CheckpointDocument>();
    return resource;
  }

  async function body(key: CheckpointKey, checkpoint: Checkpoint): Promise<CheckpointDocument> {
    return {
      id: await documentId("cp", [key.source, key.tranche, key.group]),
      p: checkpointPartition(key),
      kind: "checkpoint",
      source: key.source,
      tranche: key.tranche,
      group: key.group,
      position: checkpoint.position.toString(),
      ...(checkpoint.token === undefined ? {} : { token: checkpoint.token }),
      ts: Date.now(),
    };
  }

  async function commitCheckpoint(
    key: CheckpointKey,
    checkpoint: Checkpoint,
    fence?: CheckpointFence,
  ): Promise<void> {
    checkCheckpointKey(key);
    checkCheckpoint(checkpoint);
    const partition = checkpointPartition(key);
    if (fence !== undefined) {
      checkFence(fence);
      // A fence is the lease of the tranche committed: another unit's lease proves nothing.
      if (fence.unit !== key.tranche) {
        throw new InvalidArgumentError(
          "fence.unit",
          `must be the tranche committed (${key.tranche}), got ${fence.unit}`,
        );
      }
      if (fence.scope !== partition) {
        throw new InvalidArgumentError(
          "fence.scope",
          `must be ${
            JSON.stringify(partition)
          } ({source}/{group}, where the checkpoint is kept), ` +
            `got ${JSON.stringify(fence.scope)}`,
        );
      }
    }
    const next = await body(key, checkpoint);
    const leaseId = fence === undefined ? undefined : await leaseDocumentId(fence.unit);
    let failure: unknown;
    for (let attempt = 1; attempt <= RACE_ATTEMPTS; attempt++) {
      const [doc, lease] = await Promise.all([
        read(key),
        leaseId === undefined
          ? undefined
          : container.item(leaseId, partition).read<CosmosLeaseDocument>().then((r) => r.resource),
      ]);
      if (
        fence !== undefined &&
        (lease === undefined || lease.owner !== fence.owner ||
          BigInt(lease.generation) !== fence.generation || lease.expiresAt <= Date.now())
      ) {
        throw new StaleCommitError(key, checkpoint.position, fence);
      }
      if (doc !== undefined && BigInt(doc.position) >= checkpoint.position) return;
      const write: OperationInput = doc === undefined
        ? {
          operationType: BulkOperationType.Create,
          partitionKey: partition,
          resourceBody: next as unknown as JSONObject,
        }
        : {
          operationType: BulkOperationType.Replace,
          partitionKey: partition,
          id: next.id,
          resourceBody: next as unknown as JSONObject,
          ifMatch: doc._etag,
        };
      const operations: OperationInput[] = lease === undefined ? [write] : [
        // The lease first, unchanged: the batch holds only while nobody else wrote it.
        {
          operationType: BulkOperationType.Replace,
          partitionKey: partition,
          id: lease.id,
          resourceBody: strip(lease) as JSONObject,
          ifMatch: lease._etag,
        },
        write,
      ];
      try {
        const { result } = await container.items.batch(operations, partition);
        const statuses = (result ?? []).map((r) => r.statusCode);
        if (statuses.length === operations.length && statuses.every((s) => s >= 200 && s < 300)) {
          return;
        }
        if (!statuses.some((s) => s === 409 || s === 412)) {
          throw new CosmosCheckpointError(
            key,
            `Cosmos refused the write (operation statuses ${statuses.join(", ")})`,
          );
        }
      } catch (e) {
        if (e instanceof CosmosCheckpointError) throw e;
        const status = statusOf(e);
        if (status !== 409 && status !== 412) {
          throw new CosmosCheckpointError(key, `Cosmos refused the write: ${errorText(e)}`, {
            cause: e,
          });
        }
        failure = e;
      }
      // Another writer got there first: look again (the checkpoint may be past this one now,
      // or the lease gone).
    }
    throw new CosmosCheckpointError(
      key,
      `other writers kept changing it (${RACE_ATTEMPTS} attempts)`,
      { cause: failure },
    );
  }

  return {
    container: kept,
    fenced: true,
    tokens: true,
    fenceLocation: `cosmos ${container.database.id}/${container.id}`,
    async load(key: CheckpointKey): Promise<Position | undefined> {
      const doc = await read(key);
      return doc === undefined ? undefined : BigInt(doc.position);
    },
    async loadCheckpoint(key: CheckpointKey): Promise<Checkpoint | undefined> {
      const doc = await read(key);
      if (doc === undefined) return undefined;
      return {
        position: BigInt(doc.position),
        ...(typeof doc.token === "string" ? { token: doc.token } : {}),
      };
    },
    commit(key: CheckpointKey, position: Position, fence?: CheckpointFence): Promise<void> {
      checkPosition(position);
      return commitCheckpoint(key, { position }, fence);
    },
    commitCheckpoint,
    async reset(key: CheckpointKey, position: Position | undefined): Promise<void> {
      checkCheckpointKey(key);
      if (position === undefined) {
        const id = await documentId("cp", [key.source, key.tranche, key.group]);
        try {
          await container.item(id, checkpointPartition(key)).delete();
        } catch (e) {
          if (statusOf(e) !== 404) throw e;
        }
        return;
      }
      checkPosition(position);
      await container.items.upsert(await body(key, { position }));
    },
    async list(source: string, group?: string) {
      const conditions = ["c.kind = 'checkpoint'", "c.source = @s"];
      const parameters = [{ name: "@s", value: source }];
      if (group !== undefined) {
        conditions.push("c.group = @g");
        parameters.push({ name: "@g", value: group });
      }
      const { resources } = await container.items.query<CheckpointDocument>(
        { query: `SELECT * FROM c WHERE ${conditions.join(" AND ")}`, parameters },
        group === undefined ? {} : { partitionKey: `${source}/${group}` },
      ).fetchAll();
      return resources.map((d) => ({
        source: d.source,
        tranche: d.tranche,
        group: d.group,
        position: BigInt(d.position),
      }));
    },
  };
}

/** A document without the properties Cosmos adds. */
function strip(doc: object): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(doc)) if (!k.startsWith("_") && v !== undefined) out[k] = v;
  return out;
}
