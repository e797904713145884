import assert from "node:assert/strict";
import { Kafka, logLevel } from "kafkajs";
import { run, streamsSink } from "../../core/sink.ts";
import { checkHealth, type HealthReport } from "../../observability/health.ts";
import { createMetrics } from "../../observability/metrics.ts";
import { kafkajsLogCreator, kafkaSource } from "../../sources/kafka.ts";
import { within } from "../support/core.ts";

/** A local port nothing listens on: bound, then closed again. */
function closedPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

Deno.test({
  name:
    "health: a real Kafka consumer whose broker port is closed shows in health, then fails run()",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const kafka = new Kafka({
      clientId: "obs-health",
      brokers: [`127.0.0.1:${closedPort()}`],
      logCreator: kafkajsLogCreator(),
      logLevel: logLevel.NOTHING,
      connectionTimeout: 200,
      retry: { retries: 3, initialRetryTime: 200, maxRetryTime: 400 },
    });
    const consumer = kafka.consumer({ groupId: `obs-health-${crypto.randomUUID().slice(0, 8)}` });
    const metrics = createMetrics({ defaultMetrics: false });
    const sink = streamsSink({ group: "obs-kafka", statsIntervalMs: 0, handler: () => {} });
    const pipeline = metrics.addPipeline({ group: "obs-kafka", source: "kafka", sink });
    const ac = new AbortController();
    const running = run(
      pipeline.observe(kafkaSource({ consumer, topics: ["obs-health"], signal: ac.signal })),
      sink,
      { signal: ac.signal },
    );
    try {
      // While kafkajs keeps trying to connect, the source says so.
      const joining: HealthReport = await checkHealth(metrics.pipelines());
      assert.equal(joining.status, "degraded");
      assert.equal(joining.reasons[0].kind, "source");
      assert.match(joining.reasons[0].message, /^source: kafka consumer .*, for \d+\.\d s$/);

      // Once kafkajs gives up, run() rejects with the typed error and health says why.
      const outcome = await within(running, 20_000);
      assert.equal(outcome.timedOut, undefined, "run() must not hang on an unreachable broker");
      assert.equal((outcome.error as Error).name, "KafkaConsumerCrashedError");
      const failed = await checkHealth(metrics.pipelines());
      assert.equal(failed.status, "failing");
      const source = failed.reasons.find((r) => r.kind === "source" && r.status === "failing");
      assert.ok(source, JSON.stringify(failed.reasons));
      assert.match(source.message, /^source: stopped reading: KafkaConsumerCrashedError: /);
      assert.ok(failed.reasons.some((r) => r.kind === "stopped"));
    } finally {
      ac.abort();
      await running.catch(() => {});
      await consumer.disconnect().catch(() => {});
    }
  },
});
