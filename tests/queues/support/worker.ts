// A queue consumer process for the kill test and the fault suite: a postgresQueues consumer whose
// handler logs each call's start and end, and whose acks are logged with their outcome, one line
// per event appended synchronously to LOG so that a SIGKILL loses nothing written.
//
//   LOG lines: `start <id> <delivery> <t>`, `end <id> <t> ok|fail`, `ack <id> <t> true|false`,
//   `nack <id> <t> true|false`
//   (t: ms since the epoch, sub-millisecond, comparable across processes).
//
// Env: IMPEL_PG_URL, QUEUE_SCHEMA, QUEUE_NAME, LOG, CONCURRENCY (8), VISIBILITY_MS (2000),
// MAX_DELIVERIES (5), HANDLER_MS (3: each call sleeps up to this). A body { hang: true } never
// finishes; { poison: true } always throws.
// @ts-types="@types/pg"
import pg from "pg";
import {
  poolNotifications,
  postgresQueues,
  queueConsumer,
  type QueueStore,
} from "../../../queues/postgres.ts";
import { stopOnSignals } from "../../../core/shutdown.ts";

const env = (name: string, fallback?: string): string => {
  const value = Deno.env.get(name) ?? fallback;
  if (value === undefined) throw new Error(`${name} is not set`);
  return value;
};
const logPath = env("LOG");
const now = () => (performance.timeOrigin + performance.now()).toFixed(3);
const write = (line: string) => Deno.writeTextFileSync(logPath, line + "\n", { append: true });

const pool = new pg.Pool({ connectionString: env("IMPEL_PG_URL"), max: 4 });
pool.on("error", () => {});
const notifications = poolNotifications(pool);
const store = postgresQueues(pool, {
  schema: env("QUEUE_SCHEMA"),
  maxDeliveries: Number(env("MAX_DELIVERIES", "5")),
  notifications,
});
const logged: QueueStore = {
  ...store,
  async ack(message) {
    const ok = await store.ack(message);
    write(`ack ${message.id} ${now()} ${ok}`);
    return ok;
  },
  async ackMany(messages) {
    const oks = await store.ackMany(messages);
    const t = now();
    messages.forEach((m, i) => write(`ack ${m.id} ${t} ${oks[i]}`));
    return oks;
  },
  async nack(message, options) {
    const ok = await store.nack(message, options);
    write(`nack ${message.id} ${now()} ${ok}`);
    return ok;
  },
};
const handlerMs = Number(env("HANDLER_MS", "3"));
using stop = stopOnSignals();
const consumer = queueConsumer<{ hang?: boolean; poison?: boolean }>({
  store: logged,
  queue: env("QUEUE_NAME"),
  concurrency: Number(env("CONCURRENCY", "8")),
  visibilityTimeoutMs: Number(env("VISIBILITY_MS", "2000")),
  retry: { initialDelayMs: 20, maxDelayMs: 200 },
  pollMs: 200,
  signal: stop.signal,
  handler: async (body, message) => {
    write(`start ${message.id} ${message.deliveries} ${now()}`);
    if (body.hang) await new Promise(() => {});
    await new Promise((r) => setTimeout(r, Math.random() * handlerMs));
    if (body.poison) {
      write(`end ${message.id} ${now()} fail`);
      throw new Error(`poison message ${message.id}`);
    }
    write(`end ${message.id} ${now()} ok`);
  },
});
write(`ready 0 ${now()}`);
await consumer.done;
await store.close();
await notifications.close();
await pool.end();
