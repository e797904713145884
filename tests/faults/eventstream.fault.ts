// File store crash loop (issue 16): a writer process (tests/faults/eventstream/writer.ts)
// appends to one file store through the service and is SIGKILLed KILLS times, a random 0–150 ms
// after it caught up, alternating fsync "always" and "never" (a process kill loses neither).
// After each kill this process opens the store (taking over the dead writer's lock, truncating
// a torn tail) and checks: every acknowledged append is present; no event is torn or misread
// (every frame verifies, sequence numbers run 1..last); every event was decided on the state it
// follows (its `saw` is its sequence number - 1, its `seq` the sequence number it got).
// The same with two writers of the store at once (`shared: true`), both killed each run.
//
//   deno task faults tests/faults/eventstream.fault.ts            # 50 kills, ~30 s
//   IMPEL_FAULTS_SHORT=1 deno test -A tests/faults/eventstream.fault.ts   # 10 kills
//   IMPEL_FAULTS_SEED=123 ...                                      # repeat a run's kill delays
import assert from "node:assert/strict";
import { fileStorage } from "../../eventstream/mod.ts";
import { killIn, seededRandom, spawnScript } from "./support/process.ts";

const KILLS = Deno.env.get("IMPEL_FAULTS_SHORT") ? 10 : 50;
const seed = Number(Deno.env.get("IMPEL_FAULTS_SEED") ?? Date.now());

async function lines(path: string): Promise<string[]> {
  try {
    return (await Deno.readTextFile(path)).split("\n").filter(Boolean);
  } catch {
    return [];
  }
}

Deno.test(`event stream files: ${KILLS} SIGKILLs during appends lose no acknowledged event, yield no torn one`, () =>
  crashLoop(1));

Deno.test(`event stream files, two shared writers: ${KILLS} rounds of SIGKILLs lose no acknowledged event, yield no torn one`, () =>
  crashLoop(2));

async function crashLoop(writers: number) {
  const random = seededRandom(seed);
  const dir = await Deno.makeTempDir({ prefix: "impel-es-fault-" });
  const store = `${dir}/stream`;
  let acked = 0;
  let torn = 0;
  let killedMidRun = 0;
  try {
    for (let run = 1; run <= KILLS; run++) {
      const before = acked;
      const children = Array.from({ length: writers }, (_, w) => {
        const acks = `${dir}/acks-${run}-${w}.txt`;
        const child = spawnScript("tests/faults/eventstream/writer.ts", {
          env: {
            IMPEL_ES_DIR: store,
            IMPEL_ES_ACKS: acks,
            IMPEL_ES_RUN: String(run),
            IMPEL_ES_FSYNC: run % 2 ? "always" : "never",
            IMPEL_ES_SHARED: writers > 1 ? "1" : "0",
          },
          stderrPath: `${dir}/writer-${w}.err`,
        });
        return { acks, child };
      });
      const deadline = Date.now() + 20_000;
      for (const { acks } of children) {
        while (!(await lines(acks)).some((l) => l.startsWith("ready"))) {
          if (Date.now() > deadline) throw new Error(`run ${run}: a writer never got ready`);
          await new Promise((r) => setTimeout(r, 5));
        }
      }
      const endings = await Promise.all(children.map(({ child }) => killIn(child, random() * 150)));
      for (const ending of endings) {
        assert.ok(ending.killed, `run ${run}: a writer exited on its own (${ending.status.code})`);
      }
      for (const { acks } of children) {
        const got = await lines(acks);
        const ready = Number(got.find((l) => l.startsWith("ready"))!.split(" ")[1]);
        assert.ok(
          ready >= before,
          `run ${run} started at ${ready}, below the acknowledged ${before}`,
        );
        for (const l of got) if (l.startsWith("ack ")) acked = Math.max(acked, Number(l.slice(4)));
        if (got.length > 1) killedMidRun++;
      }

      const size = await sizeOfLast(store);
      const storage = await fileStorage(store); // takes over the lock, repairs the tail
      if ((await sizeOfLast(store)) < size) torn++;
      const last = await storage.last();
      assert.ok(last >= acked, `run ${run}: the store ends at ${last}, ${acked} was acknowledged`);
      let seq = 0;
      let batchSaw = -1;
      for (;;) {
        const page = await storage.read(seq, 5000);
        if (page.length === 0) break;
        for (const { seq: s, event } of page) {
          assert.equal(s, ++seq);
          const e = event as { seq: number; saw: number; run: number };
          assert.equal(e.seq, s, `event ${s} was decided as ${e.seq}`);
          // A batch's events share the count its builder saw, which is the sequence number
          // before the batch's first event: the state it was decided on was complete.
          if (e.saw !== batchSaw) {
            assert.equal(e.saw, s - 1, `event ${s} starts a batch decided on ${e.saw} events`);
            batchSaw = e.saw;
          }
          assert.ok(e.run >= 1 && e.run <= run);
        }
      }
      assert.equal(seq, last);
      await storage.close();
    }
  } finally {
    console.log(
      `seed ${seed}: ${KILLS} rounds of kills of ${writers} writer(s), ${acked} events ` +
        `acknowledged, ${torn} torn tails truncated, ` +
        `${killedMidRun} kills after at least one acknowledged append`,
    );
    await Deno.remove(dir, { recursive: true });
  }
  assert.ok(acked > 0, "no append was ever acknowledged: the kills came too early");
}

async function sizeOfLast(dir: string): Promise<number> {
  const segs: string[] = [];
  for await (const e of Deno.readDir(dir)) if (e.name.endsWith(".seg")) segs.push(e.name);
  segs.sort();
  return segs.length ? (await Deno.stat(`${dir}/${segs.at(-1)}`)).size : 0;
}
