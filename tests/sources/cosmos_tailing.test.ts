// The change-feed tailing contract of the Cosmos source, which the local test server cannot show
// (its change feed answers any read with a continuation with 304). It runs against a real
// account or the official emulator when IMPEL_COSMOS_ENDPOINT and IMPEL_COSMOS_KEY are set
// (IMPEL_COSMOS_DATABASE names the database, default impel_test; for the emulator's self-signed
// certificate set NODE_TLS_REJECT_UNAUTHORIZED=0), and shows as ignored otherwise, never as
// passed. Containers are made per test and deleted after.
//
// What it checks: resuming from a committed continuation reads only what was appended since;
// at the tail (304) the source sleeps and picks up documents appended after; every event of
// every range is handled once, in order per stream; two members share the ranges through
// Cosmos leases (balanced when the container has several feed ranges). A split of a feed range
// cannot be caused on demand: the continuation of a range spans its children by the SDK's own
// handling, and the source keeps checkpointed ranges as its tranches (tested locally in
// cosmos.test.ts with a container reporting a split).
import assert from "node:assert/strict";
import { CosmosClient, type Database } from "@azure/cosmos";
import type { Batch } from "../../core/batch.ts";
import { run, streamsSink } from "../../core/sink.ts";
import { cosmosCheckpoints } from "../../checkpoints/cosmos.ts";
import { cosmosLeases } from "../../leases/cosmos.ts";
import { cosmosStore, ensureCosmosContainer } from "../../stores/cosmos.ts";
import { cosmosSource } from "../../sources/cosmos.ts";
import { seed } from "../support/cosmos.ts";

const endpoint = Deno.env.get("IMPEL_COSMOS_ENDPOINT");
const key = Deno.env.get("IMPEL_COSMOS_KEY");
const ignore = endpoint === undefined || key === undefined;

let database: Promise<Database> | undefined;
function db(): Promise<Database> {
  // A plain-HTTP endpoint is a local server, whose account lists endpoints it does not serve.
  const local = endpoint!.startsWith("http://");
  const client = new CosmosClient({
    endpoint: endpoint!,
    key: key!,
    connectionPolicy: { enableEndpointDiscovery: !local },
  });
  database ??= client.databases.createIfNotExists({
    id: Deno.env.get("IMPEL_COSMOS_DATABASE") ?? "impel_test",
  }).then((r) => r.database);
  return database;
}

async function fresh(prefix: string) {
  const d = await db();
  const id = `${prefix}-${crypto.randomUUID()}`;
  await ensureCosmosContainer(d, id);
  const container = d.container(id);
  return {
    container,
    id,
    async [Symbol.asyncDispose]() {
      await container.delete().catch(() => {});
    },
  };
}

const test = (name: string, fn: () => Promise<void>) =>
  Deno.test({
    name: `cosmos tailing (real account): ${name}`,
    ignore,
    sanitizeOps: false,
    sanitizeResources: false,
    fn,
  });

/** Handles into `seen` (stream -> indexes) until every tranche is at its tail. */
function toTail(
  source: (signal: AbortSignal) => ReadableStream<Batch>,
  seen: Map<string, number[]>,
) {
  const sink = streamsSink({
    group: "g",
    statsIntervalMs: 0,
    commitIntervalMs: 50,
    handler: (stream, events) => {
      if (!seen.has(stream)) seen.set(stream, []);
      seen.get(stream)!.push(...events.map((e) => e.index));
    },
  });
  const ac = new AbortController();
  const running = run(source(ac.signal), sink, { signal: ac.signal });
  return {
    sink,
    async until() {
      await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 120_000 });
    },
    async stop() {
      ac.abort();
      await running;
    },
  };
}

const count = (seen: Map<string, number[]>) => [...seen.values()].reduce((n, l) => n + l.length, 0);
const inOrder = (seen: Map<string, number[]>, perStream: number) => {
  for (const [stream, indexes] of seen) {
    assert.deepEqual(indexes, Array.from({ length: perStream }, (_, k) => k), stream);
  }
};

test("a restart resumes from the committed continuation: only what was appended since", async () => {
  await using t = await fresh("tail");
  await using aux = await fresh("aux");
  const store = cosmosStore(t.container);
  await seed(store, 10, 5, 1);
  const checkpoints = cosmosCheckpoints(aux.container);
  const source = (signal: AbortSignal) =>
    cosmosSource({ container: t.container, group: "g", checkpoints, tailSleepMs: 200, signal });
  const first = new Map<string, number[]>();
  const r1 = await toTail(source, first);
  await r1.until();
  await r1.stop();
  assert.equal(count(first), 50);
  for (let k = 0; k < 10; k++) {
    await store.append(`Order-${k}`, [{ type: "Step", data: { n: 5 } }, {
      type: "Step",
      data: { n: 6 },
    }], 5);
  }
  const second = new Map<string, number[]>();
  const r2 = await toTail(source, second);
  await r2.until();
  await r2.stop();
  assert.equal(count(second), 20, "only the new events");
  for (const indexes of second.values()) assert.deepEqual(indexes, [5, 6]);
  const saved = await checkpoints.list(`cosmos:${t.id}`, "g");
  assert.ok(saved.length >= 1);
  for (const s of saved) assert.match((await checkpoints.loadCheckpoint(s))?.token ?? "", /./);
});

test("at the tail (304) the source picks up documents appended after, each once, in order", async () => {
  await using t = await fresh("tail");
  const store = cosmosStore(t.container);
  const seen = new Map<string, number[]>();
  const r = await toTail(
    (signal) => cosmosSource({ container: t.container, group: "g", tailSleepMs: 200, signal }),
    seen,
  );
  try {
    await r.until(); // an empty container: at the tail at once
    await seed(store, 20, 10, 2);
    await new Promise((res) => setTimeout(res, 1_000));
    await r.until();
    assert.equal(count(seen), 200);
    inOrder(seen, 10);
  } finally {
    await r.stop();
  }
});

test("two members share the feed ranges through Cosmos leases; every event handled once", async () => {
  await using t = await fresh("tail");
  await using aux = await fresh("aux");
  await seed(cosmosStore(t.container), 50, 8, 2);
  const ranges = await t.container.getFeedRanges();
  const leases = cosmosLeases(aux.container);
  const checkpoints = cosmosCheckpoints(aux.container);
  const seen = new Map<string, number[]>();
  const timing = { durationMs: 6_000, heartbeatMs: 500, handoverMs: 2_000, stopTimeoutMs: 1_000 };
  const members = await Promise.all(["a", "b"].map((m) =>
    toTail(
      (signal) =>
        cosmosSource({
          container: t.container,
          group: "g",
          checkpoints,
          tailSleepMs: 200,
          leases: { store: leases, member: m, ...timing },
          signal,
        }),
      seen,
    )
  ));
  try {
    const deadline = Date.now() + 60_000;
    while (count(seen) < 400 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
    assert.equal(count(seen), 400);
    inOrder(seen, 8);
    const [view] = await leases.list(`cosmos:${t.id}/g`);
    const owners = view.leases.filter((l) => l.owner !== undefined).map((l) => l.owner!);
    assert.equal(owners.length, ranges.length, "every range held");
    if (ranges.length > 1) {
      const a = owners.filter((o) => o === "a").length;
      assert.ok(Math.abs(a - (owners.length - a)) <= 1, `balanced: ${owners.join(",")}`);
    }
  } finally {
    await Promise.all(members.map((m) => m.stop()));
  }
});
