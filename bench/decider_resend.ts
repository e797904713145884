// Decider re-send benchmark (issue 18): the latency of one transact with a new idempotency key
// on a busy MessageDB target stream (default 20 000 keyed events, so the recent keys are full),
// three ways: without mayRepeat (the reference), with mayRepeat searching page by page through
// readStream (a store without findIdempotencyKey: the search before), and with mayRepeat asking
// the store (findIdempotencyKey, one SQL query). Deciders have no cache (every transact loads
// the stream, as the reviewer's case) unless --cache; the modes alternate within every round;
// the table reports medians of all transacts. Results in bench/RESULTS.md (Decider section).
// deno run --allow-all bench/decider_resend.ts [--events 20000] [--rounds 5] [--per-round 3]
//   [--cache]
// IMPEL_PG_URL overrides postgres://postgres@127.0.0.1:5432/impel_test. The stream is fresh.
// @ts-types="@types/pg"
import pg from "pg";
import { createCodec } from "../core/codec.ts";
import { createDecider, createStateCache, IDEMPOTENCY_KEY } from "../core/decider.ts";
import type { EventData, EventStore } from "../core/store.ts";
import { messageDbStore } from "../stores/messagedb.ts";

const args = new Map<string, string>();
for (let k = 0; k < Deno.args.length; k++) {
  const name = Deno.args[k].replace(/^--/, "");
  if (name === "cache") args.set(name, "true");
  else args.set(name, Deno.args[++k]);
}
const events = Number(args.get("events") ?? 20_000);
const rounds = Number(args.get("rounds") ?? 5);
const perRound = Number(args.get("per-round") ?? 3);
const cached = args.get("cache") === "true";

type Event = { type: "Added"; data: { n: number } };
const codec = createCodec<Event>({ Added: {} });
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const load = () => Deno.loadavg().map((l) => l.toFixed(1)).join(" ");

const url = Deno.env.get("IMPEL_PG_URL") ?? "postgres://postgres@127.0.0.1:5432/impel_test";
const pool = new pg.Pool({ connectionString: url, max: 2 });
try {
  const store = messageDbStore(pool);
  // The same store without the capability: what the decider did before findIdempotencyKey.
  const paged: EventStore = {
    readStream: (stream, options) => store.readStream(stream, options),
    append: (stream, batch, expected) => store.append(stream, batch, expected),
  };
  const stream = `wsResend-${crypto.randomUUID().replaceAll("-", "").slice(0, 10)}`;
  for (let from = 0; from < events; from += 500) {
    const batch: EventData[] = [];
    for (let k = from; k < Math.min(events, from + 500); k++) {
      batch.push({
        ...codec.encode({ type: "Added", data: { n: 1 } }),
        meta: { [IDEMPOTENCY_KEY]: `seed-${k}` },
      });
    }
    await store.append(stream, batch, from);
  }
  const deciderOf = (s: EventStore) =>
    createDecider<Event, number>({
      store: s,
      codec,
      initial: 0,
      fold: (t, es) => es.reduce((sum, e) => sum + e.data.n, t),
      cache: cached ? createStateCache() : undefined,
    });
  const modes = [
    { name: "without mayRepeat", decider: deciderOf(store), mayRepeat: false },
    { name: "mayRepeat, paged readStream (before)", decider: deciderOf(paged), mayRepeat: true },
    { name: "mayRepeat, findIdempotencyKey (after)", decider: deciderOf(store), mayRepeat: true },
  ];
  const times = modes.map(() => [] as number[]);
  console.log(
    `Deno ${Deno.version.deno}, ${navigator.hardwareConcurrency} cores, load ${load()}; ` +
      `${events} keyed events, ${rounds} rounds x ${perRound} per mode, cache ${cached}`,
  );
  let n = 0;
  for (let round = 0; round < rounds; round++) {
    for (const [m, mode] of modes.entries()) {
      for (let k = 0; k < perRound; k++) {
        const started = performance.now();
        const outcome = await mode.decider.transactEx(
          stream,
          () => [{ type: "Added", data: { n: 1 } }],
          {
            idempotencyKey: `new-${n++}`,
            mayRepeat: mode.mayRepeat,
          },
        );
        times[m].push(performance.now() - started);
        if (outcome.duplicate) throw new Error(`${mode.name}: a new key was taken as a duplicate`);
      }
    }
  }
  console.log("| mode | median ms | min ms | max ms |");
  console.log("| ---- | --------- | ------ | ------ |");
  for (const [m, mode] of modes.entries()) {
    const xs = times[m];
    console.log(
      `| ${mode.name} | ${median(xs).toFixed(0)} | ${Math.min(...xs).toFixed(0)} | ${
        Math.max(...xs).toFixed(0)
      } |`,
    );
  }
  console.log(`load after: ${load()}`);
} finally {
  await pool.end();
}
