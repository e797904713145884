// The decider's conflict backoff, requireFresh for stale refusals, and idempotency keys: on the
// memory store, on MessageDB against the real server (with a writer SIGKILLed mid-append).
import assert from "node:assert/strict";
import { createCodec } from "../../core/codec.ts";
import {
  createDecider,
  createStateCache,
  IDEMPOTENCY_KEY,
  MaxAttemptsExceededError,
} from "../../core/decider.ts";
import { InvalidArgumentError } from "../../core/errors.ts";
import type { EventStore } from "../../core/store.ts";
import { createMemoryStore } from "../../sources/memory.ts";
import { messageDbStore } from "../../stores/messagedb.ts";
import { poolFixture, unique, url } from "../support/postgres.ts";

const withPool = poolFixture({ max: 4 });
type Event =
  | { type: "Added"; data: { n: number } }
  | { type: "Totalled"; data: { total: number } };
const codec = createCodec<Event>({ Added: {}, Totalled: {} });
const fold = (total: number, events: readonly Event[]) =>
  events.reduce((t, e) => e.type === "Totalled" ? e.data.total : t + e.data.n, total);
const add = (n: number): Event[] => [{ type: "Added", data: { n } }];
const stream = () => `${unique("wsOpt")}-1`;
const pgTest = (name: string, fn: () => Promise<void>) =>
  Deno.test({ name, sanitizeOps: false, sanitizeResources: false, fn });

Deno.test("decider: conflicts wait the configured backoff between attempts", async () => {
  const store = createMemoryStore();
  const elapsed = async (retry: { initialDelayMs: number }) => {
    const decider = createDecider<Event, number>({
      store,
      codec,
      initial: 0,
      fold,
      retry: { ...retry, factor: 1, jitter: 0 },
    });
    const s = stream();
    const started = performance.now();
    await assert.rejects(
      decider.transact(s, async () => {
        await store.append(s, [{ type: "Added", data: { n: 1 } }], "any"); // always beaten
        return add(1);
      }),
      MaxAttemptsExceededError,
    );
    return performance.now() - started;
  };
  assert.ok((await elapsed({ initialDelayMs: 40 })) >= 78); // two waits of 40 ms
  assert.ok((await elapsed({ initialDelayMs: 0 })) < 40);
  assert.throws(
    () => createDecider({ store, codec, initial: 0, fold, retry: { jitter: 2 } }),
    (e) => e instanceof InvalidArgumentError && e.field === "retry.jitter",
  );
});

Deno.test("decider: transacts on one stream in one process take turns", async () => {
  const store = createMemoryStore();
  const decider = createDecider<Event, number>({ store, codec, initial: 0, fold });
  const s = stream();
  let running = 0, most = 0;
  const outcomes = await Promise.all(
    Array.from({ length: 8 }, () =>
      decider.transactEx(s, async (total) => {
        most = Math.max(most, ++running);
        await new Promise((resolve) => setTimeout(resolve, 2));
        running--;
        return add(total + 1);
      })),
  );
  assert.equal(most, 1);
  assert.ok(outcomes.every((o) => o.attempts === 1));
  // Each decided on the state the previous one left: 1, 2, 3, ... summed.
  assert.equal(await decider.query(s, (t) => t), 2 ** 8 - 1);
  // A failing transact does not block the next.
  await assert.rejects(decider.transact(s, () => Promise.reject(new Error("no"))), /no/);
  assert.equal((await decider.transactEx(s, () => add(1))).version, 9);
});

async function requireFreshChecksStaleRefusals(store: EventStore): Promise<void> {
  const s = stream();
  const cache = createStateCache();
  const decider = createDecider<Event, number>({ store, codec, initial: 0, fold, cache });
  await decider.transact(s, () => add(1));
  await store.append(s, [codec.encode(add(2)[0])], 1); // another process
  const refusal = (total: number) => ({ events: [], result: total });
  // allowStale alone: the refusal's result rests on the cached state, and nothing checks it.
  const stale = await decider.transactEx(s, refusal, { load: "allowStale" });
  assert.deepEqual([stale.result, stale.version], [1, 1]);
  const fresh = await decider.transactEx(s, refusal, { load: "allowStale", requireFresh: true });
  assert.deepEqual([fresh.result, fresh.version, fresh.attempts], [3, 2, 2]);
  // Up to date already: one decision, no second.
  const again = await decider.transactEx(s, refusal, { load: "allowStale", requireFresh: true });
  assert.deepEqual([again.result, again.attempts], [3, 1]);
}

async function aRetriedCommandAppliesOnce(store: EventStore): Promise<void> {
  const s = stream();
  const snapshot = {
    isOrigin: (e: Event) => e.type === "Totalled",
    toSnapshot: (total: number): Event => ({ type: "Totalled", data: { total } }),
    every: 3,
  };
  const cache = createStateCache();
  const writer = createDecider<Event, number>({ store, codec, initial: 0, fold, cache, snapshot });
  const first = await writer.transactEx(s, () => add(5), { idempotencyKey: "cmd-1" });
  assert.equal(first.duplicate, false);
  const [stored] = await store.readStream(s);
  assert.equal((stored.meta as Record<string, unknown>)[IDEMPOTENCY_KEY], "cmd-1");
  // The same process retries: recognised from the cache.
  const retried = await writer.transactEx(s, () => add(5), { idempotencyKey: "cmd-1" });
  assert.deepEqual([retried.duplicate, retried.appended, retried.state], [true, 0, 5]);
  // Other commands land, a snapshot (every 3) is written; a cold decider still knows cmd-1.
  for (const k of [2, 3, 4]) await writer.transact(s, () => add(1), { idempotencyKey: `cmd-${k}` });
  const types = (await store.readStream(s)).map((e) => e.type[0]).join("");
  assert.equal(types, "AAATA");
  const cold = createDecider<Event, number>({ store, codec, initial: 0, fold, snapshot });
  for (const key of ["cmd-1", "cmd-3", "cmd-4"]) {
    const outcome = await cold.transactEx(s, () => add(5), { idempotencyKey: key });
    assert.equal(outcome.duplicate, true, key);
  }
  assert.equal(await cold.query(s, (t) => t), 8);
  // An unknown key applies; empty keys are refused.
  assert.equal((await cold.transactEx(s, () => add(1), { idempotencyKey: "cmd-9" })).appended, 1);
  await assert.rejects(
    cold.transact(s, () => add(1), { idempotencyKey: "" }),
    (e) => e instanceof InvalidArgumentError && e.field === "idempotencyKey",
  );
  // Keys are remembered within the window only.
  const short = createDecider<Event, number>({
    store,
    codec,
    initial: 0,
    fold,
    idempotencyWindow: 1,
  });
  const t = stream();
  await short.transact(t, () => add(1), { idempotencyKey: "a" });
  await short.transact(t, () => add(1), { idempotencyKey: "b" });
  assert.equal((await short.transactEx(t, () => add(1), { idempotencyKey: "b" })).duplicate, true);
  assert.equal((await short.transactEx(t, () => add(1), { idempotencyKey: "a" })).duplicate, false);
}

async function aLostReplyIsRetriedOnce(store: EventStore): Promise<void> {
  // A deliberate fault: the append lands but its reply is lost.
  let lose = true;
  const lossy: EventStore = {
    readStream: (s, o) => store.readStream(s, o),
    async append(s, events, expected) {
      const result = await store.append(s, events, expected);
      if (lose) throw new Error("connection reset after commit");
      return result;
    },
  };
  const s = stream();
  const decider = createDecider<Event, number>({ store: lossy, codec, initial: 0, fold });
  await assert.rejects(decider.transact(s, () => add(7), { idempotencyKey: "pay-1" }), /reset/);
  lose = false;
  const retry = await decider.transactEx(s, () => add(7), { idempotencyKey: "pay-1" });
  assert.equal(retry.duplicate, true);
  assert.equal((await store.readStream(s)).length, 1);
}

const scenarios: Array<[string, (store: EventStore) => Promise<void>]> = [
  [
    "requireFresh re-decides a refusal made on a stale cached state",
    requireFreshChecksStaleRefusals,
  ],
  ["a command retried with its idempotency key applies once", aRetriedCommandAppliesOnce],
  ["an append whose reply was lost is recognised on retry", aLostReplyIsRetriedOnce],
];
for (const [name, scenario] of scenarios) {
  Deno.test(`decider on memory: ${name}`, () => scenario(createMemoryStore()));
  pgTest(`decider on MessageDB: ${name}`, () => withPool((pool) => scenario(messageDbStore(pool))));
}

// The child transacts keyed commands in order and says when each starts and ends.
const child = (s: string) => `
import pg from "pg";
import { createCodec } from "${new URL("../../core/codec.ts", import.meta.url)}";
import { createDecider } from "${new URL("../../core/decider.ts", import.meta.url)}";
import { messageDbStore } from "${new URL("../../stores/messagedb.ts", import.meta.url)}";
const pool = new pg.Pool({ connectionString: ${JSON.stringify(url)}, max: 2 });
const decider = createDecider({
  store: messageDbStore(pool),
  codec: createCodec({ Added: {} }),
  initial: 0,
  fold: (t, events) => t + events.length,
});
for (let k = 0; k < 10_000; k++) {
  console.log("start " + k);
  await decider.transact(${JSON.stringify(s)}, () => [{ type: "Added", data: { k } }], {
    idempotencyKey: "cmd-" + k,
  });
  console.log("done " + k);
}
`;

pgTest(
  "decider on MessageDB: commands of a writer SIGKILLed mid-append, retried, apply once",
  () =>
    withPool(async (pool) => {
      const store = messageDbStore(pool);
      const decider = createDecider<Event, number>({
        store,
        codec,
        initial: 0,
        fold: (t, events) => t + events.length,
      });
      let landedInFlight = 0;
      const kills = 4;
      for (let kill = 0; kill < kills; kill++) {
        const s = stream();
        const proc = new Deno.Command(Deno.execPath(), {
          args: ["eval", "--ext=ts", child(s)],
          cwd: new URL("../..", import.meta.url).pathname,
          stdout: "piped",
          stderr: "null",
        }).spawn();
        let out = "";
        const reader = proc.stdout.pipeThrough(new TextDecoderStream()).getReader();
        const deadline = Date.now() + 30_000;
        // Kill once it has acknowledged a few commands, at a random point of the next ones.
        const target = 5 + Math.floor(Math.random() * 20);
        while (!out.includes(`done ${target}\n`) && Date.now() < deadline) {
          const { value, done } = await reader.read();
          if (done) break;
          out += value;
        }
        await new Promise((resolve) => setTimeout(resolve, Math.random() * 6));
        proc.kill("SIGKILL");
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          out += value;
        }
        await proc.status;
        const started = [...out.matchAll(/start (\d+)/g)].map((m) => Number(m[1]));
        assert.ok(started.length > target, `the child got to ${started.length} commands`);
        const last = Math.max(...started);
        const acknowledged = out.includes(`done ${last}\n`);
        const before = (await store.readStream(s)).length;
        if (!acknowledged && before === last + 1) landedInFlight++;
        // The caller retries every command it sent, acknowledged or not.
        for (let k = 0; k <= last; k++) {
          await decider.transact(s, () => [{ type: "Added", data: { n: k } }], {
            idempotencyKey: `cmd-${k}`,
          });
        }
        const events = await store.readStream(s);
        const keys = events.map((e) => (e.meta as Record<string, unknown>)[IDEMPOTENCY_KEY]);
        assert.deepEqual(keys, Array.from({ length: last + 1 }, (_, k) => `cmd-${k}`));
      }
      console.log(`in-flight commands that landed before the kill: ${landedInFlight} of ${kills}`);
    }),
);
