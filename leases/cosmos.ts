/**
 * A {@linkcode LeaseStore} in a Cosmos DB container (partition key `/p`), so that members of a
 * consumer group of the Cosmos change-feed source share its feed ranges with nothing but Cosmos.
 * Each scope is one logical partition holding two kinds of documents: `lease` (a unit: owner,
 * generation, expiry, a hand-over request) and `member` (a heartbeat, with the fingerprint of the
 * member's units). Every change is a replace conditioned on the document's etag (`If-Match`) or a
 * create, so of two members racing for a unit exactly one wins.
 *
 * **Clocks.** Cosmos has no server clock a condition can use (`_ts` is in whole seconds), so
 * expiries are written and judged on the members' clocks (as Cosmos's own change feed processor
 * does): members must keep their clocks in step, well within the lease's `handoverMs` margin
 * (NTP does). A member whose clock runs ahead by `S` takes lapsed units `S` early; the etag
 * conditions still let only one member hold a unit, and a commit fenced by the lease
 * (`checkpoints/cosmos.ts` in the same container) is refused once it has moved.
 *
 * Fenced checkpoint commits: `cosmosCheckpoints(container)` over the same container checks the
 * committer's lease and writes the checkpoint in one transactional batch of the scope's
 * partition (checkpoints of a source and group live in the partition of its lease scope).
 *
 * @module
 */
import type { Container } from "@azure/cosmos";
import type {
  HeartbeatResult,
  HeldLease,
  Lease,
  LeaseMemberBeat,
  LeaseStore,
  ScopedLeaseView,
} from "../core/lease.ts";
import { checkInteger, describe, InvalidArgumentError } from "../core/errors.ts";
import { documentId, ensureCosmosContainer, statusOf } from "../stores/cosmos.ts";
import type { CosmosContainer, CosmosDatabase } from "../stores/cosmos.ts";

export type * from "../core/lease.ts";

/** A member expired for this many lease durations (of the member beating) is forgotten. */
const DEAD_MEMBER_DURATIONS = 10;
/** The longest lease: members time its deadline with setTimeout. */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** Conditional writes lost to another writer of the same document are tried again this often. */
const RACE_ATTEMPTS = 5;

/**
 * A lease document as the container holds it.
 *
 * @example
 * ```ts
 * import type { CosmosLeaseDocument } from "@impel/impel/leases/cosmos";
 * const doc: CosmosLeaseDocument = {
 *   id: "l-0", p: "cosmos:events/reactor", kind: "lease", unit: "0", owner: "a",
 *   generation: "3", expiresAt: Date.now() + 30_000,
 * };
 * ```
 */
export interface CosmosLeaseDocument {
  /** `l-` and the unit (or its hash). */
  readonly id: string;
  /** The scope: the document's partition. */
  readonly p: string;
  /** Always `"lease"`. */
  readonly kind: "lease";
  /** The unit of work. */
  readonly unit: string;
  /** The member holding it; absent when released. */
  readonly owner?: string;
  /** The generation, as decimal text (a bigint). */
  readonly generation: string;
  /** When it lapses unless renewed, ms since the epoch. */
  readonly expiresAt: number;
  /** When the owner acquired it. */
  readonly acquiredAt?: number;
  /** When the owner last renewed it. */
  readonly renewedAt?: number;
  /** A member asking for it. */
  readonly requestedBy?: string;
  /** The document's etag (from Cosmos). */
  readonly _etag?: string;
}

/**
 * The id of the lease document of `unit` (in the partition of its scope): `l-` and the unit when
 * it is short and free of the characters Cosmos ids cannot hold, else `lh-` and its SHA-256.
 *
 * @example
 * ```ts
 * import { leaseDocumentId } from "@impel/impel/leases/cosmos";
 * console.log(await leaseDocumentId("0")); // "l-0"
 * ```
 */
export function leaseDocumentId(unit: string): Promise<string> {
  return documentId("l", [unit]);
}

/**
 * A Cosmos lease store; `location` names its container, as `cosmosCheckpoints` over the same
 * container names the leases it fences commits with.
 *
 * @example
 * ```ts
 * import { CosmosClient } from "@azure/cosmos";
 * import { type CosmosLeaseStore, cosmosLeases } from "@impel/impel/leases/cosmos";
 * const client = new CosmosClient({ endpoint: "https://my-account.documents.azure.com", key: "<account key>" });
 * const store: CosmosLeaseStore = cosmosLeases(client.database("app").container("aux"));
 * console.log(store.location); // "cosmos app/aux"
 * ```
 */
export interface CosmosLeaseStore extends LeaseStore {
  /** The container the leases are kept in. */
  readonly container: CosmosContainer;
  /** `cosmos {database}/{container}`. */
  readonly location: string;
}

/**
 * Creates the container for leases (and checkpoints: keep both in one container, so that commits
 * can be fenced) unless it exists; partition key `/p`.
 *
 * @example
 * ```ts
 * import { CosmosClient } from "@azure/cosmos";
 * import { cosmosLeases, initCosmosLeases } from "@impel/impel/leases/cosmos";
 * const client = new CosmosClient({ endpoint: "https://my-account.documents.azure.com", key: "<account key>" });
 * const { database } = await client.databases.createIfNotExists({ id: "app" });
 * const leases = cosmosLeases(await initCosmosLeases(database, "aux"));
 * ```
 */
export function initCosmosLeases(
  database: CosmosDatabase,
  containerId: string,
): Promise<CosmosContainer> {
  return ensureCosmosContainer(database, containerId);
}

/**
 * The lease store over `container` (made by {@linkcode initCosmosLeases}).
 *
 * @example
 * ```ts
 * import { CosmosClient } from "@azure/cosmos";
 * import { cosmosLeases } from "@impel/impel/leases/cosmos";
 * const client = new CosmosClient({ endpoint: "https://my-account.documents.azure.com", key: "<account key>" });
 * const leases = cosmosLeases(client.database("app").container("aux"));
 * const lease = await leases.acquire("cosmos:events/reactor", "0", "member-a", 30_000);
 * console.log(lease?.generation); // 1n the first time
 * ```
 */
export function cosmosLeases(kept: CosmosContainer): CosmosLeaseStore {
  if (kept === null || typeof kept !== "object" || typeof kept.item !== "function") {
    throw new InvalidArgumentError("container", "must be a Container of @azure/cosmos");
  }
  // The interface only narrows the SDK's Container, which callers are documented to pass.
  const container = kept as unknown as Container;
  const now = () => Date.now();

  async function readLease(scope: string, unit: string): Promise<CosmosLeaseDocument | undefined> {
    const id = await leaseDocumentId(unit);
    const { resource } = await container.item(id, scope).read<CosmosLeaseDocument>();
    return resource;
  }

  /** Replaces `doc` if unchanged (its etag): the new document, or undefined when another
   * writer changed it first. */
  async function replace(
    doc: CosmosLeaseDocument,
    next: CosmosLeaseDocument,
  ): Promise<CosmosLeaseDocument | undefined> {
    try {
      const { resource } = await container.item(doc.id, doc.p).replace(strip(next), {
        accessCondition: { type: "IfMatch", condition: doc._etag! },
      });
      return resource as CosmosLeaseDocument | undefined ?? next;
    } catch (e) {
      if (statusOf(e) === 412 || statusOf(e) === 404) return undefined;
      throw e;
    }
  }

  // The lease documents this store last wrote for a member (with their etags): a renewal is one
  // conditional replace, read again only when someone else changed the document since.
  const mine = new Map<string, CosmosLeaseDocument>();
  const key = (scope: string, unit: string) => JSON.stringify([scope, unit]);
  // When each member of this process first beat, so that its heartbeat need not wait for a read.
  const joined = new Map<string, number>();

  /** Renews `h` for `member` if it still holds it unexpired; the renewed document if so. */
  async function renew(
    scope: string,
    member: string,
    h: HeldLease,
    durationMs: number,
  ): Promise<CosmosLeaseDocument | undefined> {
    const k = key(scope, h.unit);
    let doc = mine.get(k) ?? await readLease(scope, h.unit);
    for (let attempt = 1; doc !== undefined && attempt <= RACE_ATTEMPTS; attempt++) {
      const t = now();
      if (doc.owner !== member || BigInt(doc.generation) !== h.generation || doc.expiresAt <= t) {
        break;
      }
      const renewed = await replace(doc, { ...doc, expiresAt: t + durationMs, renewedAt: t });
      if (renewed !== undefined) {
        mine.set(k, renewed);
        return renewed;
      }
      doc = await readLease(scope, h.unit);
    }
    mine.delete(k);
    return undefined;
  }

  /** Changes the lease of `unit` by `change` (undefined: leave it), retrying lost races. */
  async function update(
    scope: string,
    unit: string,
    change: (doc: CosmosLeaseDocument) => CosmosLeaseDocument | undefined,
  ): Promise<void> {
    for (let attempt = 1; attempt <= RACE_ATTEMPTS; attempt++) {
      const doc = await readLease(scope, unit);
      if (doc === undefined) return;
      const next = change(doc);
      if (next === undefined || await replace(doc, next) !== undefined) return;
    }
  }

  async function scopeDocuments(scope: string): Promise<Record<string, unknown>[]> {
    const { resources } = await container.items.query<Record<string, unknown>>(
      {
        query: "SELECT * FROM c WHERE c.p = @p AND (c.kind = 'lease' OR c.kind = 'member')",
        parameters: [{ name: "@p", value: scope }],
      },
      { partitionKey: scope },
    ).fetchAll();
    return resources;
  }

  const viewOf = (scope: string, docs: readonly Record<string, unknown>[], t: number) => ({
    scope,
    now: t,
    leases: docs.filter((d) => d.kind === "lease").map((d) => toLease(d as never)),
    members: docs.filter((d) => d.kind === "member").map(toBeat),
  });

  return {
    container: kept,
    location: `cosmos ${container.database.id}/${container.id}`,
    async heartbeat(scope, member, durationMs, held, units): Promise<HeartbeatResult> {
      checkText("scope", scope);
      checkText("member", member);
      checkInteger("durationMs", durationMs, 1, MAX_TIMER_MS);
      if (units !== undefined) checkText("units", units);
      checkHeld(held);
      const memberId = await documentId("m", [member]);
      const beat = (joinedAt: number) => {
        const t = now();
        return {
          id: memberId,
          p: scope,
          kind: "member",
          member,
          expiresAt: t + durationMs,
          renewedAt: t,
          joinedAt,
          ...(units === undefined ? {} : { units }),
        };
      };
      // One round trip: the renewals and the beat go out with the read of the view (which may
      // show the renewals' old expiries, as the contract allows). `joinedAt` is when this
      // process's member first beat.
      const joinedAt = joined.get(key(scope, member)) ?? now();
      joined.set(key(scope, member), joinedAt);
      const own = beat(joinedAt);
      const [docs, renewed] = await Promise.all([
        scopeDocuments(scope),
        Promise.all(held.map((h) => renew(scope, member, h, durationMs))),
        container.items.upsert(own),
      ]);
      const t = now();
      // Members that died without leaving (a crash) go once long expired, as in the other
      // stores: a crashed start with a random id must not stay in every view.
      const dead = (d: Record<string, unknown>) =>
        d.kind === "member" && d.id !== memberId &&
        Number(d.expiresAt) < t - DEAD_MEMBER_DURATIONS * durationMs;
      await Promise.all(
        docs.filter(dead).map((d) =>
          container.item(String(d.id), scope).delete().catch((e) => {
            if (statusOf(e) !== 404) throw e;
          })
        ),
      );
      const current = new Map(renewed.filter((d) => d !== undefined).map((d) => [d.unit, d]));
      const view = viewOf(
        scope,
        [
          ...docs.filter((d) => !dead(d) && d.id !== memberId).map((d) =>
            d.kind === "lease" ? current.get(String(d.unit)) ?? d : d
          ),
          own,
        ] as never,
        t,
      );
      return { renewed: held.filter((_, k) => renewed[k] !== undefined).map((h) => h.unit), view };
    },
    async acquire(scope, unit, member, durationMs): Promise<Lease | undefined> {
      checkText("scope", scope);
      checkText("unit", unit);
      checkText("member", member);
      checkInteger("durationMs", durationMs, 1, MAX_TIMER_MS);
      const doc = await readLease(scope, unit);
      const t = now();
      if (doc?.owner !== undefined && doc.expiresAt > t) return undefined;
      const lease: CosmosLeaseDocument = {
        id: await leaseDocumentId(unit),
        p: scope,
        kind: "lease",
        unit,
        owner: member,
        generation: String((doc === undefined ? 0n : BigInt(doc.generation)) + 1n),
        expiresAt: t + durationMs,
        acquiredAt: t,
        renewedAt: t,
      };
      if (doc !== undefined) {
        const taken = await replace(doc, lease);
        if (taken !== undefined) mine.set(key(scope, unit), taken);
        return taken === undefined ? undefined : toLease(lease);
      }
      try {
        const { resource } = await container.items.create(lease);
        mine.set(key(scope, unit), (resource as CosmosLeaseDocument | undefined) ?? lease);
        return toLease(lease);
      } catch (e) {
        if (statusOf(e) === 409) return undefined; // another member created it first
        throw e;
      }
    },
    async request(scope, unit, member): Promise<void> {
      checkText("scope", scope);
      checkText("unit", unit);
      checkText("member", member);
      await update(
        scope,
        unit,
        (doc) =>
          doc.owner !== undefined && doc.owner !== member && doc.expiresAt > now() &&
            doc.requestedBy !== member
            ? { ...doc, requestedBy: member }
            : undefined,
      );
    },
    async release(scope, held, member): Promise<void> {
      checkText("scope", scope);
      checkText("member", member);
      const [h] = checkHeld([held]);
      mine.delete(key(scope, h.unit));
      await update(
        scope,
        h.unit,
        (doc) =>
          doc.owner === member && BigInt(doc.generation) === h.generation
            ? {
              id: doc.id,
              p: doc.p,
              kind: "lease",
              unit: doc.unit,
              generation: doc.generation,
              expiresAt: now(),
            }
            : undefined,
      );
    },
    async leave(scope, member): Promise<void> {
      checkText("scope", scope);
      checkText("member", member);
      joined.delete(key(scope, member));
      try {
        await container.item(await documentId("m", [member]), scope).delete();
      } catch (e) {
        if (statusOf(e) !== 404) throw e;
      }
    },
    async list(scope?: string): Promise<readonly ScopedLeaseView[]> {
      if (scope !== undefined) {
        checkText("scope", scope);
        return [viewOf(scope, await scopeDocuments(scope), now())];
      }
      const { resources } = await container.items.query<Record<string, unknown>>(
        "SELECT * FROM c WHERE c.kind = 'lease' OR c.kind = 'member'",
      ).fetchAll();
      const t = now();
      const scopes = new Map<string, Record<string, unknown>[]>();
      for (const d of resources) {
        const p = String(d.p);
        if (!scopes.has(p)) scopes.set(p, []);
        scopes.get(p)!.push(d);
      }
      return [...scopes].sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0).map(([p, docs]) =>
        viewOf(p, docs, t)
      );
    },
  };
}

/** A lease document as a {@linkcode Lease}. */
export function toLease(doc: CosmosLeaseDocument): Lease {
  return {
    unit: doc.unit,
    generation: BigInt(doc.generation),
    expiresAt: doc.expiresAt,
    ...(doc.owner === undefined ? {} : { owner: doc.owner }),
    ...(doc.acquiredAt === undefined ? {} : { acquiredAt: doc.acquiredAt }),
    ...(doc.renewedAt === undefined ? {} : { renewedAt: doc.renewedAt }),
    ...(doc.requestedBy === undefined ? {} : { requestedBy: doc.requestedBy }),
  };
}

function toBeat(doc: Record<string, unknown>): LeaseMemberBeat {
  return {
    member: String(doc.member),
    expiresAt: Number(doc.expiresAt),
    renewedAt: Number(doc.renewedAt),
    ...(typeof doc.joinedAt === "number" ? { joinedAt: doc.joinedAt } : {}),
    ...(typeof doc.units === "string" ? { units: doc.units } : {}),
  };
}

/** A document without the properties Cosmos adds. */
function strip(doc: CosmosLeaseDocument): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(doc)) if (!k.startsWith("_") && v !== undefined) out[k] = v;
  return out;
}

function checkText(field: string, value: unknown): void {
  if (typeof value !== "string" || value.length === 0) {
    throw new InvalidArgumentError(field, `must be a non-empty string, got ${describe(value)}`);
  }
}

function checkHeld(held: readonly HeldLease[]): readonly HeldLease[] {
  if (!Array.isArray(held)) throw new InvalidArgumentError("held", "must be an array of leases");
  for (const h of held) {
    checkText("held.unit", h?.unit);
    if (typeof h.generation !== "bigint") {
      throw new InvalidArgumentError("held.generation", "must be a bigint");
    }
  }
  return held;
}
