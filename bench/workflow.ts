// Workflow benchmark: fulfilment orders (3 steps each: reserve, pay, ship) completed per second,
// on the memory store and on MessageDB, run two ways over the same three services in alternating
// rounds of the same run:
//   - workflow: the fulfilment saga through startWorkflow (outbox in the instance stream, a
//     dispatcher delivering each send and recording it, the capture routed back from the Payment
//     category as the pay step's outcome);
//   - direct: a reactor over an Order category that, on OrderPlaced, calls the services itself
//     (reserve; request and capture; ship) and records the outcome: no outbox, no delivery marks.
// The payment is captured inline by the RequestPayment handler (resp. the reactor), so neither
// waits for a gateway. Reported: orders/s (from the first placement to the last order ended),
// events written per order, and the workflow's cost against the direct reactor.
//
//   deno run --allow-all bench/workflow.ts [--orders 2000] [--mdb-orders 500] [--rounds 3]
//     [--stores memory,messagedb] [--streams 64]
// MessageDB: prepare the database first (`tools/postgres.sh impel_bench`); IMPEL_BENCH_PG_URL
// overrides postgres://postgres@127.0.0.1:5432/impel_bench. The bench installs the NOTIFY
// trigger there, so both styles wake within milliseconds of an append.
// @ts-types="@types/pg"
import pg from "pg";
import type { Batch } from "../core/batch.ts";
import { memoryCheckpoints } from "../checkpoints/memory.ts";
import { initPostgresCheckpoints, postgresCheckpoints } from "../checkpoints/postgres.ts";
import { createCodec } from "../core/codec.ts";
import { createDecider, createStateCache } from "../core/decider.ts";
import { run, streamsSink } from "../core/sink.ts";
import type { EventStore } from "../core/store.ts";
import { idOf } from "../core/streamName.ts";
import { deliveryOptions, startWorkflow, workflowCategories } from "../core/workflow.ts";
import {
  fulfilment,
  fulfilmentHandlers,
  type FulfilmentServices,
  fulfilmentServices,
  type Order,
} from "../examples/fulfilment/fulfilment.ts";
import { installNotifyTrigger, messageDbSource, poolNotifications } from "../sources/messagedb.ts";
import { createMemoryStore, memorySource, type MemoryStore } from "../sources/memory.ts";
import { messageDbStore } from "../stores/messagedb.ts";

const args = new Map<string, string>();
for (let k = 0; k < Deno.args.length; k += 2) {
  args.set(Deno.args[k].replace(/^--/, ""), Deno.args[k + 1]);
}
const memoryOrders = Number(args.get("orders") ?? 2000);
const mdbOrders = Number(args.get("mdb-orders") ?? 500);
const rounds = Number(args.get("rounds") ?? 3);
const stores = (args.get("stores") ?? "memory,messagedb").split(",");
const maxConcurrentStreams = Number(args.get("streams") ?? 64);
const url = Deno.env.get("IMPEL_BENCH_PG_URL") ?? "postgres://postgres@127.0.0.1:5432/impel_bench";
const SKUS = 50;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const fmt = (n: number, digits = 0) =>
  n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });

/** A backend for one round: a store, feeds of categories, and how many events it holds. */
interface Backend {
  readonly store: EventStore;
  source(categories: string[], group: string, signal: AbortSignal): ReadableStream<Batch>;
  /** Events written under ids starting with `run` (for events per order). */
  written(run: string): Promise<number>;
  /** How many of `run`'s orders have ended, in the given style. */
  ended(run: string, style: Style, orders: readonly Order[]): Promise<number>;
}
type Style = "workflow" | "direct";

// The direct style: an Order stream per order, and a reactor that does the three steps itself.
type OrderEvent =
  | { type: "OrderPlaced"; data: Order }
  | { type: "OrderFulfilled"; data: { trackingId: string } }
  | { type: "OrderCancelled"; data: { reason: string } };
type OrderState = { order?: Order; ended: boolean };
const orderCodec = createCodec<OrderEvent>({
  OrderPlaced: {},
  OrderFulfilled: {},
  OrderCancelled: {},
});
const foldOrder = (s: OrderState, events: readonly OrderEvent[]): OrderState =>
  events.reduce<OrderState>(
    (st, e) => e.type === "OrderPlaced" ? { order: e.data, ended: false } : { ...st, ended: true },
    s,
  );

function directReactor(
  store: EventStore,
  services: FulfilmentServices,
  cache = createStateCache(),
) {
  const orders = createDecider<OrderEvent, OrderState>({
    store,
    codec: orderCodec,
    initial: { ended: false },
    fold: foldOrder,
    cache,
  });
  const { stock, payment, shipping } = services;
  return {
    place: (o: Order) =>
      orders.transact(
        `Order-${o.orderId}`,
        (s) => s.order ? [] : [{ type: "OrderPlaced", data: o }],
      ),
    handler: async (stream: string) => {
      const { order, ended } = await orders.query(stream, (s) => s);
      if (order === undefined || ended) return;
      const key = (step: string) => ({ idempotencyKey: `${stream}/${step}` });
      const end = (e: OrderEvent) =>
        orders.transactEx(stream, (s) => s.ended ? [] : [e]).then((r) => r.version);
      const reserved = await stock.reserve(order.sku, idOf(stream), order.quantity, key("reserve"));
      if (!reserved.ok) return end({ type: "OrderCancelled", data: { reason: reserved.reason } });
      await payment.request(order.orderId, order.amount, key("request"));
      await payment.capture(order.orderId);
      const shipped = await shipping.ship(
        order.orderId,
        order.sku,
        order.quantity,
        order.address,
        key("ship"),
      );
      if (shipped.ok) {
        return end({ type: "OrderFulfilled", data: { trackingId: shipped.trackingId } });
      }
      await payment.cancel(order.orderId, key("cancel"));
      await stock.release(order.sku, order.orderId, key("release"));
      return end({ type: "OrderCancelled", data: { reason: shipped.reason } });
    },
  };
}

async function round(
  backend: Backend,
  style: Style,
  n: number,
): Promise<{ rate: number; perOrder: number }> {
  const run_ = crypto.randomUUID().replaceAll("-", "").slice(0, 10);
  const store = backend.store;
  const services = fulfilmentServices(store, { cache: createStateCache({ maxEntries: 100_000 }) });
  for (let k = 0; k < SKUS; k++) await services.stock.restock(`${run_}s${k}`, n);
  const orders: Order[] = Array.from({ length: n }, (_, i) => ({
    orderId: `${run_}o${i}`,
    sku: `${run_}s${i % SKUS}`,
    quantity: 1,
    amount: 100,
    address: "1 Main St",
  }));
  const stop = new AbortController();
  const sinkOptions = { maxConcurrentStreams, statsIntervalMs: 0 };
  let place: (o: Order) => Promise<unknown>;
  let running: Promise<unknown>;
  let positioned: Promise<unknown>;
  if (style === "workflow") {
    const handlers = fulfilmentHandlers(services);
    const runner = startWorkflow(fulfilment, {
      store,
      source: backend.source(workflowCategories(fulfilment), `wf-${run_}`, stop.signal),
      cache: createStateCache({ maxEntries: 100_000 }),
      handlers: {
        ...handlers,
        RequestPayment: async (send) => {
          await services.payment.request(
            send.data.orderId,
            send.data.amount,
            deliveryOptions(send),
          );
          await services.payment.capture(send.data.orderId);
        },
      },
      timers: { category: `BenchTimers${run_}` },
      sink: { ...sinkOptions, group: `wf-${run_}` },
    });
    place = (o) =>
      runner.handle(o.orderId, { type: "Start", data: o }, { id: `place-${o.orderId}` });
    running = runner.running;
    positioned = runner.sink.monitor.awaitCompletion({ tail: true });
    stop.signal.addEventListener("abort", () => void runner.stop(), { once: true });
  } else {
    const reactor = directReactor(store, services);
    const sink = streamsSink({ ...sinkOptions, group: `direct-${run_}`, handler: reactor.handler });
    running = run(backend.source(["Order"], `direct-${run_}`, stop.signal), sink, {
      signal: stop.signal,
    });
    place = reactor.place;
    positioned = sink.monitor.awaitCompletion({ tail: true });
  }
  await positioned;
  const before = await backend.written(run_);
  const t0 = performance.now();
  const queue = [...orders];
  await Promise.all(Array.from({ length: 32 }, async () => {
    for (let o = queue.shift(); o !== undefined; o = queue.shift()) await place(o);
  }));
  while ((await backend.ended(run_, style, orders)) < n) {
    await new Promise((r) => setTimeout(r, 10));
  }
  const ms = performance.now() - t0;
  stop.abort();
  await running;
  const perOrder = ((await backend.written(run_)) - before) / n;
  return { rate: n / (ms / 1000), perOrder };
}

function memoryBackend(): Backend {
  const store: MemoryStore = createMemoryStore();
  const checkpoints = memoryCheckpoints();
  const count = (run_: string, test: (stream: string, type: string) => boolean) =>
    store.readLog(0, store.head).filter((e) =>
      e.stream.includes(run_) && test(e.stream, e.event.type)
    )
      .length;
  let ended = 0, endedFrom = 0;
  return {
    store,
    source: (categories, group) => memorySource({ store, categories, checkpoints, group }),
    written: (run_) => Promise.resolve(count(run_, () => true)),
    ended(run_, style) {
      // Only what was appended since the last look, so the poll stays cheap.
      const log = store.readLog(endedFrom, store.head);
      endedFrom = store.head;
      const ends = style === "workflow"
        ? ["Completed", "Compensated", "Failed"]
        : ["OrderFulfilled", "OrderCancelled"];
      for (const e of log) if (e.stream.includes(run_) && ends.includes(e.event.type)) ended++;
      return Promise.resolve(ended);
    },
  };
}

async function messageDbBackend(
  pool: pg.Pool,
  notifications: ReturnType<typeof poolNotifications>,
): Promise<Backend> {
  await installNotifyTrigger(pool);
  await initPostgresCheckpoints(pool);
  const checkpoints = postgresCheckpoints(pool);
  const count = async (sql: string, params: unknown[]) =>
    (await pool.query(sql, params)).rows[0].n as number;
  return {
    store: messageDbStore(pool),
    source: (categories, group, signal) =>
      messageDbSource({
        client: pool,
        categories,
        group,
        checkpoints,
        notifications,
        whenNoCheckpoint: "tail",
        signal,
      }),
    written: (run_) =>
      count(
        "SELECT count(*)::int AS n FROM message_store.messages WHERE stream_name LIKE $1",
        [`%-${run_}%`],
      ),
    ended: (run_, style) =>
      count(
        `SELECT count(*)::int AS n FROM message_store.messages
          WHERE message_store.category(stream_name) = $1 AND stream_name LIKE $2 AND type = ANY($3)`,
        style === "workflow"
          ? ["Fulfilment", `Fulfilment-${run_}%`, ["Completed", "Compensated", "Failed"]]
          : ["Order", `Order-${run_}%`, ["OrderFulfilled", "OrderCancelled"]],
      ),
  };
}

console.log(
  `workflow bench: ${rounds} alternating rounds per store; ${maxConcurrentStreams} streams at once`,
);
const lines: string[] = [];
for (const name of stores) {
  const pool = name === "messagedb"
    ? new pg.Pool({
      connectionString: url,
      max: 16,
      options: "-c search_path=message_store,public",
    })
    : undefined;
  pool?.on("error", () => {});
  const notifications = pool === undefined ? undefined : poolNotifications(pool);
  try {
    const n = name === "memory" ? memoryOrders : mdbOrders;
    const results: Record<Style, { rate: number; perOrder: number }[]> = {
      workflow: [],
      direct: [],
    };
    const backend = pool === undefined || notifications === undefined
      ? undefined
      : await messageDbBackend(pool, notifications);
    for (let r = 0; r < rounds; r++) {
      for (
        const style of (r % 2 === 0 ? ["workflow", "direct"] : ["direct", "workflow"]) as Style[]
      ) {
        const result = await round(backend ?? memoryBackend(), style, n);
        results[style].push(result);
        console.log(
          `${name} round ${r + 1} ${style}: ${fmt(result.rate)} orders/s, ${
            fmt(result.perOrder, 1)
          } events/order`,
        );
      }
    }
    const w = median(results.workflow.map((x) => x.rate)),
      d = median(results.direct.map((x) => x.rate));
    lines.push(
      `| ${name} | ${fmt(n)} | ${fmt(w)} (${
        results.workflow.map((x) => fmt(x.rate)).join(", ")
      }) | ` +
        `${fmt(d)} (${results.direct.map((x) => fmt(x.rate)).join(", ")}) | ${fmt(d / w, 2)}× | ` +
        `${fmt(results.workflow[0].perOrder, 1)} / ${fmt(results.direct[0].perOrder, 1)} |`,
    );
  } finally {
    await notifications?.close();
    await pool?.end();
  }
}
console.log(
  "\n| store | orders | workflow orders/s, median (rounds) | direct reactor orders/s, median (rounds) | direct / workflow | events per order (workflow / direct) |",
);
console.log("| --- | --- | --- | --- | --- | --- |");
for (const line of lines) console.log(line);
