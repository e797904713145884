// A deliberate fault no real broker gives on demand: a commit that kafkajs keeps retrying past the
// revocation's final-commit timeout. kafkajs would send such a retry under the new generation
// after a rejoin (for a partition another member may own by then), so the source must hold the
// rejoin until the commit settles. The consumer is a fake with kafkajs 2.2.4's surface.
import assert from "node:assert/strict";
import { run, streamsSink } from "../core/sink.ts";
import { type KafkaConsumer, type KafkaEachBatchPayload, kafkaSource } from "../sources/kafka.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const EVENTS = {
  GROUP_JOIN: "join",
  CRASH: "crash",
  STOP: "stop",
  REBALANCING: "rebalancing",
  COMMIT_OFFSETS: "commit",
};

Deno.test(
  "kafka source: kafkajs rejoins only once a commit it is still retrying has settled",
  opts,
  async () => {
    const listeners = new Map<string, Array<(e: { payload: unknown }) => void>>();
    const emit = (name: string, payload: unknown) =>
      listeners.get(name)?.forEach((l) => l({ payload }));
    let eachBatch!: (p: KafkaEachBatchPayload) => Promise<void>;
    const sent: string[] = [];
    let settleCommit!: () => void;
    const consumer: KafkaConsumer = {
      connect: () => Promise.resolve(),
      subscribe: () => Promise.resolve(),
      run: (config) => {
        eachBatch = config.eachBatch!;
        return Promise.resolve();
      },
      // The first commit hangs (kafkajs retrying it); it lands only when the test says so.
      commitOffsets: (offsets) => {
        sent.push(offsets.map((o) => `${o.partition}@${o.offset}`).join());
        return new Promise<void>((resolve) => {
          settleCommit = () => {
            emit(EVENTS.COMMIT_OFFSETS, {
              topics: [{ topic: "t", partitions: offsets.map((o) => ({ ...o })) }],
            });
            resolve();
          };
        });
      },
      pause: () => {},
      events: EVENTS,
      on: (name, listener) => {
        listeners.set(name, [...(listeners.get(name) ?? []), listener]);
        return () => {};
      },
    };
    const controller = new AbortController();
    const handled: number[] = [];
    const sink = streamsSink({
      statsIntervalMs: 0,
      commitIntervalMs: 20,
      stopTimeoutMs: 200, // the final commit of the revocation times out after this
      handler: (_s, events) => void events.forEach((e) => handled.push(e.index)),
    });
    const running = run(
      kafkaSource({ consumer, topics: ["t"], signal: controller.signal }),
      sink,
      { signal: controller.signal },
    );
    running.catch(() => {});
    while (eachBatch === undefined) await sleep(5);
    emit(EVENTS.GROUP_JOIN, { groupId: "g", memberId: "m", memberAssignment: { t: [0] } });

    let rebalancing = false;
    let outcome: string | undefined;
    void eachBatch({
      batch: {
        topic: "t",
        partition: 0,
        highWatermark: "1",
        messages: [{
          key: new TextEncoder().encode("Order-1"),
          value: null,
          timestamp: "0",
          offset: "0",
        }],
        lastOffset: () => "0",
      },
      isStale: () => false,
      isRunning: () => true,
      heartbeat: () =>
        rebalancing
          ? Promise.reject(
            Object.assign(new Error("rebalancing"), { type: "REBALANCE_IN_PROGRESS" }),
          )
          : Promise.resolve(),
    }).then(() => (outcome = "returned"), (e) => (outcome = `rejected: ${e.type}`));

    while (sent.length === 0) await sleep(5);
    assert.deepEqual(handled, [0]);
    await sleep(300);
    assert.equal(outcome, undefined, "a fetch at the tail is held while its commit is pending");

    rebalancing = true;
    await sleep(1000); // the heartbeat sees it, the revocation's final commit times out (200 ms)
    assert.equal(outcome, undefined, "kafkajs is not let rejoin while its commit may still go out");
    settleCommit();
    const deadline = Date.now() + 2000;
    while (outcome === undefined && Date.now() < deadline) await sleep(5);
    assert.equal(outcome, "rejected: REBALANCE_IN_PROGRESS", "then kafkajs may rejoin");
    assert.deepEqual(sent, ["0@1"], "nothing more was sent for the released partition");
    controller.abort();
    await running;
  },
);
