// One member of a Cosmos consumer group with leases, as a real process: cosmosSource over an
// events container with cosmosLeases and fenced cosmosCheckpoints in an aux container, into a
// streamsSink whose handler takes HANDLER_MS per event. It logs, one unbuffered line each, in the
// format of tests/faults/leases/member.ts (so that tests/faults/leases/analyse.ts applies): every
// call's start and end, every lease it acquires or lets go of, every commit with its fence and
// outcome. SIGTERM stops it cleanly (releasing its range), exit 0.
//
// Environment: COSMOS_ENDPOINT (default the local server), COSMOS_DATABASE, EVENTS_CONTAINER,
// AUX_CONTAINER, LEASE_LOG, LEASE_MEMBER, and optionally LEASE_DURATION_MS (2000),
// LEASE_HEARTBEAT_MS (300), LEASE_HANDOVER_MS (1000), HANDLER_MS (20), STOP_TIMEOUT_MS (400).
//
// Lines, tab-separated, times in ms since the epoch (fractional):
//   ready member pid t
//   start stream from next t          end stream from next t
//   acquired unit generation t        letgo unit - why t
//   commit tranche position generation started ended ok|refused|failed
//   alive t (every 500 ms), sigterm t, ran t, released t, done t
//   page documents t batches (each change-feed read that returned documents; batches is JSON,
//     [[stream, i, n], ...] of its batch documents: what the run was served, which the suite
//     compares with what it handled)
import { CosmosClient } from "@azure/cosmos";
import { configure, type LogRecord } from "@logtape/logtape";
import { type CheckpointStore, run, StaleCommitError, streamsSink } from "../../../mod.ts";
import { cosmosSource } from "../../../sources/cosmos.ts";
import { cosmosCheckpoints } from "../../../checkpoints/cosmos.ts";
import { cosmosLeases } from "../../../leases/cosmos.ts";
import { isStoreBatch } from "../../../stores/cosmos.ts";
import { lineWriter } from "../support/process.ts";

const env = (name: string, fallback?: string): string => {
  const value = Deno.env.get(name) ?? fallback;
  if (value === undefined) throw new Error(`${name} is not set`);
  return value;
};
const member = env("LEASE_MEMBER");
const handlerMs = Number(env("HANDLER_MS", "20"));
const log = lineWriter(env("LEASE_LOG"));
const now = () => (performance.timeOrigin + performance.now()).toFixed(3);

await configure({
  sinks: {
    leases(record: LogRecord) {
      const p = record.properties as Record<string, unknown>;
      const text = String(record.rawMessage);
      if (text.includes(" acquired ")) {
        log.write(`acquired\t${p.unit}\t${p.generation}\t${now()}`);
      } else if (text.includes(" lost ") || text.includes(" lets go of ")) {
        log.write(`letgo\t${p.unit}\t-\t${String(p.reason).replaceAll("\t", " ")}\t${now()}`);
      }
      if (record.level === "warning" || record.level === "error") {
        console.error(`[${record.level}] ${record.message.join("")}`);
      }
    },
    stderr(record: LogRecord) {
      console.error(`[${record.level}] ${record.category.join(".")}: ${record.message.join("")}`);
    },
  },
  loggers: [
    { category: ["impel", "leases"], lowestLevel: "info", sinks: ["leases"] },
    { category: ["impel", "cosmos"], lowestLevel: "warning", sinks: ["stderr"] },
    { category: ["impel", "source"], lowestLevel: "warning", sinks: ["stderr"] },
    { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["stderr"] },
  ],
});

const client = new CosmosClient({
  endpoint: env("COSMOS_ENDPOINT", "http://127.0.0.1:8081"),
  key: "bG9jYWw=",
  connectionPolicy: { enableEndpointDiscovery: false },
});
const database = client.database(env("COSMOS_DATABASE"));
const container = database.container(env("EVENTS_CONTAINER"));
const aux = database.container(env("AUX_CONTAINER"));

// The real container, its change-feed reads recorded on the way (nothing else changes).
const bound = <T extends object>(target: T, overrides: Record<PropertyKey, unknown>): T =>
  new Proxy(target, {
    get(t, prop) {
      if (prop in overrides) return overrides[prop];
      const value = Reflect.get(t, prop, t);
      return typeof value === "function" ? value.bind(t) : value;
    },
  });
type FeedOptions = Parameters<typeof container.items.getChangeFeedIterator>[0];
const events = bound(container, {
  items: bound(container.items, {
    getChangeFeedIterator(options: FeedOptions) {
      const iterator = container.items.getChangeFeedIterator<Record<string, unknown>>(options);
      return bound(iterator, {
        async readNext() {
          const response = await iterator.readNext();
          const docs = response.result ?? [];
          if (docs.length > 0) {
            const batches = docs.filter(isStoreBatch).map((d) => [d.p, d.i, d.n]);
            log.write(`page\t${docs.length}\t${now()}\t${JSON.stringify(batches)}`);
          }
          return response;
        },
      });
    },
  }),
});

// Commits are logged with their fence and outcome: the source commits through commitCheckpoint
// (position and continuation together).
const store = cosmosCheckpoints(aux);
const logged = async <T>(
  tranche: string,
  position: bigint,
  generation: bigint | undefined,
  commit: () => Promise<T>,
): Promise<T> => {
  const started = now();
  const line = (outcome: string) =>
    log.write(
      `commit\t${tranche}\t${position}\t${generation ?? "-"}\t${started}\t${now()}\t${outcome}`,
    );
  try {
    const result = await commit();
    line("ok");
    return result;
  } catch (error) {
    line(error instanceof StaleCommitError ? "refused" : "failed");
    throw error;
  }
};
const checkpoints: CheckpointStore = {
  ...store,
  commit: (key, position, fence) =>
    logged(key.tranche, position, fence?.generation, () => store.commit(key, position, fence)),
  commitCheckpoint: (key, checkpoint, fence) =>
    logged(
      key.tranche,
      checkpoint.position,
      fence?.generation,
      () => store.commitCheckpoint(key, checkpoint, fence),
    ),
};

const stop = new AbortController();
Deno.addSignalListener("SIGTERM", () => {
  log.write(`sigterm\t${now()}`);
  stop.abort();
});
const source = cosmosSource({
  container: events,
  group: "leased",
  checkpoints,
  // Above the documents a run writes: the local server serves one page of a range, then 304.
  pageSize: 100_000,
  tailSleepMs: 200,
  leases: {
    store: cosmosLeases(aux),
    member,
    durationMs: Number(env("LEASE_DURATION_MS", "2000")),
    heartbeatMs: Number(env("LEASE_HEARTBEAT_MS", "300")),
    handoverMs: Number(env("LEASE_HANDOVER_MS", "1000")),
    stopTimeoutMs: Number(env("STOP_TIMEOUT_MS", "400")),
  },
  signal: stop.signal,
});
const sink = streamsSink({
  group: "leased",
  statsIntervalMs: 0,
  commitIntervalMs: 200,
  stopTimeoutMs: Number(env("STOP_TIMEOUT_MS", "400")),
  maxConcurrentStreams: 16,
  handler: async (stream, batch) => {
    const from = batch[0].index, next = batch[batch.length - 1].index + 1;
    log.write(`start\t${stream}\t${from}\t${next}\t${now()}`);
    await new Promise((resolve) => setTimeout(resolve, handlerMs * batch.length));
    log.write(`end\t${stream}\t${from}\t${next}\t${now()}`);
  },
});
const running = run(source, sink, { signal: stop.signal });
const alive = setInterval(() => log.write(`alive\t${now()}`), 500);
log.write(`ready\t${member}\t${Deno.pid}\t${now()}`);
await running;
log.write(`ran\t${now()}`);
await source.released;
log.write(`released\t${now()}`);
clearInterval(alive);
log.write(`done\t${now()}`);
log.close();
Deno.exit(0);
