/**
 * The `queue` commands over PostgreSQL queues: `stats` (counts by state, the oldest message's
 * age), `peek` (the oldest messages or dead letters, without taking them) and `requeue-dead`
 * (dead letters back into their queue). Internal to the `impel` command line.
 *
 * @module
 */
import type { QueueStore } from "../queues/queue.ts";
import { type Args, type Command, JSON_OUT, type OptionSpec } from "./args.ts";
import { load, PG, withPostgres } from "./backends.ts";
import { EXIT, notFound } from "./exit.ts";
import { table } from "./table.ts";

const QUEUE: OptionSpec[] = [
  ...PG,
  { name: "queue", kind: "string", arg: "NAME", help: "the queue" },
  {
    name: "schema",
    kind: "string",
    arg: "NAME",
    fallback: "impel",
    help: "schema of the queue tables",
  },
];

/** Runs `fn` with the PostgreSQL queue store; missing tables exit 4. */
async function withQueues(args: Args, fn: (store: QueueStore, queue: string) => Promise<number>) {
  const queue = args.required("queue");
  return await withPostgres(args, async (pool) => {
    const m = await load("queues/postgres.ts", () => import("../queues/postgres.ts"));
    const store = m.postgresQueues(pool, { schema: args.string("schema") });
    try {
      return await fn(store, queue);
    } catch (error) {
      if (error instanceof m.QueueTablesMissingError) {
        throw notFound(`${error.message} (initPostgresQueues creates them)`);
      }
      throw error;
    } finally {
      await store.close();
    }
  });
}

const age = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
const text = (body: unknown, width = 60) => {
  const s = JSON.stringify(body);
  return s.length > width ? s.slice(0, width - 1) + "…" : s;
};

/** `impel queue stats`: counts by state and the oldest message's age. */
export const queueStats: Command = {
  path: ["queue", "stats"],
  summary:
    "Shows a PostgreSQL queue's messages by state, its dead letters and its oldest message's age.",
  usage: "queue stats [--url URL] --queue NAME [--schema NAME] [--json]",
  details: "Ages are by this machine's clock against the database's enqueue times.",
  options: [...QUEUE, JSON_OUT],
  run: (args) =>
    withQueues(args, async (store, queue) => {
      const stats = await store.stats(queue);
      const [oldest] = await store.peek(queue, 1);
      const [oldestDead] = await store.deadLetters(queue, 1);
      const oldestAgeMs = oldest === undefined ? null : Date.now() - oldest.enqueuedAt.getTime();
      if (args.flag("json")) {
        args.io.out(
          JSON.stringify({
            queue,
            ...stats,
            oldestAgeMs,
            oldestDeadAt: oldestDead?.deadAt.toISOString() ?? null,
          }) + "\n",
        );
      } else {
        args.io.out(table([
          ["QUEUE", "READY", "IN FLIGHT", "DELAYED", "DEAD", "OLDEST"],
          [
            queue,
            String(stats.ready),
            String(stats.inFlight),
            String(stats.delayed),
            String(stats.dead),
            oldestAgeMs === null ? "-" : age(oldestAgeMs),
          ],
        ]));
      }
      return EXIT.ok;
    }),
};

/** `impel queue peek`: the oldest messages (or dead letters), not taken. */
export const queuePeek: Command = {
  path: ["queue", "peek"],
  summary:
    "Shows the oldest messages of a PostgreSQL queue (or its dead letters) without taking them.",
  usage: "queue peek [--url URL] --queue NAME [--dead] [--limit N] [--schema NAME] [--json]",
  details: "Exits 4 when there is nothing to show.",
  options: [
    ...QUEUE,
    { name: "dead", kind: "boolean", help: "the dead letters instead, oldest first" },
    { name: "limit", kind: "string", arg: "N", fallback: "20", help: "at most N" },
    JSON_OUT,
  ],
  run: (args) =>
    withQueues(args, async (store, queue) => {
      const limit = args.integer("limit", 20, 1);
      const now = Date.now();
      if (args.flag("dead")) {
        const dead = await store.deadLetters(queue, limit);
        if (args.flag("json")) {
          for (const d of dead) args.io.out(JSON.stringify(d) + "\n");
        } else if (dead.length > 0) {
          args.io.out(table([
            ["ID", "DELIVERIES", "DEAD FOR", "LAST ERROR", "BODY"],
            ...dead.map((d) => [
              d.id,
              String(d.deliveries),
              age(now - d.deadAt.getTime()),
              text(d.lastError, 40),
              text(d.body),
            ]),
          ]));
        }
        if (dead.length === 0) args.io.err(`no dead letters in ${queue}\n`);
        return dead.length === 0 ? EXIT.notFound : EXIT.ok;
      }
      const list = await store.peek(queue, limit);
      if (args.flag("json")) {
        for (const m of list) args.io.out(JSON.stringify(m) + "\n");
      } else if (list.length > 0) {
        args.io.out(table([
          ["ID", "STATE", "DELIVERIES", "AGE", "LAST ERROR", "BODY"],
          ...list.map((m) => [
            m.id,
            m.state,
            String(m.deliveries),
            age(now - m.enqueuedAt.getTime()),
            m.lastError === undefined ? "-" : text(m.lastError, 40),
            text(m.body),
          ]),
        ]));
      }
      if (list.length === 0) args.io.err(`no messages in ${queue}\n`);
      return list.length === 0 ? EXIT.notFound : EXIT.ok;
    }),
};

/** `impel queue requeue-dead`: dead letters back into their queue. */
export const queueRequeueDead: Command = {
  path: ["queue", "requeue-dead"],
  summary: "Moves a PostgreSQL queue's dead letters back into it, oldest first, visible at once.",
  usage: "queue requeue-dead [--url URL] --queue NAME [--limit N] [--schema NAME]",
  details: "Their delivery counts start again from 0; their last error is kept. " +
    "For after the cause was fixed. Prints how many moved.",
  options: [
    ...QUEUE,
    { name: "limit", kind: "string", arg: "N", fallback: "1000", help: "at most N" },
  ],
  run: (args) =>
    withQueues(args, async (store, queue) => {
      const limit = args.integer("limit", 1000, 1);
      const moved = await store.requeueDead(queue, limit);
      args.io.out(`requeued ${moved} dead letter${moved === 1 ? "" : "s"} of ${queue}\n`);
      return EXIT.ok;
    }),
};
