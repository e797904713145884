// The queue-store contract: every store passes these cases (memory, PostgreSQL). Each case gets
// a fresh store from `fresh` (and disposes it). Visibility is real time, kept short.
import assert from "node:assert/strict";
import { InvalidArgumentError } from "../../core/errors.ts";
import type { QueueMessage, QueueStore } from "../../queues/queue.ts";
import { EXPIRED_ERROR } from "../../queues/queue.ts";

/** A fresh, empty store with `maxDeliveries`; disposing it removes what the case left. */
export type FreshQueues = (
  options: { maxDeliveries?: number; maxMessageBytes?: number },
) => Promise<{ store: QueueStore } & AsyncDisposable>;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const V = { visibilityTimeoutMs: 30_000 };

/** Registers the contract's cases for one store, named `${name}: ...`. */
export function queueStoreContract(
  name: string,
  fresh: FreshQueues,
  options: { ignore?: boolean } = {},
): void {
  const test = (
    title: string,
    fn: (store: QueueStore) => Promise<void>,
    storeOptions: { maxDeliveries?: number; maxMessageBytes?: number } = {},
  ) =>
    Deno.test({
      name: `${name}: ${title}`,
      ignore: options.ignore,
      sanitizeOps: false,
      sanitizeResources: false,
      async fn() {
        await using f = await fresh(storeOptions);
        await fn(f.store);
      },
    });

  test("bodies round-trip in enqueue order; a first delivery has no last error", async (q) => {
    const bodies = [{ n: 1, s: '€ \u0000 "q"', nested: [null, true, 1.5] }, "text", 42, null, []];
    const ids = await q.enqueue("jobs", bodies);
    assert.equal(ids.length, 5);
    assert.deepEqual([...ids].sort((a, b) => Number(a) - Number(b)), ids, "ids increase");
    const got = await q.dequeue("jobs", { ...V, max: 10 });
    assert.deepEqual(got.map((m) => m.body), bodies);
    assert.deepEqual(got.map((m) => m.id), ids);
    for (const m of got) {
      assert.equal(m.queue, "jobs");
      assert.equal(m.deliveries, 1);
      assert.equal(m.lastError, undefined);
      assert.ok(m.enqueuedAt instanceof Date && !isNaN(m.enqueuedAt.getTime()));
      assert.ok(m.visibleUntil.getTime() > Date.now() + 20_000, "hidden for the visibility");
    }
    assert.deepEqual(await q.enqueue("jobs", []), [], "an empty enqueue is nothing");
  });

  test("a large enqueue's ids match its bodies in order (ids of several digit counts)", async (q) => {
    const bodies = Array.from({ length: 1_200 }, (_, i) => i);
    const ids = await q.enqueue("jobs", bodies);
    assert.deepEqual(ids.map(Number), [...ids.map(Number)].sort((a, b) => a - b));
    const got = [];
    for (let m; (m = await q.dequeue("jobs", { ...V, max: 1000 })).length > 0;) got.push(...m);
    assert.deepEqual(got.map((m) => [m.id, m.body]), ids.map((id, i) => [id, bodies[i]]));
  });

  test("a delivered message is hidden until settled; ack deletes it once", async (q) => {
    await q.enqueue("jobs", [{ a: 1 }, { a: 2 }]);
    const [first] = await q.dequeue("jobs", V);
    assert.deepEqual(first.body, { a: 1 });
    const [second] = await q.dequeue("jobs", { ...V, max: 5 });
    assert.deepEqual(second.body, { a: 2 }, "the held one is not handed out again");
    assert.deepEqual(await q.dequeue("jobs", V), []);
    assert.deepEqual(await q.stats("jobs"), { ready: 0, inFlight: 2, delayed: 0, dead: 0 });
    assert.equal(await q.ack(first), true);
    assert.equal(await q.ack(first), false, "the second ack finds nothing");
    assert.equal(await q.nack(first), false);
    assert.equal(await q.extend(first, 1000), false);
    assert.equal(await q.ack(second), true);
    assert.deepEqual(await q.stats("jobs"), { ready: 0, inFlight: 0, delayed: 0, dead: 0 });
  });

  test("ackMany acks the deliveries still held, each once, in one call", async (q) => {
    await q.enqueue("jobs", [1, 2, 3]);
    const [a, b, c] = await q.dequeue("jobs", { ...V, max: 3 });
    assert.equal(await q.ack(b), true);
    assert.deepEqual(await q.ackMany([a, b, c, a]), [true, false, true, false]);
    assert.deepEqual(await q.ackMany([]), []);
    assert.deepEqual(await q.stats("jobs"), { ready: 0, inFlight: 0, delayed: 0, dead: 0 });
    await assert.rejects(
      q.ackMany([a, { id: "x" } as never]),
      (e) => e instanceof InvalidArgumentError && e.field === "messages[1]",
    );
    await assert.rejects(
      q.ackMany("a" as never),
      (e) => e instanceof InvalidArgumentError && e.field === "messages",
    );
  });

  test("queues are separate", async (q) => {
    await q.enqueue("a", ["for a"]);
    await q.enqueue("b", ["for b"]);
    assert.deepEqual((await q.dequeue("b", { ...V, max: 10 })).map((m) => m.body), ["for b"]);
    assert.deepEqual((await q.dequeue("a", { ...V, max: 10 })).map((m) => m.body), ["for a"]);
    assert.deepEqual(await q.dequeue("c", V), []);
  });

  test("concurrent dequeues never hand out one message twice", async (q) => {
    await q.enqueue("jobs", Array.from({ length: 60 }, (_, i) => i));
    const batches = await Promise.all(
      Array.from({ length: 12 }, () => q.dequeue("jobs", { ...V, max: 7 })),
    );
    const bodies = batches.flat().map((m) => m.body as number);
    assert.equal(new Set(bodies).size, bodies.length, "no duplicates");
    assert.equal(bodies.length, 60, "12 × 7 > 60: every message handed out");
  });

  test("an expired visibility delivers again with a new receipt; the old one is dead", async (q) => {
    await q.enqueue("jobs", ["x"]);
    const [m1] = await q.dequeue("jobs", { visibilityTimeoutMs: 150 });
    assert.deepEqual(await q.dequeue("jobs", V), [], "hidden within the visibility");
    await sleep(250);
    const [m2] = await q.dequeue("jobs", V);
    assert.equal(m2.id, m1.id);
    assert.equal(m2.deliveries, 2);
    assert.notEqual(m2.receipt, m1.receipt);
    assert.equal(m2.lastError, EXPIRED_ERROR + 1);
    assert.equal(await q.ack(m1), false, "the first holder cannot ack the second's delivery");
    assert.equal(await q.extend(m1, 10_000), false);
    assert.equal(await q.nack(m1), false);
    assert.equal(await q.ack(m2), true);
  });

  test("extend keeps a message hidden past its first visibility", async (q) => {
    await q.enqueue("jobs", ["x"]);
    const [m] = await q.dequeue("jobs", { visibilityTimeoutMs: 150 });
    assert.equal(await q.extend(m, 1_000), true);
    await sleep(250);
    assert.deepEqual(await q.dequeue("jobs", V), [], "still hidden after the first 150 ms");
    assert.equal(await q.ack(m), true, "and still held");
  });

  test("nack gives a message back after its delay, with its error", async (q) => {
    await q.enqueue("jobs", ["x"]);
    const [m] = await q.dequeue("jobs", V);
    assert.equal(await q.nack(m, { delayMs: 200, error: "mail server down" }), true);
    assert.equal(await q.ack(m), false, "a nacked delivery is given up");
    assert.deepEqual(await q.stats("jobs"), { ready: 0, inFlight: 0, delayed: 1, dead: 0 });
    assert.deepEqual(await q.dequeue("jobs", V), [], "hidden for the delay");
    await sleep(300);
    const [again] = await q.dequeue("jobs", V);
    assert.equal(again.deliveries, 2);
    assert.equal(again.lastError, "mail server down");
    await q.nack(again); // no delay: visible at once
    const [third] = await q.dequeue("jobs", V);
    assert.equal(third.deliveries, 3);
    assert.equal(third.lastError, "nacked");
  });

  test("enqueue's delay hides the messages for that long", async (q) => {
    await q.enqueue("jobs", ["later"], { delayMs: 200 });
    await q.enqueue("jobs", ["now"]);
    assert.deepEqual((await q.dequeue("jobs", { ...V, max: 5 })).map((m) => m.body), ["now"]);
    await sleep(300);
    assert.deepEqual((await q.dequeue("jobs", { ...V, max: 5 })).map((m) => m.body), ["later"]);
  });

  test(
    "after maxDeliveries a message moves to the dead letters with its last error",
    async (q) => {
      assert.equal(q.maxDeliveries, 2);
      await q.enqueue("jobs", ["poison"]);
      const [p1] = await q.dequeue("jobs", V);
      await q.nack(p1, { error: "Error: first" });
      const [p2] = await q.dequeue("jobs", V);
      assert.equal(p2.body, "poison");
      await q.nack(p2, { error: "Error: second" });
      await q.enqueue("jobs", ["fine"]);
      const rest = await q.dequeue("jobs", { ...V, max: 5 });
      assert.deepEqual(rest.map((m) => m.body), ["fine"], "the third delivery is not made");
      const dead = await q.deadLetters("jobs");
      assert.equal(dead.length, 1);
      assert.equal(dead[0].id, p1.id);
      assert.equal(dead[0].body, "poison");
      assert.equal(dead[0].deliveries, 2);
      assert.equal(dead[0].lastError, "Error: second");
      assert.ok(dead[0].deadAt.getTime() >= dead[0].enqueuedAt.getTime());
      assert.deepEqual(await q.stats("jobs"), { ready: 0, inFlight: 1, delayed: 0, dead: 1 });
      assert.deepEqual(await q.deadLetters("other"), []);
    },
    { maxDeliveries: 2 },
  );

  test(
    "requeueDead moves dead letters back, deliveries reset, last error kept",
    async (q) => {
      await q.enqueue("jobs", ["a", "b", "c"]);
      for (const m of await q.dequeue("jobs", { ...V, max: 3 })) {
        await q.nack(m, { error: `failed ${m.body}` });
      }
      assert.deepEqual(await q.dequeue("jobs", V), [], "all three moved on this dequeue");
      assert.equal((await q.stats("jobs")).dead, 3);
      assert.equal(await q.requeueDead("jobs", 2), 2);
      assert.equal(await q.requeueDead("other"), 0);
      assert.deepEqual(await q.stats("jobs"), { ready: 2, inFlight: 0, delayed: 0, dead: 1 });
      const back = await q.dequeue("jobs", { ...V, max: 5 });
      assert.deepEqual(back.map((m) => [m.body, m.deliveries, m.lastError]), [
        ["a", 1, "failed a"],
        ["b", 1, "failed b"],
      ]);
      assert.deepEqual(await q.ackMany(back), [true, true]);
      assert.equal(await q.requeueDead("jobs"), 1);
      assert.equal((await q.dequeue("jobs", V))[0].body, "c");
      await assert.rejects(
        q.requeueDead("jobs", 0),
        (e) => e instanceof InvalidArgumentError && e.field === "limit",
      );
    },
    { maxDeliveries: 1 },
  );

  test(
    "purgeDead deletes dead letters past an age, oldest first, in bounded batches",
    async (q) => {
      await q.enqueue("jobs", ["old1", "old2", "old3"]);
      for (const m of await q.dequeue("jobs", { ...V, max: 3 })) await q.nack(m);
      await q.dequeue("jobs", V); // all three dead now
      await sleep(150);
      await q.enqueue("jobs", ["new"]);
      await q.nack((await q.dequeue("jobs", V))[0]);
      await q.dequeue("jobs", V);
      assert.equal((await q.stats("jobs")).dead, 4);
      assert.equal(await q.purgeDead("jobs", { olderThanMs: 100, limit: 2 }), 2, "bounded");
      assert.equal(await q.purgeDead("jobs", { olderThanMs: 100, limit: 2 }), 1, "the rest");
      assert.equal(await q.purgeDead("jobs", { olderThanMs: 100 }), 0, "the new one is kept");
      assert.deepEqual((await q.deadLetters("jobs")).map((d) => d.body), ["new"]);
      assert.equal(await q.purgeDead("other", { olderThanMs: 0 }), 0);
      assert.equal(await q.purgeDead("jobs", { olderThanMs: 0 }), 1);
      const field = (f: string) => (e: unknown) =>
        e instanceof InvalidArgumentError && e.field === f;
      await assert.rejects(q.purgeDead("jobs", { olderThanMs: -1 }), field("olderThanMs"));
      await assert.rejects(q.purgeDead("jobs", { olderThanMs: 0, limit: 0 }), field("limit"));
      await assert.rejects(q.purgeDead("jobs", undefined as never), field("options"));
    },
    { maxDeliveries: 1 },
  );

  test(
    "an expired last delivery is dead-lettered with the expiry as its error",
    async (q) => {
      await q.enqueue("jobs", ["slow"]);
      await q.dequeue("jobs", { visibilityTimeoutMs: 100 });
      await sleep(200);
      assert.deepEqual(await q.dequeue("jobs", V), []);
      const [dead] = await q.deadLetters("jobs");
      assert.equal(dead.lastError, EXPIRED_ERROR + 1);
    },
    { maxDeliveries: 1 },
  );

  test(
    "peek shows the true last error: none or the nack's while in flight, the expiry once it came",
    async (q) => {
      const look = async () => {
        const [m] = await q.peek("jobs");
        return [m.state, m.deliveries, m.lastError];
      };
      await q.enqueue("jobs", ["x"]);
      const [m1] = await q.dequeue("jobs", V);
      assert.deepEqual(await look(), ["inFlight", 1, undefined], "in flight is not an expiry");
      await q.nack(m1, { error: "e1" });
      const [m2] = await q.dequeue("jobs", { visibilityTimeoutMs: 150 });
      assert.equal(m2.lastError, "e1");
      assert.deepEqual(await look(), ["inFlight", 2, "e1"], "the nack's error stays visible");
      await sleep(250);
      assert.deepEqual(await look(), ["ready", 2, EXPIRED_ERROR + 2], "this delivery expired");
      const [m3] = await q.dequeue("jobs", { visibilityTimeoutMs: 150 });
      assert.equal(m3.lastError, EXPIRED_ERROR + 2);
      assert.deepEqual(await look(), ["inFlight", 3, EXPIRED_ERROR + 2]);
      await sleep(250);
      assert.deepEqual(await q.dequeue("jobs", V), [], "the third was the last delivery");
      const [dead] = await q.deadLetters("jobs");
      assert.deepEqual([dead.deliveries, dead.lastError], [3, EXPIRED_ERROR + 3]);
      assert.equal(await q.requeueDead("jobs"), 1);
      assert.deepEqual(await look(), ["ready", 0, EXPIRED_ERROR + 3], "requeued: error kept");
    },
    { maxDeliveries: 3 },
  );

  test("wait returns on an enqueue, on its timeout, or at once on abort", async (q) => {
    assert.deepEqual(await q.dequeue("jobs", V), []);
    let t = performance.now();
    await q.wait("jobs", 100);
    assert.ok(performance.now() - t >= 90, "nothing enqueued: the full timeout");
    assert.deepEqual(await q.dequeue("jobs", V), []);
    const ac = new AbortController();
    ac.abort();
    t = performance.now();
    await q.wait("jobs", 10_000, ac.signal);
    assert.ok(performance.now() - t < 1_000, "aborted: at once");
    assert.deepEqual(await q.dequeue("jobs", V), []);
    t = performance.now();
    const waiting = q.wait("jobs", 5_000);
    await sleep(20);
    await q.enqueue("jobs", ["wake"]);
    await waiting;
    const waited = performance.now() - t;
    assert.equal((await q.dequeue("jobs", V))[0].body, "wake");
    return void waited; // how soon depends on notifications; the PostgreSQL file checks it
  });

  test("bad input is a typed error naming the field", async (q) => {
    const field = (f: string) => (e: unknown) => e instanceof InvalidArgumentError && e.field === f;
    for (const bad of ["", "-x", "a b", "x".repeat(201), 7, undefined]) {
      await assert.rejects(q.enqueue(bad as string, [1]), field("queue"), String(bad));
      await assert.rejects(q.dequeue(bad as string, V), field("queue"));
      await assert.rejects(q.stats(bad as string), field("queue"));
    }
    await assert.rejects(q.enqueue("jobs", "x" as unknown as unknown[]), field("messages"));
    await assert.rejects(q.enqueue("jobs", [1, undefined]), field("messages[1]"));
    await assert.rejects(q.enqueue("jobs", [() => 1]), field("messages[0]"));
    await assert.rejects(q.enqueue("jobs", [{ big: 1n }]), field("messages[0]"));
    const cycle: Record<string, unknown> = {};
    cycle.self = cycle;
    await assert.rejects(q.enqueue("jobs", [cycle]), field("messages[0]"));
    await assert.rejects(q.enqueue("jobs", ["x".repeat(200)]), field("messages[0]"));
    await assert.rejects(q.enqueue("jobs", [1], { delayMs: -1 }), field("delayMs"));
    await assert.rejects(q.enqueue("jobs", [1], { delayMs: 2 ** 31 }), field("delayMs"));
    await assert.rejects(
      q.dequeue("jobs", { visibilityTimeoutMs: 0 }),
      field("visibilityTimeoutMs"),
    );
    await assert.rejects(
      q.dequeue("jobs", { visibilityTimeoutMs: 1.5 }),
      field("visibilityTimeoutMs"),
    );
    await assert.rejects(q.dequeue("jobs", { ...V, max: 0 }), field("max"));
    await assert.rejects(q.dequeue("jobs", { ...V, max: 1001 }), field("max"));
    await assert.rejects(q.dequeue("jobs", undefined as never), field("options"));
    await assert.rejects(q.deadLetters("jobs", 0), field("limit"));
    const forged = { id: "x1", queue: "jobs", receipt: "r" } as unknown as QueueMessage;
    await assert.rejects(q.ack(forged), field("message"));
    await assert.rejects(q.ack(null as never), field("message"));
    await q.enqueue("jobs", ["ok"]);
    const [m] = await q.dequeue("jobs", V);
    await assert.rejects(q.nack(m, { delayMs: -5 }), field("delayMs"));
    await assert.rejects(q.nack(m, { error: 5 as never }), field("error"));
    await assert.rejects(q.extend(m, 0), field("visibilityTimeoutMs"));
    assert.equal(await q.ack(m), true, "rejected calls left the delivery alone");
  }, { maxMessageBytes: 100 });

  test("peek shows the oldest messages and their states without taking them", async (q) => {
    await q.enqueue("jobs", [{ n: 1 }, { n: 2 }]);
    await q.enqueue("jobs", [{ n: 3 }], { delayMs: 60_000 });
    const [held] = await q.dequeue("jobs", V);
    const peeked = await q.peek("jobs");
    assert.deepEqual(peeked.map((m) => [m.body, m.state]), [
      [{ n: 1 }, "inFlight"],
      [{ n: 2 }, "ready"],
      [{ n: 3 }, "delayed"],
    ]);
    assert.equal(peeked[0].deliveries, 1);
    assert.equal(peeked[1].deliveries, 0);
    assert.ok(peeked[0].enqueuedAt.getTime() <= Date.now() + 1_000);
    assert.equal((await q.peek("jobs", 1)).length, 1);
    assert.deepEqual(await q.peek("other"), []);
    // Nothing was taken: the ready one is still there for a dequeue.
    const [next] = await q.dequeue("jobs", V);
    assert.deepEqual(next.body, { n: 2 });
    assert.equal(await q.ack(held), true);
    await assert.rejects(
      q.peek("jobs", 0),
      (e: unknown) => e instanceof InvalidArgumentError && e.field === "limit",
    );
  });
}
