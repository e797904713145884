// Decider benchmark: cold transacts/s (no cache, so every transact loads the stream) on one hot
// stream of 100, 1k and 10k events, with rolling snapshots (every 10) against the baseline
// without, on MessageDB and DynamoDB Local. The two streams of a size are measured in
// alternating rounds in the same run; the table reports medians. Results in bench/RESULTS.md.
// deno run --allow-all bench/decider.ts [--seconds 2] [--rounds 3] [--sizes 100,1000,10000]
//   [--stores messagedb,dynamo]
// IMPEL_PG_URL overrides postgres://postgres@127.0.0.1:5432/impel_test; DYNAMODB_ENDPOINT
// overrides http://127.0.0.1:8000. Streams are fresh (`wsBench…`); the DynamoDB table is
// deleted at the end.
// @ts-types="@types/pg"
import pg from "pg";
import { DeleteTableCommand, DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { createCodec } from "../core/codec.ts";
import { createDecider, type LastEventReader } from "../core/decider.ts";
import type { EventData, EventStore } from "../core/store.ts";
import { messageDbStore } from "../stores/messagedb.ts";
import { createEventTable, dynamoStore } from "../stores/dynamo.ts";

const args = new Map<string, string>();
for (let k = 0; k < Deno.args.length; k += 2) {
  args.set(Deno.args[k].replace(/^--/, ""), Deno.args[k + 1]);
}
const seconds = Number(args.get("seconds") ?? 2);
const rounds = Number(args.get("rounds") ?? 3);
const sizes = (args.get("sizes") ?? "100,1000,10000").split(",").map(Number);
const stores = (args.get("stores") ?? "messagedb,dynamo").split(",");

type Event =
  | { type: "Added"; data: { n: number } }
  | { type: "Totalled"; data: { total: number; count: number } };
interface State {
  readonly total: number;
  readonly count: number;
}
const codec = createCodec<Event>({ Added: {}, Totalled: {} });
const initial: State = { total: 0, count: 0 };
const fold = (s: State, events: readonly Event[]): State =>
  events.reduce<State>(
    (t, e) => e.type === "Totalled" ? e.data : { total: t.total + e.data.n, count: t.count + 1 },
    s,
  );
const snapshot = {
  isOrigin: (e: Event) => e.type === "Totalled",
  toSnapshot: (s: State): Event => ({ type: "Totalled", data: { ...s } }),
  every: 10,
};
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const fmt = (n: number) => n.toLocaleString("en-US", { maximumFractionDigits: 0 });

/** Appends `size` events in chunks; with snapshots, the last one is a snapshot of the rest. */
async function seed(store: EventStore, stream: string, size: number, snapshots: boolean) {
  const chunk = 200;
  for (let from = 0; from < size; from += chunk) {
    const events: EventData[] = [];
    for (let k = from; k < Math.min(size, from + chunk); k++) {
      events.push(codec.encode({ type: "Added", data: { n: k } }));
    }
    if (snapshots && from + chunk >= size) {
      const n = size - 1; // the snapshot takes the last slot: size events in all
      events.pop();
      events.push(codec.encode({ type: "Totalled", data: { total: (n * (n - 1)) / 2, count: n } }));
    }
    await store.append(stream, events, from);
  }
}

/** Cold transacts on `stream` for `seconds`: a decider without a cache, one writer. */
async function coldRate(
  store: EventStore & LastEventReader,
  stream: string,
  snapshots: boolean,
): Promise<number> {
  const decider = createDecider<Event, State>({
    store,
    codec,
    initial,
    fold,
    snapshot: snapshots ? snapshot : undefined,
  });
  let done = 0;
  const started = performance.now();
  const until = started + seconds * 1000;
  while (performance.now() < until) {
    await decider.transact(stream, () => [{ type: "Added", data: { n: 1 } }]);
    done++;
  }
  return done / ((performance.now() - started) / 1000);
}

async function bench(name: string, store: EventStore & LastEventReader) {
  console.log(`\n${name}: cold transacts/s, median of ${rounds} rounds of ${seconds} s`);
  console.log("| events in stream | without snapshots | snapshots every 10 | ratio |");
  console.log("| ---------------- | ----------------- | ------------------ | ----- |");
  for (const size of sizes) {
    const id = crypto.randomUUID().replaceAll("-", "").slice(0, 10);
    const plain = `wsBench-${id}_p${size}`;
    const snapped = `wsBench-${id}_s${size}`;
    await seed(store, plain, size, false);
    await seed(store, snapped, size, true);
    const without: number[] = [], withSnap: number[] = [];
    for (let round = 0; round < rounds; round++) {
      without.push(await coldRate(store, plain, false));
      withSnap.push(await coldRate(store, snapped, true));
    }
    const a = median(without), b = median(withSnap);
    console.log(
      `| ${fmt(size).padEnd(16)} | ${fmt(a).padEnd(17)} | ${fmt(b).padEnd(18)} | ${
        (b / a).toFixed(1).padEnd(5)
      } |`,
    );
  }
}

console.log(
  `Deno ${Deno.version.deno}, ${navigator.hardwareConcurrency} cores, load ${
    Deno.loadavg().map((l) => l.toFixed(1)).join(" ")
  }`,
);
if (stores.includes("messagedb")) {
  const url = Deno.env.get("IMPEL_PG_URL") ?? "postgres://postgres@127.0.0.1:5432/impel_test";
  const pool = new pg.Pool({ connectionString: url, max: 2 });
  try {
    await bench("MessageDB", messageDbStore(pool));
  } finally {
    await pool.end();
  }
}
if (stores.includes("dynamo")) {
  const client = new DynamoDBClient({
    endpoint: Deno.env.get("DYNAMODB_ENDPOINT") ?? "http://127.0.0.1:8000",
    region: "local",
    credentials: { accessKeyId: "local", secretAccessKey: "local" },
  });
  const tableName = `wsBench-${crypto.randomUUID()}`;
  await createEventTable(client, tableName);
  try {
    await bench("DynamoDB Local", dynamoStore(client, { tableName }));
  } finally {
    await client.send(new DeleteTableCommand({ TableName: tableName }));
    client.destroy();
  }
}
console.log(`load after: ${Deno.loadavg().map((l) => l.toFixed(1)).join(" ")}`);
