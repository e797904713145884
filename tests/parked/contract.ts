// The park-store contract: every store passes these cases (memory, PostgreSQL, DynamoDB). Each
// case gets a fresh store from `fresh` (and disposes it), so stores may share one backend.
import assert from "node:assert/strict";
import {
  InvalidArgumentError,
  type ParkedFailure,
  ParkRequestConflictError,
  type ParkStore,
  type StreamEvent,
  StreamNotParkedError,
} from "../../mod.ts";

/** A fresh, empty store; disposing it removes what the case left. */
export type FreshStore = () => Promise<{ store: ParkStore } & AsyncDisposable>;

/** An event of `stream` at `index` with some data that JSON alone would not round-trip. */
export const event = (index: number, data: unknown = { n: index }): StreamEvent => ({
  index,
  type: `T${index}`,
  data,
  meta: { at: index },
  id: `id-${index}`,
  time: new Date(1_700_000_000_000 + index),
  size: 10,
});

export const failure = (attempts = 3, at = 1_700_000_000_000): ParkedFailure => ({
  error: "Error: no such customer",
  attempts,
  firstFailedAt: at,
  lastFailedAt: at + 500,
});

const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i);
const indexes = (events: readonly StreamEvent[]) => events.map((e) => e.index);

/** Registers the contract's cases for one store, named `${name}: ...`. */
export function parkStoreContract(
  name: string,
  fresh: FreshStore,
  options: { ignore?: boolean; sanitize?: boolean } = {},
): void {
  const test = (title: string, fn: (store: ParkStore) => Promise<void>) =>
    Deno.test({
      name: `${name}: ${title}`,
      ignore: options.ignore,
      sanitizeOps: options.sanitize ?? true,
      sanitizeResources: options.sanitize ?? true,
      async fn() {
        await using f = await fresh();
        await fn(f.store);
      },
    });

  test("a failure starts an episode; its events round-trip, Dates, bytes and bigints included", async (store) => {
    const bytes = new Uint8Array([0, 1, 254, 255]);
    const special: StreamEvent = {
      ...event(7, { bytes, big: 2n ** 70n, nested: [{ b: new Uint8Array([9]) }], s: "€" }),
      correlationId: "corr",
      causationId: "cause",
    };
    const before = Date.now();
    const outcomes = await store.park("g", [
      { stream: "Pay-1", events: [special, event(8)], failure: failure() },
    ]);
    assert.deepEqual(outcomes, ["parked"]);
    const entry = await store.get("g", "Pay-1");
    assert.ok(entry);
    assert.equal(entry.group, "g");
    assert.equal(entry.stream, "Pay-1");
    assert.equal(entry.state, "parked");
    assert.equal(entry.first, 7);
    assert.equal(entry.next, 9);
    assert.equal(entry.events, 2);
    assert.equal(entry.error, "Error: no such customer");
    assert.equal(entry.attempts, 3);
    assert.equal(entry.firstFailedAt, 1_700_000_000_000);
    assert.equal(entry.lastFailedAt, 1_700_000_000_500);
    assert.ok(entry.parkedAt >= before - 1000 && entry.parkedAt <= Date.now() + 1000);
    assert.equal(entry.request, undefined);
    assert.equal(entry.claim, undefined);
    assert.equal(typeof entry.episode, "string");
    const events = await store.events("g", "Pay-1", entry.episode, 0, 100);
    assert.deepEqual(indexes(events), [7, 8]);
    assert.deepEqual(events[0], special);
    assert.ok(events[0].time instanceof Date);
    assert.deepEqual(events[1], event(8));
  });

  test("writes add only what is not stored yet, so a repeated write changes nothing", async (store) => {
    await store.park("g", [{ stream: "A-1", events: [event(0), event(1)], failure: failure() }]);
    const again = await store.park("g", [{ stream: "A-1", events: [event(0), event(1)] }]);
    assert.deepEqual(again, ["parked"]);
    await store.park("g", [{ stream: "A-1", events: [event(1), event(2), event(5)] }]);
    let entry = (await store.get("g", "A-1"))!;
    assert.equal(entry.next, 6);
    assert.equal(entry.events, 4, "0, 1, 2 and 5: a gap is stored as such");
    assert.deepEqual(indexes(await store.events("g", "A-1", entry.episode, 0, 100)), [0, 1, 2, 5]);
    // A late write fills the gap (a writer that lost a race must not lose its events).
    await store.park("g", [{ stream: "A-1", events: [event(3), event(4)] }]);
    entry = (await store.get("g", "A-1"))!;
    assert.equal(entry.next, 6);
    assert.equal(entry.events, 6);
    assert.deepEqual(
      indexes(await store.events("g", "A-1", entry.episode, 0, 100)),
      [0, 1, 2, 3, 4, 5],
    );
  });

  test("a write without a failure to a stream that is not parked stores nothing", async (store) => {
    const outcomes = await store.park("g", [
      { stream: "A-1", events: [event(0)] },
      { stream: "B-1", events: [event(0)], failure: failure() },
    ]);
    assert.deepEqual(outcomes, ["notParked", "parked"]);
    assert.equal(await store.get("g", "A-1"), undefined);
    assert.deepEqual((await store.list("g")).map((e) => e.stream), ["B-1"]);
  });

  test("many streams in one call, groups kept apart", async (store) => {
    const streams = range(0, 120).map((i) => `S-${i}`);
    const outcomes = await store.park(
      "g1",
      streams.map((stream, i) => ({ stream, events: [event(i)], failure: failure() })),
    );
    assert.equal(outcomes.length, 120);
    assert.ok(outcomes.every((o) => o === "parked"));
    await store.park("g2", [{ stream: "S-0", events: [event(5)], failure: failure(1) }]);
    const g1 = await store.list("g1");
    assert.equal(g1.length, 120);
    assert.deepEqual(new Set(g1.map((e) => e.stream)), new Set(streams));
    assert.deepEqual((await store.list("g2")).map((e) => [e.stream, e.first, e.attempts]), [
      ["S-0", 5, 1],
    ]);
    const all = await store.list();
    assert.equal(all.length, 121);
    assert.deepEqual([...new Set(all.map((e) => e.group))], ["g1", "g2"], "by group");
  });

  test("events are paged from an index, in order", async (store) => {
    await store.park("g", [{
      stream: "A-1",
      events: range(0, 25).map((i) => event(i)),
      failure: failure(),
    }]);
    const { episode } = (await store.get("g", "A-1"))!;
    assert.deepEqual(indexes(await store.events("g", "A-1", episode, 0, 10)), range(0, 10));
    assert.deepEqual(indexes(await store.events("g", "A-1", episode, 10, 10)), range(10, 20));
    assert.deepEqual(indexes(await store.events("g", "A-1", episode, 20, 10)), range(20, 25));
    assert.deepEqual(await store.events("g", "A-1", episode, 25, 10), []);
    assert.deepEqual(await store.events("g", "A-1", "no-such-episode", 0, 10), []);
  });

  test("a page is `limit` events unless the episode has no more, even past 1 MB of events", async (store) => {
    const blob = "x".repeat(60_000); // 40 events of 60 KB: 2.4 MB, past a DynamoDB Query page
    await store.park("g", [{
      stream: "A-1",
      events: range(0, 40).map((i) => event(i, { blob })),
      failure: failure(),
    }]);
    const { episode } = (await store.get("g", "A-1"))!;
    const first = await store.events("g", "A-1", episode, 0, 30);
    assert.deepEqual(indexes(first), range(0, 30));
    assert.equal((first[29].data as { blob: string }).blob.length, 60_000);
    assert.deepEqual(indexes(await store.events("g", "A-1", episode, 30, 30)), range(30, 40));
    assert.deepEqual(indexes(await store.events("g", "A-1", episode, 0, 100)), range(0, 40));
  });

  test("requests: not parked is refused; the same request twice is one; a skip needs a reason", async (store) => {
    await assert.rejects(
      store.request("g", "A-1", { action: "release", by: "alice" }),
      (e) => e instanceof StreamNotParkedError && e.code === "StreamNotParked",
    );
    await store.park("g", [{ stream: "A-1", events: [event(0)], failure: failure() }]);
    await assert.rejects(
      store.request("g", "A-1", { action: "skip", by: "alice" }),
      (e) => e instanceof InvalidArgumentError && e.field === "reason",
    );
    await assert.rejects(
      store.request("g", "A-1", { action: "release", by: "" }),
      (e) => e instanceof InvalidArgumentError && e.field === "by",
    );
    await assert.rejects(
      store.request("g", "A-1", { action: "drop" as "skip", by: "alice", reason: "x" }),
      (e) => e instanceof InvalidArgumentError && e.field === "action",
    );
    const first = await store.request("g", "A-1", { action: "release", by: "alice" });
    assert.equal(first.request?.action, "release");
    assert.equal(first.request?.by, "alice");
    const second = await store.request("g", "A-1", { action: "release", by: "bob" });
    assert.deepEqual(second.request, first.request, "idempotent: the first request stands");
    assert.deepEqual(
      (await store.list("g", { requested: true })).map((e) => e.stream),
      ["A-1"],
    );
    // Not claimed yet: a skip replaces it.
    const skip = await store.request("g", "A-1", { action: "skip", by: "bob", reason: "refunded" });
    assert.deepEqual(
      [skip.request?.action, skip.request?.by, skip.request?.reason],
      ["skip", "bob", "refunded"],
    );
  });

  test("claims: one sink at a time, renewed with progress, given up, lapsed", async (store) => {
    await store.park("g", [{
      stream: "A-1",
      events: range(0, 6).map((i) => event(i)),
      failure: failure(),
    }]);
    const { episode } = (await store.get("g", "A-1"))!;
    const until = Date.now() + 60_000;
    assert.equal(
      await store.claim("g", "A-1", episode, { by: "s1", until }),
      undefined,
      "nothing to claim without a request",
    );
    await store.request("g", "A-1", { action: "release", by: "alice" });
    assert.equal(await store.claim("g", "A-1", "other", { by: "s1", until }), undefined);
    const claimed = await store.claim("g", "A-1", episode, { by: "s1", until });
    const token = claimed?.claim?.token;
    assert.ok(typeof token === "string" && token.length > 0, "a claim has a token");
    assert.deepEqual(claimed?.claim, { by: "s1", until, token });
    assert.equal(await store.claim("g", "A-1", episode, { by: "s2", until }), undefined);
    assert.equal(
      await store.claim("g", "A-1", episode, { by: "s1", until }),
      undefined,
      "a new claim while one is held is refused, even to the same sink",
    );
    await assert.rejects(
      store.request("g", "A-1", { action: "skip", by: "bob", reason: "too late" }),
      (e) => e instanceof ParkRequestConflictError && e.code === "ParkRequestConflict",
    );
    const renewed = await store.claim("g", "A-1", episode, {
      by: "s1",
      token,
      until: until + 1,
      handledTo: 4,
    });
    assert.equal(renewed?.claim?.token, token, "a renewal keeps the token");
    assert.equal(renewed?.first, 4);
    assert.equal(renewed?.events, 2);
    assert.deepEqual(indexes(await store.events("g", "A-1", episode, 0, 100)), [4, 5]);
    // Given up (a past until): another sink may take it.
    await store.claim("g", "A-1", episode, { by: "s1", token, until: 0 });
    const taken = await store.claim("g", "A-1", episode, { by: "s2", until });
    assert.equal(taken?.claim?.by, "s2");
    assert.notEqual(taken?.claim?.token, token, "a new claim, a new token");
    assert.equal(taken?.first, 4, "the progress stays");
    assert.equal(
      await store.claim("g", "A-1", episode, { by: "s1", token, until, handledTo: 5 }),
      undefined,
      "the old claim cannot be renewed once taken",
    );
    assert.equal((await store.get("g", "A-1"))?.first, 4, "nor record progress");
  });

  test("an episode records the tranche its writes name, the latest kept", async (store) => {
    await store.park("g", [
      { stream: "A-1", events: [event(0)], failure: failure(), tranche: "Pay-0/2" },
      { stream: "A-2", events: [event(0)], failure: failure() },
    ]);
    assert.equal((await store.get("g", "A-1"))?.tranche, "Pay-0/2");
    assert.equal((await store.get("g", "A-2"))?.tranche, undefined, "none said: none recorded");
    await store.park("g", [{ stream: "A-1", events: [event(1)] }]);
    assert.equal((await store.get("g", "A-1"))?.tranche, "Pay-0/2", "a write without one keeps it");
    await store.park("g", [{ stream: "A-1", events: [event(2)], tranche: "Pay-1/2" }]);
    const entry = (await store.get("g", "A-1"))!;
    assert.equal(entry.tranche, "Pay-1/2", "moved with a rebalance");
    assert.equal(entry.events, 3);
    assert.equal((await store.list("g")).find((e) => e.stream === "A-1")?.tranche, "Pay-1/2");
  });

  test("fenced claims: a lapsed or replaced claim can neither renew, skip nor complete", async (store) => {
    await store.park("g", [{ stream: "A-1", events: [event(0), event(1)], failure: failure() }]);
    const { episode } = (await store.get("g", "A-1"))!;
    await store.request("g", "A-1", { action: "release", by: "alice" });
    // s1 claims briefly, then is paused past its claim.
    const c1 = await store.claim("g", "A-1", episode, { by: "s1", until: Date.now() + 300 });
    const t1 = c1!.claim!.token;
    await new Promise((r) => setTimeout(r, 400));
    assert.equal(
      await store.resolve("g", "A-1", episode, { by: "s1", token: t1, expectedNext: 2 }),
      undefined,
      "a lapsed claim cannot complete the release",
    );
    assert.equal(
      await store.claim("g", "A-1", episode, { by: "s1", token: t1, until: Date.now() + 60_000 }),
      undefined,
      "nor be renewed",
    );
    // The operator changes their mind: a skip replaces the release (its claim lapsed).
    const skipped = await store.request("g", "A-1", { action: "skip", by: "bob", reason: "bad" });
    assert.equal(skipped.request?.action, "skip");
    assert.equal(skipped.claim, undefined);
    assert.equal(
      await store.resolve("g", "A-1", episode, { by: "s1", token: t1 }),
      undefined,
      "the old claim cannot apply the skip either",
    );
    const c2 = await store.claim("g", "A-1", episode, { by: "s2", until: Date.now() + 60_000 });
    assert.equal(
      await store.resolve("g", "A-1", episode, { by: "s1", token: t1 }),
      undefined,
      "nor once another holds it",
    );
    assert.equal((await store.get("g", "A-1"))?.state, "parked");
    const done = await store.resolve("g", "A-1", episode, { by: "s2", token: c2!.claim!.token });
    assert.equal(done?.state, "skipped");
    assert.equal(done?.resolution?.appliedBy, "s2");
  });

  test("a release resolves once claimed and caught up; the history keeps who and when", async (store) => {
    await store.park("g", [{ stream: "A-1", events: [event(0), event(1)], failure: failure() }]);
    const { episode } = (await store.get("g", "A-1"))!;
    await store.request("g", "A-1", { action: "release", by: "alice" });
    assert.equal(
      await store.resolve("g", "A-1", episode, { by: "s1", token: "t", expectedNext: 2 }),
      undefined,
      "not claimed by s1",
    );
    const c = await store.claim("g", "A-1", episode, { by: "s1", until: Date.now() + 60_000 });
    const token = c!.claim!.token;
    await store.park("g", [{ stream: "A-1", events: [event(2)] }]);
    assert.equal(
      await store.resolve("g", "A-1", episode, { by: "s1", token, expectedNext: 2 }),
      undefined,
      "an event came in since: not caught up",
    );
    const done = await store.resolve("g", "A-1", episode, { by: "s1", token, expectedNext: 3 });
    assert.equal(done?.state, "released");
    assert.equal(done?.events, 0);
    assert.equal(done?.resolution?.action, "release");
    assert.equal(done?.resolution?.by, "alice");
    assert.equal(done?.resolution?.appliedBy, "s1");
    assert.equal(done?.resolution?.events, 3);
    assert.ok(Math.abs(done!.resolution!.at - Date.now()) < 60_000);
    assert.deepEqual(await store.list("g"), [], "no longer active");
    assert.deepEqual(await store.events("g", "A-1", episode, 0, 10), []);
    assert.equal((await store.get("g", "A-1"))?.state, "released");
    // Idempotent: releasing it again answers the resolved episode.
    const again = await store.request("g", "A-1", { action: "release", by: "bob" });
    assert.equal(again.state, "released");
    await assert.rejects(
      store.request("g", "A-1", { action: "skip", by: "bob", reason: "x" }),
      StreamNotParkedError,
    );
    // Later events are not parked any more.
    assert.deepEqual(await store.park("g", [{ stream: "A-1", events: [event(3)] }]), [
      "notParked",
    ]);
    // Parking again starts a new episode; the history lists both.
    await store.park("g", [{ stream: "A-1", events: [event(9)], failure: failure(5) }]);
    const current = (await store.get("g", "A-1"))!;
    assert.notEqual(current.episode, episode);
    assert.equal(current.state, "parked");
    assert.equal(current.first, 9);
    assert.equal(current.attempts, 5);
    const history = await store.list("g", { resolved: true });
    assert.deepEqual(history.map((e) => e.state), ["parked", "released"]);
  });

  test("a skip drops every parked event and records the reason", async (store) => {
    await store.park("g", [{ stream: "A-1", events: [event(0), event(1)], failure: failure() }]);
    const { episode } = (await store.get("g", "A-1"))!;
    const asked = await store.request("g", "A-1", {
      action: "skip",
      by: "alice",
      reason: "test payment",
    });
    assert.equal(asked.request?.upTo, 2, "the bound is the episode's next when asked");
    const c = await store.claim("g", "A-1", episode, { by: "s1", until: Date.now() + 60_000 });
    const done = await store.resolve("g", "A-1", episode, { by: "s1", token: c!.claim!.token });
    assert.equal(done?.state, "skipped");
    assert.deepEqual(
      [done?.resolution?.by, done?.resolution?.reason, done?.resolution?.events],
      ["alice", "test payment", 2],
    );
    assert.equal(done?.next, 2);
    const again = await store.request("g", "A-1", { action: "skip", by: "x", reason: "again" });
    assert.equal(again.resolution?.reason, "test payment", "idempotent: the first skip stands");
  });

  test("a skip drops only the events below its bound: events parked since stay parked", async (store) => {
    await store.park("g", [{ stream: "A-1", events: [event(0), event(1)], failure: failure() }]);
    const { episode } = (await store.get("g", "A-1"))!;
    await store.request("g", "A-1", { action: "skip", by: "alice", reason: "the 2 bad ones" });
    // Parked after the operator looked: not theirs to drop.
    await store.park("g", [{ stream: "A-1", events: [event(2), event(3), event(4)] }]);
    const c = await store.claim("g", "A-1", episode, { by: "s1", until: Date.now() + 60_000 });
    const done = await store.resolve("g", "A-1", episode, { by: "s1", token: c!.claim!.token });
    assert.equal(done?.state, "parked", "the episode stays active with what was not seen");
    assert.deepEqual(
      [done?.resolution?.action, done?.resolution?.events, done?.resolution?.upTo],
      ["skip", 2, 2],
    );
    const now = (await store.get("g", "A-1"))!;
    assert.deepEqual(
      [now.state, now.episode, now.first, now.next, now.events, now.request, now.claim],
      ["parked", episode, 2, 5, 3, undefined, undefined],
    );
    assert.deepEqual(indexes(await store.events("g", "A-1", episode, 0, 100)), [2, 3, 4]);
    const history = (await store.list("g", { resolved: true })).filter((e) => e.state !== "parked");
    assert.deepEqual(
      history.map((e) => [e.state, e.resolution?.events, e.resolution?.reason, e.resolution?.upTo]),
      [["skipped", 2, "the 2 bad ones", 2]],
    );
    // An explicit bound: checked against the episode.
    await assert.rejects(
      store.request("g", "A-1", { action: "skip", by: "bob", reason: "r", upTo: 9 }),
      (e) => e instanceof InvalidArgumentError && e.field === "upTo",
    );
    await assert.rejects(
      store.request("g", "A-1", { action: "release", by: "bob", upTo: 3 }),
      (e) => e instanceof InvalidArgumentError && e.field === "upTo",
    );
    const bounded = await store.request("g", "A-1", {
      action: "skip",
      by: "bob",
      reason: "just one",
      upTo: 3,
    });
    assert.equal(bounded.request?.upTo, 3);
    const c2 = await store.claim("g", "A-1", episode, { by: "s1", until: Date.now() + 60_000 });
    const second = await store.resolve("g", "A-1", episode, { by: "s1", token: c2!.claim!.token });
    assert.deepEqual([second?.state, second?.first, second?.events], ["parked", 3, 2]);
    assert.deepEqual(indexes(await store.events("g", "A-1", episode, 0, 100)), [3, 4]);
    // The rest, all seen now: the episode ends, and is what `get` answers.
    await new Promise((r) => setTimeout(r, 2)); // a later resolution time than the skips before
    await store.request("g", "A-1", { action: "skip", by: "carol", reason: "the rest" });
    const c3 = await store.claim("g", "A-1", episode, { by: "s1", until: Date.now() + 60_000 });
    const last = await store.resolve("g", "A-1", episode, { by: "s1", token: c3!.claim!.token });
    assert.deepEqual([last?.state, last?.resolution?.events], ["skipped", 2]);
    const got = await store.get("g", "A-1");
    assert.deepEqual(
      [got?.state, got?.episode, got?.resolution?.by, got?.resolution?.events],
      ["skipped", episode, "carol", 2],
    );
  });

  test("a release that fails again: the failure is recorded, the request cleared, handled events dropped", async (store) => {
    await store.park("g", [{
      stream: "A-1",
      events: range(0, 5).map((i) => event(i)),
      failure: failure(),
    }]);
    const { episode } = (await store.get("g", "A-1"))!;
    await store.request("g", "A-1", { action: "release", by: "alice", reason: "bug fixed" });
    await store.claim("g", "A-1", episode, { by: "s1", until: Date.now() + 60_000 });
    const outcomes = await store.park("g", [{
      stream: "A-1",
      events: [event(5)],
      failure: { error: "Error: still broken", attempts: 2, firstFailedAt: 5, lastFailedAt: 6 },
      handledTo: 2,
    }]);
    assert.deepEqual(outcomes, ["parked"]);
    const entry = (await store.get("g", "A-1"))!;
    assert.equal(entry.episode, episode, "the same episode");
    assert.equal(entry.error, "Error: still broken");
    assert.equal(entry.attempts, 2);
    assert.equal(entry.lastFailedAt, 6);
    assert.equal(entry.firstFailedAt, 1_700_000_000_000, "the episode's first failure stays");
    assert.equal(entry.request, undefined);
    assert.equal(entry.claim, undefined);
    assert.equal(entry.first, 2);
    assert.equal(entry.next, 6);
    assert.equal(entry.events, 4);
    assert.deepEqual(indexes(await store.events("g", "A-1", episode, 0, 100)), [2, 3, 4, 5]);
    // The failed release is kept in the history (issue 12: it left no record but the log).
    const history = await store.list("g", { resolved: true });
    assert.deepEqual(history.map((e) => e.state), ["parked", "failed"]);
    const failed = history[1];
    assert.deepEqual(
      [failed.error, failed.attempts, failed.lastFailedAt, failed.events, failed.resolution],
      ["Error: still broken", 2, 6, 0, {
        action: "release",
        by: "alice",
        reason: "bug fixed",
        at: failed.resolution!.at,
        appliedBy: "s1",
        events: 2,
      }],
    );
    assert.ok(Math.abs(failed.resolution!.at - Date.now()) < 60_000);
    assert.notEqual(failed.episode, episode, "a record of its own");
    assert.deepEqual(await store.list("g"), [entry], "not active");
    // A failure write with no release being applied records nothing.
    await store.park("g", [{ stream: "A-1", events: [], failure: failure(4) }]);
    assert.equal((await store.list("g", { resolved: true })).length, 2);
    // Skipped at last: get answers the skip, the history keeps both, newest first.
    await store.request("g", "A-1", { action: "skip", by: "bob", reason: "give up" });
    const { claim } =
      (await store.claim("g", "A-1", episode, { by: "s2", until: Date.now() + 60_000 }))!;
    await store.resolve("g", "A-1", episode, { by: "s2", token: claim!.token });
    assert.equal((await store.get("g", "A-1"))?.state, "skipped");
    assert.deepEqual(
      (await store.list("g", { resolved: true })).map((e) => e.state),
      ["skipped", "failed"],
    );
  });

  test("bad input is refused with typed errors naming it", async (store) => {
    const bad = async (fn: () => Promise<unknown>, field: string) =>
      await assert.rejects(fn, (e) => e instanceof InvalidArgumentError && e.field === field);
    await bad(() => store.park("", []), "group");
    await bad(() => store.park("g", "x" as never), "writes");
    await bad(() => store.park("g", [{ stream: "", events: [] }]), "writes[0].stream");
    await bad(
      () => store.park("g", [{ stream: "A-1", events: [] }, { stream: "A-1", events: [] }]),
      "writes[1].stream",
    );
    await bad(
      () => store.park("g", [{ stream: "A-1", events: [event(2), event(1)], failure: failure() }]),
      "writes[0].events[1].index",
    );
    await bad(
      () =>
        store.park("g", [{
          stream: "A-1",
          events: [],
          failure: { ...failure(), attempts: -1 },
        }]),
      "writes[0].failure.attempts",
    );
    await bad(() => store.list(""), "group");
    await bad(() => store.events("g", "A-1", "1", -1, 10), "from");
    await bad(() => store.events("g", "A-1", "1", 0, 0), "limit");
    assert.deepEqual(await store.list("g"), [], "nothing was stored by the bad calls");
  });
}
