// DynamoDB under faults (issue 21): real processes against a DynamoDB Local of the suite's own
// (tests/faults/support/dynamodb.ts: tools/dynamodb.sh on 127.0.0.1:18000 with its tables in a
// directory, so that they survive a restart of the server; the shared instance on 8000 is never
// touched), started empty for each scenario, with fresh tables deleted at the end.
//
// - indexer kills: the indexer (tests/faults/dynamo/indexer.ts: runStreamsIndexer, one index
//   partition per category, epochs of 20 entries) SIGKILLed 0.3–3 s after it is ready, KILLS times,
//   while this process appends to 200 streams through the DynamoDB store; then a last run indexes
//   the rest and stops cleanly. The index, read back through a dynamoSource, must hold every event
//   exactly once and in stream order with the types written, nothing parked; each restart must
//   resume from the saved shard progress, and what it redid is counted.
// - reactor and indexer kills: a reactor (tests/faults/dynamo/reactor.ts: dynamoSource with event
//   bodies, DynamoDB checkpoints, streamsSink, a handler logging each call's start and end) and
//   the indexer, SIGKILLed in turn, KILLS kills in all (the reactor 3–8 s after its spawn, the
//   indexer 2–8 s after it is ready), while appends go on; then a last reactor run goes
//   to the tail and stops cleanly. The bars of the MessageDB suite: 0 lost, 0 reordered or skipped
//   within a run, 0 overlapping calls, at most 2× the events handled, the checkpoint advancing in
//   most killed runs with work to do.
// - server restarts: DynamoDB Local stopped (SIGTERM) or SIGKILLed under a running indexer and
//   reactor, and started again (RESTARTS); each time a probe event appended once the server is
//   back must be indexed and handled without anyone's help: no process may exit (one that does
//   is started again, as a supervisor would, so that the figures are complete, and the scenario
//   fails). Then the same checks as above.
// Figures are printed as `FIGURES {json}` lines for bench/RESULTS.md (FAULTS → DynamoDB).
//
//   deno task faults tests/faults/dynamo.fault.ts                       # 50 + 50 kills, 3 restarts
//   IMPEL_FAULTS_SHORT=1 deno task faults tests/faults/dynamo.fault.ts  # 6 + 6 kills, 1 restart
//   FAULT_SCENARIOS=indexer,reactor,server ...                          # some scenarios only
//   FAULT_KEEP_LOGS=1 ...                                               # keep the logs of a pass
//   IMPEL_FAULTS_SEED=123 ...                                           # repeat the kill delays
//
// Needs Java 17 and the DynamoDB Local jars (tools/dynamodb.sh fetch); no other server.
import assert from "node:assert/strict";
import { BatchGetItemCommand, GetItemCommand } from "@aws-sdk/client-dynamodb";
import { dynamoCheckpoints } from "../../checkpoints/dynamo.ts";
import { memoryCheckpoints } from "../../checkpoints/memory.ts";
import type { Batch } from "../../core/batch.ts";
import type { CheckpointStore } from "../../core/checkpoints.ts";
import { dynamoSource, encodePosition } from "../../sources/dynamo.ts";
import { dynamoStore } from "../../stores/dynamo.ts";
import { dynamoIndexer, listPartitions, tipKey } from "../../stores/dynamo-indexer.ts";
import { analyse, type RunLog } from "./messagedb/analyse.ts";
import { indexChecker, indexerFigures } from "./dynamo/analyse.ts";
import { typeAt, writer } from "./dynamo/writer.ts";
import { ownDynamo } from "./support/dynamodb.ts";
import {
  type Child,
  exitWithin,
  killAfter,
  killIn,
  seededRandom,
  spawnScript,
  stopWithin,
  untilLine,
} from "./support/process.ts";

const SHORT = Deno.env.get("IMPEL_FAULTS_SHORT") === "1";
const SEED = Number(Deno.env.get("IMPEL_FAULTS_SEED") ?? Date.now() % 1_000_000);
const KILLS = SHORT ? 6 : 50;
// How DynamoDB Local goes down (SIGTERM or SIGKILL) and for how long before it is started again
// (which itself takes 5–20 s here). The long one outlasted the indexer's retries when they
// stopped after maxAttempts (about 30 s); now every process must carry on through it.
const RESTARTS: { how: "stop" | "kill"; downMs: number }[] = SHORT
  ? [{ how: "kill", downMs: 2000 }]
  : [{ how: "stop", downMs: 5000 }, { how: "kill", downMs: 5000 }, { how: "kill", downMs: 45_000 }];
// A reactor run is killed this long after its spawn: [least, spread] in ms. Later than the
// MessageDB suite's 1–3 s because a run needs about 1 s to start (Deno loading the AWS SDK) and
// 1.5–3.5 s more for its first batch (a read of every stream's events in it) on this machine.
const REACTOR_KILL_MS = [3000, 5000];
// 200 streams over 4 categories, hence 4 index partitions (tranches).
const STREAMS = Array.from({ length: 200 }, (_, k) => `Fault${k % 4}-${Math.floor(k / 4)}`);
const opts = { sanitizeOps: false, sanitizeResources: false };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const dynamo = ownDynamo();
const client = dynamo.client;
console.log(`seed ${SEED}${SHORT ? " (short)" : ""}`);

function report(scenario: string, figures: unknown) {
  console.log(
    `FIGURES ${JSON.stringify({ scenario, seed: SEED, short: SHORT, ...figures as object })}`,
  );
}

/**
 * Waits until `condition` resolves true, checking every `everyMs`, or fails after `ms`; returns
 * how long it waited. Conditions that read the whole index poll every second: DynamoDB Local
 * gains nothing from requests at once, and such a poll every 200 ms doubled the indexer's time
 * per slice.
 */
async function until(
  what: string,
  condition: () => Promise<boolean>,
  ms: number,
  everyMs = 1000,
): Promise<number> {
  const started = Date.now(), deadline = started + ms;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(everyMs);
  }
  return Date.now() - started;
}

/** The versions the index holds for `streams` (its `$stream#` items). */
async function indexedVersions(
  indexTable: string,
  streams: readonly string[],
): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (let k = 0; k < streams.length; k += 100) {
    let keys = streams.slice(k, k + 100).map((s) => ({
      p: { S: `$stream#${s}` },
      i: { N: "0" },
    }));
    while (keys.length > 0) {
      const res = await client.send(
        new BatchGetItemCommand({
          RequestItems: { [indexTable]: { Keys: keys, ConsistentRead: true } },
        }),
      );
      for (const item of res.Responses?.[indexTable] ?? []) {
        out.set(item.p.S!.slice("$stream#".length), Number(item.n?.N ?? 0));
      }
      keys = (res.UnprocessedKeys?.[indexTable]?.Keys ?? []) as typeof keys;
    }
  }
  return out;
}

/** Whether the index holds every event of `written` (events per stream). */
async function indexed(indexTable: string, written: ReadonlyMap<string, number>) {
  const versions = await indexedVersions(indexTable, [...written.keys()]);
  return [...written].every(([s, n]) => (versions.get(s) ?? 0) >= n);
}

/** The tip of each index partition, as a position: the next entry to be indexed. */
async function tips(indexTable: string): Promise<Map<string, bigint>> {
  const get = async (p: string) =>
    (await client.send(
      new GetItemCommand({
        TableName: indexTable,
        Key: { p: { S: p }, i: { N: "0" } },
        ConsistentRead: true,
      }),
    )).Item;
  const out = new Map<string, bigint>();
  for (const partition of await listPartitions(client, indexTable)) {
    const tip = await get(tipKey(partition));
    out.set(partition, encodePosition(Number(tip?.ep?.N ?? 0), Number(tip?.o?.N ?? 0)));
  }
  return out;
}

/** A group's committed position per partition. */
async function positions(checkpoints: CheckpointStore, source: string, group: string) {
  const out = new Map<string, bigint>();
  for (const { tranche, position } of await checkpoints.list!(source, group)) {
    out.set(tranche, position);
  }
  return out;
}

const sum = (m: ReadonlyMap<string, bigint>) => [...m.values()].reduce((a, b) => a + b, 0n);

/** Whether every partition of `target` is committed at or beyond it. */
function reached(committed: ReadonlyMap<string, bigint>, target: ReadonlyMap<string, bigint>) {
  return [...target].every(([p, at]) => (committed.get(p) ?? 0n) >= at);
}

/** Reads the whole index through a dynamoSource (index-only) and checks it against `written`. */
async function checkIndex(indexTable: string, written: ReadonlyMap<string, number>) {
  const checker = indexChecker(written, typeAt);
  const stop = new AbortController();
  const reader = dynamoSource({
    client,
    indexTable,
    group: "verify",
    checkpoints: memoryCheckpoints(),
    startFrom: "start",
    tailSleepMs: 100,
    signal: stop.signal,
  }).getReader();
  const tail = new Map<string, boolean>();
  const deadline = Date.now() + 60_000;
  try {
    while (Date.now() < deadline) {
      const { value, done } = await reader.read();
      if (done) break;
      const batch = value as Batch;
      checker.add(batch);
      tail.set(batch.tranche, batch.isTail);
      if (checker.complete() && tail.size === 4 && [...tail.values()].every((t) => t)) break;
    }
  } finally {
    stop.abort();
    await reader.cancel().catch(() => {});
  }
  return checker.figures();
}

/** Removes a scenario's logs once it has passed, unless FAULT_KEEP_LOGS=1. */
async function removeLogs(dir: string): Promise<void> {
  if (Deno.env.get("FAULT_KEEP_LOGS") !== "1") await Deno.remove(dir, { recursive: true });
}

async function readLog(path: string): Promise<string> {
  return await Deno.readTextFile(path).catch(() => "");
}

// Every process spawned, so that a scenario that fails half-way leaves none running.
const children: Child[] = [];
async function killAll() {
  for (const child of children.splice(0)) {
    child.kill();
    await child.status;
  }
}

/** Spawns indexer and reactor processes, each run logging to its own file under `dir`. */
function processes(dir: string, tables: { events: string; index: string; checkpoints?: string }) {
  const env = {
    DYNAMODB_ENDPOINT: dynamo.endpoint,
    EVENT_TABLE: tables.events,
    INDEX_TABLE: tables.index,
    CHECKPOINT_TABLE: tables.checkpoints ?? "",
    FAULT_GROUP: "reactor",
  };
  const indexerLogs: string[] = [];
  const reactorLogs: string[] = [];
  const indexerSpawns: number[] = [];
  return {
    indexerLogs,
    reactorLogs,
    indexer(): Child & { log: string } {
      const log = `${dir}/indexer-${String(indexerLogs.length).padStart(3, "0")}.log`;
      indexerLogs.push(log);
      const child = spawnScript("tests/faults/dynamo/indexer.ts", {
        env: { ...env, LOG: log },
        stderrPath: `${log}.err`,
      });
      indexerSpawns.push(performance.timeOrigin + child.startedAt);
      children.push(child);
      return Object.assign(child, { log });
    },
    /** The median time from an indexer's spawn to its `ready` line, ms. */
    async indexerReadyMs(): Promise<number> {
      const ready = (await this.indexerTexts()).flatMap((text, k) => {
        const line = text.split("\n").find((l) => l.startsWith("ready\t"));
        return line ? [Number(line.split("\t")[2]) - indexerSpawns[k]] : [];
      }).sort((a, b) => a - b);
      return Math.round(ready[Math.floor(ready.length / 2)] ?? NaN);
    },
    reactor(final = false): Child & { log: string } {
      const log = `${dir}/reactor-${String(reactorLogs.length).padStart(3, "0")}.log`;
      reactorLogs.push(log);
      const child = spawnScript("tests/faults/dynamo/reactor.ts", {
        env: { ...env, FAULT_LOG: log, FAULT_FINAL: final ? "1" : "0" },
        stderrPath: `${log}.err`,
      });
      children.push(child);
      return Object.assign(child, { log });
    },
    async indexerTexts(): Promise<string[]> {
      return await Promise.all(indexerLogs.map(readLog));
    },
  };
}

/** Throws with its stderr if `ending` was not a kill: a process must not exit on its own. */
async function mustHaveBeenKilled(
  what: string,
  child: { log: string },
  ending: { killed: boolean; status: Deno.CommandStatus },
) {
  if (ending.killed) return;
  throw new Error(
    `${what} exited on its own (${JSON.stringify(ending.status)}): ${await readLog(
      `${child.log}.err`,
    )}`,
  );
}

/** SIGTERM once it is ready (listening for it), and the clean exit that must follow in 30 s. */
async function stopCleanly(what: string, child: Child & { log: string }) {
  await untilLine(child, child.log, "ready\t", 60_000);
  const status = await stopWithin(child, 30_000, what);
  assert.equal(status.code, 0, `${what} stopped cleanly: ${await readLog(`${child.log}.err`)}`);
}

Deno.test(`faults: DynamoDB`, opts, async (t) => {
  try {
    // FAULT_SCENARIOS=indexer,reactor,server runs some of them only (all by default).
    const only = Deno.env.get("FAULT_SCENARIOS")?.split(",");
    const step = (key: string, name: string, fn: () => Promise<void>) =>
      t.step({
        name,
        ignore: only !== undefined && !only.includes(key),
        fn: async () => {
          try {
            await dynamo.server("reset");
            await fn();
          } finally {
            await killAll();
          }
        },
      });
    await step("indexer", `the indexer SIGKILLed ${KILLS} times under appends`, indexerKills);
    await step("reactor", `reactor and indexer SIGKILLed in turn, ${KILLS} kills`, reactorKills);
    await step("server", `DynamoDB Local restarted ${RESTARTS.length} times`, serverRestarts);
  } finally {
    await dynamo.server("stop");
  }
});

// Events per stream appended (in one append) before the indexer kills begin.
const FILL = SHORT ? 2 : 5;

async function indexerKills() {
  const random = seededRandom(SEED), writes = seededRandom(SEED + 1);
  await using tables = await dynamo.tables({ events: "events", index: "index" });
  const dir = await Deno.makeTempDir({ prefix: "impel-faults-dynamo-indexer-" });
  console.log(`indexer kills: logs in ${dir}`);
  const w = writer(dynamoStore(client, { tableName: tables.events }), writes);
  const procs = processes(dir, tables);
  const started = Date.now();
  // A backlog first (and a warm server: DynamoDB Local's first writes are slow), then appends
  // all through the kills.
  await w.fill(STREAMS, FILL);
  w.start(STREAMS, { appenders: 2, paceMs: 0, maxEvents: SHORT ? 2000 : 6000 });
  let killedMs = 0;
  try {
    for (let i = 0; i < KILLS; i++) {
      const child = procs.indexer();
      // From its ready line: a run needs 1–2 s to start here (Deno loading the AWS SDK), so that
      // kills timed from the spawn would nearly all land before it reads a record.
      await untilLine(child, child.log, "ready\t", 60_000);
      const ending = await killIn(child, 300 + random() * 2700);
      await mustHaveBeenKilled(`indexer run ${i}`, child, ending);
      killedMs += ending.livedMs;
    }
  } finally {
    await w.stop();
  }
  const final = procs.indexer();
  const catchUpMs = await until("the last indexer run to index every event", async () => {
    if (await Promise.race([final.status.then(() => true), sleep(0).then(() => false)])) {
      throw new Error(`the last indexer run exited: ${await readLog(`${final.log}.err`)}`);
    }
    return await indexed(tables.index, w.versions);
  }, 180_000);
  await stopCleanly("the last indexer run", final);

  const figures = indexerFigures(await procs.indexerTexts());
  const index = await checkIndex(tables.index, w.versions);
  const parked = await dynamoIndexer(client, { indexTable: tables.index }).parked();
  report("indexer kills", {
    kills: KILLS,
    streams: w.versions.size,
    events: w.events(),
    seconds: Math.round((Date.now() - started) / 1000),
    meanLivedMs: Math.round(killedMs / KILLS),
    medianReadyMs: await procs.indexerReadyMs(),
    lastRunCatchUpMs: catchUpMs,
    indexer: figures,
    index,
    parked: parked.length,
  });
  assert.equal(figures.badLines, 0);
  assert.deepEqual(figures.rejections, []);
  assert.equal(index.missing, 0, "every event written is in the index");
  assert.equal(index.duplicates, 0, "no event twice in the index");
  assert.equal(index.reordered, 0, "every stream's events in order");
  assert.equal(index.wrongType, 0, "the types written at each index");
  assert.equal(index.unknown, 0, "nothing in the index that was not written");
  assert.equal(parked.length, 0, `nothing parked: ${JSON.stringify(parked.slice(0, 3))}`);
  assert.equal(figures.gaps + figures.parked + figures.dropped, 0, "no gap, park or drop");
  assert.equal(figures.startedOverAfterProgress, 0, "each restart resumed from saved progress");
  // A kill loses at most the slice of a read being indexed: 100 records (recordsPerIngest), two
  // per append (the event item and its stream's tip), of up to FILL events each.
  const redoBar = 50 * Math.max(3, FILL);
  assert.ok(figures.maxRedoneInRun <= redoBar, `a restart redid ${figures.maxRedoneInRun} events`);
  assert.ok(figures.epochsClosed > 0, "epochs closed under the kills too");
  await removeLogs(dir);
}

async function reactorKills() {
  const random = seededRandom(SEED + 2), writes = seededRandom(SEED + 3);
  await using tables = await dynamo.tables({
    events: "events",
    index: "index",
    checkpoints: "checkpoints",
  });
  const dir = await Deno.makeTempDir({ prefix: "impel-faults-dynamo-reactor-" });
  console.log(`reactor kills: logs in ${dir}`);
  const w = writer(dynamoStore(client, { tableName: tables.events }), writes);
  const procs = processes(dir, tables);
  const checkpoints = dynamoCheckpoints(client, { tableName: tables.checkpoints });
  const source = `dynamo:${tables.index}`, group = "reactor";
  const started = Date.now();
  await w.fill(STREAMS, SHORT ? 3 : 10);
  const runs: RunLog[] = [];
  const spawnReactor = async (final = false) => {
    const before = sum(await positions(checkpoints, source, group));
    const headAtStart = sum(await tips(tables.index));
    return { child: procs.reactor(final), before, headAtStart };
  };
  const record = async (r: Awaited<ReturnType<typeof spawnReactor>>, livedMs: number) =>
    runs.push({
      log: await readLog(r.child.log),
      pid: r.child.pid,
      spawnedAt: performance.timeOrigin + r.child.startedAt,
      livedMs,
      before: r.before,
      after: sum(await positions(checkpoints, source, group)),
      headAtStart: r.headAtStart,
    });
  let indexer = procs.indexer();
  let reactor = await spawnReactor();
  w.start(STREAMS, { appenders: 2, paceMs: 100, maxEvents: Infinity });
  try {
    for (let i = 0; i < KILLS; i++) {
      if (i % 2 === 0) {
        const ending = await killAfter(
          reactor.child,
          REACTOR_KILL_MS[0] + random() * REACTOR_KILL_MS[1],
        );
        await mustHaveBeenKilled(`reactor run ${runs.length}`, reactor.child, ending);
        await record(reactor, ending.livedMs);
        reactor = await spawnReactor();
      } else {
        // From its ready line, 2–8 s: under a reactor, a run's first read of the stream (1000
        // records) and first slice take seconds on DynamoDB Local here, and a run killed
        // sooner never records progress.
        await untilLine(indexer, indexer.log, "ready\t", 60_000);
        const ending = await killIn(indexer, 2000 + random() * 6000);
        await mustHaveBeenKilled(`indexer run ${procs.indexerLogs.length - 1}`, indexer, ending);
        indexer = procs.indexer();
      }
    }
  } finally {
    await w.stop();
  }
  const last = await killIn(reactor.child, 0);
  await record(reactor, last.livedMs);
  await until("the indexer to index every event", () => indexed(tables.index, w.versions), 180_000);
  const final = await spawnReactor(true);
  const status = await exitWithin(final.child, 300_000, "the final reactor run");
  assert.equal(status.code, 0, `final run failed: ${await readLog(`${final.child.log}.err`)}`);
  await record(final, performance.now() - final.child.startedAt);
  await stopCleanly("the indexer", indexer);

  const figures = analyse(runs, w.versions);
  const indexing = indexerFigures(await procs.indexerTexts());
  const index = await checkIndex(tables.index, w.versions);
  const head = await tips(tables.index);
  const committed = await positions(checkpoints, source, group);
  report("reactor and indexer kills", {
    kills: KILLS,
    reactorKills: Math.ceil(KILLS / 2),
    indexerKills: Math.floor(KILLS / 2),
    seconds: Math.round((Date.now() - started) / 1000),
    ...figures,
    indexer: indexing,
    indexerReadyMs: await procs.indexerReadyMs(),
    index,
  });
  assert.deepEqual(committed, head, "the final run committed every partition's tip");
  assert.equal(figures.lost, 0, "every event handled at least once");
  assert.equal(figures.unknown, 0, "no event handled that was never written");
  assert.equal(figures.reordered, 0, "per stream and run, calls in index order");
  assert.equal(figures.skippedInRun, 0, "per stream and run, no index jumped over");
  assert.equal(figures.overlaps, 0, "no stream handled twice at once");
  assert.equal(figures.foreignLines, 0, "every log line from its run's process");
  assert.ok(
    figures.killedRunsAdvanced * 2 > figures.killedRunsWithWork,
    `the checkpoint advanced in most killed runs with work to do (${figures.killedRunsAdvanced} of ${figures.killedRunsWithWork})`,
  );
  assert.ok(
    figures.handledPerEvent <= 2,
    `handled at most 2x the events (${figures.handledPerEvent.toFixed(2)}x)`,
  );
  assert.equal(index.missing + index.duplicates + index.reordered + index.unknown, 0);
  assert.equal(indexing.gaps + indexing.parked + indexing.dropped, 0, "no gap, park or drop");
  assert.equal(indexing.startedOverAfterProgress, 0, "each indexer restart resumed");
  await removeLogs(dir);
}

async function serverRestarts() {
  const writes = seededRandom(SEED + 4);
  await using tables = await dynamo.tables({
    events: "events",
    index: "index",
    checkpoints: "checkpoints",
  });
  const dir = await Deno.makeTempDir({ prefix: "impel-faults-dynamo-server-" });
  console.log(`server restarts: logs in ${dir}`);
  const w = writer(dynamoStore(client, { tableName: tables.events }), writes);
  const procs = processes(dir, tables);
  const checkpoints = dynamoCheckpoints(client, { tableName: tables.checkpoints });
  const source = `dynamo:${tables.index}`, group = "reactor";
  const started = Date.now();
  await w.fill(STREAMS, SHORT ? 2 : 5);
  let indexer = procs.indexer(), reactor = procs.reactor();
  // A supervisor's part: a process that exits is counted, with its reason (the indexer's
  // rejection in its log, the reactor's in its stderr), and started again.
  const exits: { name: string; code: number; atMs: number; reason: string }[] = [];
  const supervise = async () => {
    for (const [name, child] of [["indexer", indexer], ["reactor", reactor]] as const) {
      if (!(await Promise.race([child.status.then(() => true), sleep(0).then(() => false)]))) {
        continue;
      }
      const log = await readLog(child.log), err = await readLog(`${child.log}.err`);
      const reason = name === "indexer"
        ? (log.trim().split("\n").at(-1) ?? "").split("\t").slice(2).join(" ")
        : err.split("\n").find((l) => l.startsWith("run() rejected")) ?? "";
      const { code } = await child.status;
      exits.push({ name, code, atMs: Date.now() - started, reason: reason.slice(0, 300) });
      if (name === "indexer") indexer = procs.indexer();
      else reactor = procs.reactor();
    }
  };
  const caughtUp = async (what: string) => {
    const written = new Map(w.versions);
    await until("every event to be indexed", async () => {
      await supervise();
      return await indexed(tables.index, written);
    }, 120_000);
    const target = await tips(tables.index);
    return await until(what, async () => {
      await supervise();
      return reached(await positions(checkpoints, source, group), target);
    }, 120_000);
  };
  w.start(STREAMS, { appenders: 2, paceMs: 100, maxEvents: Infinity });
  const outcomes: Record<string, unknown>[] = [];
  try {
    await caughtUp("the reactor to handle the backlog");
    for (const [k, { how, downMs }] of RESTARTS.entries()) {
      const down = Date.now();
      await dynamo.server(how);
      await sleep(downMs);
      await dynamo.server("start");
      const back = Date.now();
      const probe = `Fault0-probe${k}`;
      await w.append(probe, 1);
      const appendedMs = Date.now() - back;
      const indexedMs = appendedMs + await until(
        `${probe} to be indexed`,
        async () => {
          await supervise();
          return (await indexedVersions(tables.index, [probe])).get(probe) === 1;
        },
        120_000,
        200,
      );
      const line = `end\t${probe}\t0\t1\t`;
      const handledMs = indexedMs + await until(
        `${probe} to be handled`,
        async () => {
          await supervise();
          return (await Promise.all(procs.reactorLogs.map(readLog))).some((l) => l.includes(line));
        },
        120_000,
        200,
      );
      outcomes.push({
        how,
        waitedMs: downMs,
        outageMs: back - down,
        backAtMs: back - started,
        appendedMs,
        indexedMs,
        handledMs,
      });
      await sleep(3000);
    }
  } finally {
    await w.stop();
  }
  const drainMs = await caughtUp("the reactor to handle everything");
  await stopCleanly("the reactor", reactor);
  await stopCleanly("the indexer", indexer);

  const runs: RunLog[] = [];
  for (const path of procs.reactorLogs) {
    const log = await readLog(path);
    const pid = Number(log.split("\n")[0].split("\t")[1]);
    runs.push({ log, pid, spawnedAt: 0, livedMs: 0, before: 0n, after: 0n, headAtStart: 0n });
  }
  const figures = analyse(runs, w.versions);
  const indexing = indexerFigures(await procs.indexerTexts());
  const index = await checkIndex(tables.index, w.versions);
  report("server restarts", {
    restarts: outcomes,
    exits,
    events: w.events(),
    writerRetries: w.retried,
    drainMs,
    seconds: Math.round((Date.now() - started) / 1000),
    lost: figures.lost,
    reordered: figures.reordered,
    skippedInRun: figures.skippedInRun,
    overlaps: figures.overlaps,
    handledPerEvent: figures.handledPerEvent,
    indexer: indexing,
    index,
  });
  // A supervisor kept the scenario going so that its figures are complete, but none is needed.
  assert.deepEqual(exits, [], "the indexer and the reactor carried on through every outage");
  assert.equal(figures.lost, 0, "every event handled at least once");
  assert.equal(figures.unknown, 0);
  assert.equal(figures.reordered, 0);
  assert.equal(figures.skippedInRun, 0);
  assert.equal(figures.overlaps, 0);
  assert.equal(figures.foreignLines, 0);
  assert.equal(index.missing + index.duplicates + index.reordered + index.unknown, 0);
  assert.equal(indexing.gaps + indexing.parked + indexing.dropped, 0, "no gap, park or drop");
  await removeLogs(dir);
}
