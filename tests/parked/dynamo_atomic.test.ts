// The DynamoDB park store without clocks and without half-done changes (issue 12): episode ids
// come from a per-stream counter, so members whose clocks disagree still order a stream's
// episodes as they happened; parking again after a failed release, a bounded skip and a claim's
// renewal with a release's progress are each one transaction, so a process killed between any
// two of the store's writes leaves the episode as before or as after, and a sink whose claim
// lapsed records no progress. Against DynamoDB Local; a "kill" is a client that fails every
// request from the n-th write on, as a dead process sends nothing more.
import assert from "node:assert/strict";
import { DeleteTableCommand, ListTablesCommand } from "@aws-sdk/client-dynamodb";
import { createParkTable, dynamoParkStore } from "../../parked/dynamo.ts";
import { StreamNotParkedError } from "../../mod.ts";
import type { ParkStore } from "../../core/park.ts";
import type { DynamoClient } from "../../stores/dynamo.ts";
import { client, endpoint, opts } from "../support/dynamo.ts";
import { event, failure } from "./contract.ts";

const available = await client.send(new ListTablesCommand({ Limit: 1 })).then(
  () => true,
  () => false,
);
if (!available) {
  console.warn(`DynamoDB Local is not reachable at ${endpoint}: its park tests are ignored`);
}
const t = { ...opts, ignore: !available };

const WRITES = new Set([
  "UpdateItemCommand",
  "PutItemCommand",
  "DeleteItemCommand",
  "BatchWriteItemCommand",
  "TransactWriteItemsCommand",
]);

/**
 * A client that counts the store's writes, can run `afterWrite` after each (a pause of the
 * process there), and with `dieAt` fails every request from that write on (0: the first).
 */
function instrumented(options: {
  dieAt?: number;
  afterWrite?: (n: number, name: string) => Promise<void>;
} = {}) {
  const writes: string[] = [];
  let dead = false;
  const wrapped: DynamoClient = {
    async send(command: object, sendOptions?: object) {
      const name = command.constructor.name;
      const write = WRITES.has(name);
      if (write && options.dieAt !== undefined && writes.length >= options.dieAt) dead = true;
      if (dead) throw new Error("killed");
      const out = await client.send(command as never, sendOptions as never);
      if (write) {
        writes.push(name);
        await options.afterWrite?.(writes.length, name);
      }
      return out;
    },
  };
  return { client: wrapped, writes };
}

async function withTable(fn: (tableName: string, store: ParkStore) => Promise<void>) {
  const tableName = `parked-${crypto.randomUUID()}`;
  await createParkTable(client, tableName);
  try {
    await fn(tableName, dynamoParkStore(client, { tableName }));
  } finally {
    await client.send(new DeleteTableCommand({ TableName: tableName }));
  }
}

/** Runs `fn` with `Date.now` (and so every clock reading of the store) `offsetMs` off. */
async function withClock<T>(offsetMs: number, fn: () => Promise<T>): Promise<T> {
  const real = Date.now;
  Date.now = () => real() + offsetMs;
  try {
    return await fn();
  } finally {
    Date.now = real;
  }
}

const five = () => [0, 1, 2, 3, 4].map((i) => event(i));
const indexes = async (store: ParkStore, stream: string) => {
  const e = (await store.get("g", stream))!;
  return (await store.events("g", stream, e.episode, 0, 100)).map((x) => x.index);
};

Deno.test({
  name:
    "dynamo park store: a member whose clock is an hour behind starts a later episode that still comes last",
  ...t,
  fn: () =>
    withTable(async (_table, store) => {
      // A member with a good clock parks S and skips it.
      await store.park("g", [{ stream: "S", events: [event(0)], failure: failure() }]);
      const first = (await store.get("g", "S"))!;
      await store.request("g", "S", { action: "skip", by: "alice", reason: "test" });
      const c1 = await store.claim("g", "S", first.episode, {
        by: "a",
        until: Date.now() + 60_000,
      });
      assert.equal(
        (await store.resolve("g", "S", first.episode, { by: "a", token: c1!.claim!.token }))?.state,
        "skipped",
      );
      // Then one whose clock is an hour behind parks it again and releases it.
      const second = await withClock(-3_600_000, async () => {
        await store.park("g", [{ stream: "S", events: [event(1)], failure: failure() }]);
        const e = (await store.get("g", "S"))!;
        await store.request("g", "S", { action: "release", by: "bob" });
        const c2 = await store.claim("g", "S", e.episode, { by: "b", until: Date.now() + 60_000 });
        const done = await store.resolve("g", "S", e.episode, {
          by: "b",
          token: c2!.claim!.token,
          expectedNext: 2,
        });
        assert.equal(done?.state, "released");
        return e;
      });
      assert.notEqual(second.episode, first.episode);
      assert.ok(second.episode > first.episode, `${second.episode} after ${first.episode}`);
      const latest = await store.get("g", "S");
      assert.deepEqual([latest?.episode, latest?.state], [second.episode, "released"]);
      const history = (await store.list("g", { resolved: true })).map((e) => e.state);
      assert.deepEqual(history, ["released", "skipped"], "newest first");
      // The skip was applied to the earlier episode only: asking one now is refused.
      await assert.rejects(
        store.request("g", "S", { action: "skip", by: "carol", reason: "late" }),
        StreamNotParkedError,
      );
    }),
});

Deno.test({
  name:
    "dynamo park store: parking again after a failed release is all or nothing, however many writes a kill lets through",
  ...t,
  fn: () =>
    withTable(async (tableName, store) => {
      const setUp = async (stream: string) => {
        await store.park("g", [{ stream, events: five(), failure: failure() }]);
        const e = (await store.get("g", stream))!;
        await store.request("g", stream, { action: "release", by: "alice", reason: "fixed" });
        await store.claim("g", stream, e.episode, { by: "s", until: Date.now() + 60_000 });
        return e;
      };
      const again = (stream: string) => ({
        stream,
        events: [],
        failure: { ...failure(), error: "Error: again", attempts: 7 },
        handledTo: 3, // the release handled 0..2, then failed at 3
      });
      // Uninterrupted: how many writes the re-park makes.
      const whole = instrumented();
      await setUp("S");
      await dynamoParkStore(whole.client, { tableName }).park("g", [again("S")]);
      assert.ok(whole.writes.length >= 1, whole.writes.join());
      const seen = new Set<string>();
      for (let dieAt = 0; dieAt <= whole.writes.length; dieAt++) {
        const stream = `S-${dieAt}`;
        const before = await setUp(stream);
        const killed = instrumented({ dieAt });
        await dynamoParkStore(killed.client, { tableName }).park("g", [again(stream)]).catch(
          () => {},
        );
        const e = (await store.get("g", stream))!;
        const failed = (await store.list("g", { resolved: true })).filter((x) =>
          x.stream === stream && x.state === "failed"
        );
        const state = {
          error: e.error,
          attempts: e.attempts,
          first: e.first,
          events: e.events,
          request: e.request?.action,
          failed: failed.length,
          handled: failed[0]?.resolution?.events,
          indexes: await indexes(store, stream),
        };
        const untouched = {
          error: before.error,
          attempts: before.attempts,
          first: 0,
          events: 5,
          request: "release",
          failed: 0,
          handled: undefined,
          indexes: [0, 1, 2, 3, 4],
        };
        const done = {
          error: "Error: again",
          attempts: 7,
          first: 3,
          events: 2,
          request: undefined,
          failed: 1,
          handled: 3,
          indexes: [3, 4],
        };
        const which = JSON.stringify(state) === JSON.stringify(untouched)
          ? "untouched"
          : JSON.stringify(state) === JSON.stringify(done)
          ? "done"
          : assert.fail(`killed at write ${dieAt}: half done: ${JSON.stringify(state)}`);
        seen.add(which);
        assert.equal(e.episode, before.episode);
      }
      assert.deepEqual([...seen].sort(), ["done", "untouched"], "both ends were reached");
    }),
});

Deno.test({
  name:
    "dynamo park store: a bounded skip is all or nothing, however many writes a kill lets through",
  ...t,
  fn: () =>
    withTable(async (tableName, store) => {
      const setUp = async (stream: string) => {
        await store.park("g", [{ stream, events: five(), failure: failure() }]);
        const e = (await store.get("g", stream))!;
        await store.request("g", stream, { action: "skip", by: "bob", reason: "r", upTo: 3 });
        const c = await store.claim("g", stream, e.episode, {
          by: "s",
          until: Date.now() + 60_000,
        });
        return { episode: e.episode, token: c!.claim!.token };
      };
      const whole = instrumented();
      const s = await setUp("S");
      const resolved = await dynamoParkStore(whole.client, { tableName }).resolve(
        "g",
        "S",
        s.episode,
        { by: "s", token: s.token },
      );
      assert.deepEqual([resolved?.state, resolved?.first, resolved?.resolution?.events], [
        "parked",
        3,
        3,
      ]);
      const seen = new Set<string>();
      for (let dieAt = 0; dieAt <= whole.writes.length; dieAt++) {
        const stream = `S-${dieAt}`;
        const { episode, token } = await setUp(stream);
        const killed = instrumented({ dieAt });
        await dynamoParkStore(killed.client, { tableName }).resolve("g", stream, episode, {
          by: "s",
          token,
        }).catch(() => {});
        const e = (await store.get("g", stream))!;
        const skipped = (await store.list("g", { resolved: true })).filter((x) =>
          x.stream === stream && x.state === "skipped"
        );
        const state = JSON.stringify({
          first: e.first,
          events: e.events,
          request: e.request?.action,
          skipped: skipped.map((x) => x.resolution?.events),
          indexes: await indexes(store, stream),
        });
        const untouched = JSON.stringify({
          first: 0,
          events: 5,
          request: "skip",
          skipped: [],
          indexes: [0, 1, 2, 3, 4],
        });
        const done = JSON.stringify({
          first: 3,
          events: 2,
          skipped: [3],
          indexes: [3, 4],
        });
        if (state === untouched) seen.add("untouched");
        else if (state === done) seen.add("done");
        else assert.fail(`killed at write ${dieAt}: half done: ${state}`);
      }
      assert.deepEqual([...seen].sort(), ["done", "untouched"], "both ends were reached");
    }),
});

Deno.test({
  name:
    "dynamo park store: a release's progress is recorded under the claim's fence: a sink paused past its claim changes nothing its successor sees",
  ...t,
  fn: () =>
    withTable(async (tableName, store) => {
      await store.park("g", [{ stream: "S", events: five(), failure: failure() }]);
      const { episode } = (await store.get("g", "S"))!;
      await store.request("g", "S", { action: "release", by: "alice" });
      const a = await store.claim("g", "S", episode, { by: "a", until: Date.now() + 60_000 });
      const token = a!.claim!.token;
      // A's renewal with its progress (0..2 handled) pauses after its first write until its
      // claim has lapsed and B has claimed the request; B replays from the first it sees.
      let seenByB: number | undefined;
      const paused = instrumented({
        afterWrite: async (n) => {
          if (n !== 1) return;
          await new Promise((r) => setTimeout(r, 400));
          const b = await store.claim("g", "S", episode, { by: "b", until: Date.now() + 60_000 });
          assert.equal(b?.claim?.by, "b", "B claims once A's claim has lapsed");
          seenByB = b!.first;
        },
      });
      const renewed = await dynamoParkStore(paused.client, { tableName }).claim("g", "S", episode, {
        by: "a",
        token,
        until: Date.now() + 300,
        handledTo: 3,
      });
      assert.notEqual(renewed?.claim?.token, token, "A learns it lost the claim");
      const after = (await store.get("g", "S"))!;
      assert.equal(after.claim?.by, "b");
      assert.equal(after.first, seenByB, "nothing changed under B's claim after B took it");
      assert.deepEqual(await indexes(store, "S"), [0, 1, 2, 3, 4].slice(after.first));
      // A renewal with a lapsed claim records no progress.
      const lapsed = await store.claim("g", "S", episode, {
        by: "a",
        token,
        until: Date.now() + 60_000,
        handledTo: 4,
      });
      assert.equal(lapsed, undefined);
      assert.equal((await store.get("g", "S"))!.first, after.first, "refused: first unchanged");
    }),
});

Deno.test({
  name:
    "dynamo park store: a new episode is never seen without its events, so a skip asked at once drops them",
  ...t,
  fn: () =>
    withTable(async (tableName, store) => {
      // 30 events: more than one transaction holds (24), so a second chunk follows the first.
      const events = Array.from({ length: 30 }, (_, i) => event(8 + i));
      const seen: Array<{ write: number; events: number; next: number } | undefined> = [];
      const watched = instrumented({
        afterWrite: async (n) => {
          const e = await store.get("g", "S");
          seen.push(e && { write: n, events: e.events, next: e.next });
        },
      });
      await dynamoParkStore(watched.client, { tableName }).park("g", [{
        stream: "S",
        events,
        failure: failure(),
      }]);
      // The CI failure (kill.test.ts): the episode was visible with first = next = 8 and no
      // events between its header write and its events' write; a skip asked then was bounded
      // at 8, dropped nothing, and left the stream parked.
      for (const s of seen) {
        if (s !== undefined) assert.ok(s.events >= 24 && s.next >= 32, JSON.stringify(s));
      }
      assert.ok(seen.some((s) => s !== undefined), "the episode is seen after some write");
      const entry = (await store.get("g", "S"))!;
      assert.deepEqual([entry.first, entry.next, entry.events], [8, 38, 30]);
      assert.deepEqual(await indexes(store, "S"), events.map((e) => e.index));
      const asked = await store.request("g", "S", { action: "skip", by: "ops", reason: "dup" });
      const claimed = await store.claim("g", "S", asked.episode, {
        by: "a",
        until: Date.now() + 60_000,
      });
      const skipped = await store.resolve("g", "S", asked.episode, {
        by: "a",
        token: claimed!.claim!.token,
      });
      assert.deepEqual([skipped?.state, skipped?.resolution?.events], ["skipped", 30]);
    }),
});
