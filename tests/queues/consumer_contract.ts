// The queue consumer over any queue store: bounded concurrency, ack on success, nack with backoff
// and dead letters on failure, visibility extended while a handler runs, a clean stop.
import assert from "node:assert/strict";
import { InvalidArgumentError } from "../../core/errors.ts";
import { queueConsumer } from "../../queues/consumer.ts";
import type { FreshQueues } from "./contract.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, cond: () => Promise<boolean> | boolean, ms = 10_000) {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** Registers the consumer's cases over one kind of store, named `${name}: consumer ...`. */
export function consumerContract(
  name: string,
  fresh: FreshQueues,
  options: { ignore?: boolean } = {},
): void {
  const test = (
    title: string,
    fn: (f: Awaited<ReturnType<FreshQueues>>) => Promise<void>,
    storeOptions: { maxDeliveries?: number } = {},
  ) =>
    Deno.test({
      name: `${name}: consumer ${title}`,
      ignore: options.ignore,
      sanitizeOps: false,
      sanitizeResources: false,
      async fn() {
        await using f = await fresh(storeOptions);
        await fn(f);
      },
    });

  test("handles every message once, at most `concurrency` at a time, acking each", async ({ store }) => {
    await store.enqueue("jobs", Array.from({ length: 40 }, (_, i) => i));
    const ac = new AbortController();
    const seen: number[] = [];
    let running = 0, peak = 0;
    const consumer = queueConsumer<number>({
      store,
      queue: "jobs",
      concurrency: 4,
      pollMs: 20,
      signal: ac.signal,
      handler: async (n) => {
        peak = Math.max(peak, ++running);
        await sleep(5);
        seen.push(n);
        running--;
      },
    });
    await until("40 acks", () => consumer.stats().acked === 40);
    ac.abort();
    await consumer.done;
    assert.deepEqual(seen.sort((a, b) => a - b), Array.from({ length: 40 }, (_, i) => i));
    assert.equal(peak, 4, "four at once, never more");
    assert.deepEqual(await store.stats("jobs"), { ready: 0, inFlight: 0, delayed: 0, dead: 0 });
    const { durations, ...counts } = consumer.stats();
    assert.deepEqual(counts, { inFlight: 0, delivered: 40, acked: 40, nacked: 0, lost: 0 });
    // Every call timed (each sleeps 5 ms).
    assert.equal(durations.count, 40);
    assert.equal(durations.counts.reduce((a, b) => a + b, 0), 40);
    assert.ok(durations.sumMs >= 40 * 4, `sum ${durations.sumMs} ms`);
  });

  test(
    "a failing handler is nacked with backoff, then dead-lettered with its error",
    async ({ store }) => {
      await store.enqueue("jobs", [{ poison: true }, { poison: false }]);
      const ac = new AbortController();
      const calls: number[] = [];
      const consumer = queueConsumer<{ poison: boolean }>({
        store,
        queue: "jobs",
        pollMs: 20,
        retry: { initialDelayMs: 60, factor: 2, jitter: 0 },
        signal: ac.signal,
        handler: (body, message) => {
          if (!body.poison) return;
          calls.push(performance.now());
          throw new Error(`bad message on delivery ${message.deliveries}`);
        },
      });
      await until("the dead letter", async () => (await store.stats("jobs")).dead === 1);
      ac.abort();
      await consumer.done;
      assert.equal(calls.length, 3, "maxDeliveries 3");
      assert.ok(calls[1] - calls[0] >= 50, `first retry after ~60 ms, got ${calls[1] - calls[0]}`);
      assert.ok(calls[2] - calls[1] >= 100, `second after ~120 ms, got ${calls[2] - calls[1]}`);
      const [dead] = await store.deadLetters("jobs");
      assert.deepEqual(dead.body, { poison: true });
      assert.equal(dead.lastError, "Error: bad message on delivery 3");
      const stats = consumer.stats();
      assert.equal(stats.acked, 1);
      assert.equal(stats.nacked, 3);
    },
    { maxDeliveries: 3 },
  );

  test("visibility is extended while a slow handler runs: no second consumer gets it", async ({ store }) => {
    await store.enqueue("jobs", ["slow"]);
    const ac = new AbortController();
    const starts: string[] = [];
    const make = (who: string) =>
      queueConsumer({
        store,
        queue: "jobs",
        visibilityTimeoutMs: 120,
        pollMs: 10,
        signal: ac.signal,
        handler: async () => {
          starts.push(who);
          await sleep(500);
        },
      });
    const a = make("a"), b = make("b");
    await until("the ack", () => a.stats().acked + b.stats().acked === 1);
    ac.abort();
    await Promise.all([a.done, b.done]);
    assert.equal(starts.length, 1, `handled once in 500 ms with 120 ms visibility: ${starts}`);
    assert.equal(a.stats().lost + b.stats().lost, 0);
  });

  test("an abort lets in-flight handlers finish and ack; nothing new starts", async ({ store }) => {
    await store.enqueue("jobs", Array.from({ length: 10 }, (_, i) => i));
    const ac = new AbortController();
    const started: number[] = [];
    const finished: number[] = [];
    const consumer = queueConsumer<number>({
      store,
      queue: "jobs",
      concurrency: 3,
      signal: ac.signal,
      handler: async (n) => {
        started.push(n);
        if (started.length === 3) ac.abort();
        await sleep(100);
        finished.push(n);
      },
    });
    await consumer.done;
    assert.equal(started.length, 3);
    assert.deepEqual(finished.sort(), started.sort(), "every started handler finished");
    assert.equal(consumer.stats().acked, 3);
    assert.equal(consumer.stats().inFlight, 0);
    const stats = await store.stats("jobs");
    assert.deepEqual(stats, { ready: 7, inFlight: 0, delayed: 0, dead: 0 }, "the rest untouched");
  });

  test("a lost delivery aborts its handler's signal and is not acked", async ({ store }) => {
    await store.enqueue("jobs", ["x"]);
    const ac = new AbortController();
    let aborted = false;
    // A deliberate fault: the store says the delivery is no longer held at the first extension.
    const losing = { ...store, extend: () => Promise.resolve(false) };
    let acks = 0;
    const consumer = queueConsumer({
      store: { ...losing, ackMany: (ms) => (acks++, store.ackMany(ms)) },
      queue: "jobs",
      visibilityTimeoutMs: 60,
      signal: ac.signal,
      handler: async (_body, _m, { signal }) => {
        await new Promise<void>((resolve) => signal.addEventListener("abort", () => resolve()));
        aborted = true;
      },
    });
    await until("the loss", () => consumer.stats().lost === 1);
    ac.abort();
    await consumer.done;
    assert.equal(aborted, true);
    assert.equal(acks, 0, "not acked");
    assert.equal(consumer.stats().acked, 0);
  });

  test("store failures are retried and shown as the problem until they pass", async ({ store }) => {
    await store.enqueue("jobs", ["x"]);
    const ac = new AbortController();
    let failures = 3;
    const flaky = {
      ...store,
      dequeue: (queue: string, o: Parameters<typeof store.dequeue>[1]) =>
        failures-- > 0 ? Promise.reject(new Error("connection reset")) : store.dequeue(queue, o),
    };
    const consumer = queueConsumer({
      store: flaky,
      queue: "jobs",
      retry: { initialDelayMs: 40, jitter: 0 },
      signal: ac.signal,
      handler: () => {},
    });
    await until("a problem", () => consumer.stats().problem !== undefined);
    const problem = consumer.stats().problem!;
    assert.equal(problem.what, "dequeue");
    assert.equal(problem.error, "Error: connection reset");
    await until("the ack", () => consumer.stats().acked === 1);
    assert.equal(consumer.stats().problem, undefined, "cleared once a dequeue succeeded");
    ac.abort();
    await consumer.done;
  });

  test("bad options are typed errors naming the field", ({ store }) => {
    const field = (f: string) => (e: unknown) => e instanceof InvalidArgumentError && e.field === f;
    const ok = { store, queue: "jobs", handler: () => {} };
    assert.throws(() => queueConsumer({ ...ok, store: {} as never }), field("store"));
    assert.throws(() => queueConsumer({ ...ok, queue: "a b" }), field("queue"));
    assert.throws(() => queueConsumer({ ...ok, handler: 5 as never }), field("handler"));
    assert.throws(() => queueConsumer({ ...ok, concurrency: 0 }), field("concurrency"));
    assert.throws(() => queueConsumer({ ...ok, concurrency: 1.5 }), field("concurrency"));
    assert.throws(
      () => queueConsumer({ ...ok, visibilityTimeoutMs: -1 }),
      field("visibilityTimeoutMs"),
    );
    assert.throws(() => queueConsumer({ ...ok, pollMs: 0 }), field("pollMs"));
    assert.throws(
      () => queueConsumer({ ...ok, retry: { initialDelayMs: -1 } }),
      field("retry.initialDelayMs"),
    );
    assert.throws(() => queueConsumer({ ...ok, signal: {} as never }), field("signal"));
    assert.throws(() => queueConsumer(null as never), field("options"));
    return Promise.resolve();
  });
}
