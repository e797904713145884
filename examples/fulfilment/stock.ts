/**
 * Stock: how many units of one SKU are free, and which orders hold some. A reservation takes
 * units for an order, or is rejected (and recorded as such) when too few are free; a release
 * gives an order's units back. Each decision is idempotent by the order id: reserving again
 * reports the first outcome, releasing again changes nothing, so the saga's at-least-once
 * sends and compensations apply once even without their idempotency keys.
 *
 * @module
 */
import { createCodec } from "../../core/codec.ts";
import { createDecider, type StateCache, type TransactOptions } from "../../core/decider.ts";
import type { EventStore } from "../../core/store.ts";
import { streamName } from "../../core/streamName.ts";
import { fieldsOf, integer, text } from "../hotel/fields.ts";

/** The category of Stock streams. */
export const STOCK = "Stock";

/**
 * The stream of SKU `sku`.
 *
 * @example
 * ```ts
 * import { stockStream } from "./stock.ts";
 * stockStream("tea"); // "Stock-tea"
 * ```
 */
export const stockStream = (sku: string): string => streamName(STOCK, sku);

/** What happens to a SKU's stock. */
export type StockEvent =
  | { type: "Restocked"; data: { quantity: number } }
  | { type: "Reserved"; data: { orderId: string; quantity: number } }
  | { type: "ReservationRejected"; data: { orderId: string; quantity: number; available: number } }
  | { type: "Released"; data: { orderId: string; quantity: number } };

const order = (d: unknown) => {
  const f = fieldsOf(d);
  return { orderId: text(f, "orderId"), quantity: integer(f, "quantity") };
};

/**
 * Stored Stock events ↔ typed ones.
 *
 * @example
 * ```ts
 * import { stockCodec } from "./stock.ts";
 * stockCodec.encode({ type: "Restocked", data: { quantity: 5 } }).type; // "Restocked"
 * ```
 */
export const stockCodec = createCodec<StockEvent>({
  Restocked: { parse: (d) => ({ quantity: integer(fieldsOf(d), "quantity") }) },
  Reserved: { parse: order },
  ReservationRejected: {
    parse: (d) => ({ ...order(d), available: integer(fieldsOf(d), "available") }),
  },
  Released: { parse: order },
});

/** What became of an order's reservation. */
export type Hold = "held" | "rejected" | "released";

/** The folded state of a SKU. */
export interface Stock {
  /** Units free. */
  readonly available: number;
  /** Units each holding order holds. */
  readonly held: Readonly<Record<string, number>>;
  /** Every order seen, and where its reservation is. */
  readonly orders: Readonly<Record<string, Hold>>;
  /** Why each rejected order was rejected. */
  readonly rejections: Readonly<Record<string, string>>;
}

/** A SKU with no events. */
export const initialStock: Stock = { available: 0, held: {}, orders: {}, rejections: {} };

const outOfStock = (quantity: number, available: number) =>
  `out of stock: ${quantity} wanted, ${available} free`;

function evolve(s: Stock, e: StockEvent): Stock {
  switch (e.type) {
    case "Restocked":
      return { ...s, available: s.available + e.data.quantity };
    case "Reserved":
      return {
        ...s,
        available: s.available - e.data.quantity,
        held: { ...s.held, [e.data.orderId]: e.data.quantity },
        orders: { ...s.orders, [e.data.orderId]: "held" },
      };
    case "ReservationRejected":
      return {
        ...s,
        orders: { ...s.orders, [e.data.orderId]: "rejected" },
        rejections: {
          ...s.rejections,
          [e.data.orderId]: outOfStock(e.data.quantity, e.data.available),
        },
      };
    case "Released": {
      const { [e.data.orderId]: _, ...held } = s.held;
      return {
        ...s,
        available: s.available + e.data.quantity,
        held,
        orders: { ...s.orders, [e.data.orderId]: "released" },
      };
    }
  }
}

/**
 * Applies events to a SKU's state.
 *
 * @example
 * ```ts
 * import { foldStock, initialStock } from "./stock.ts";
 * foldStock(initialStock, [{ type: "Restocked", data: { quantity: 5 } }]).available; // 5
 * ```
 */
export const foldStock = (state: Stock, events: readonly StockEvent[]): Stock =>
  events.reduce(evolve, state);

/** The outcome of a reservation. */
export type ReserveResult =
  | { readonly ok: true }
  | { readonly ok: false; readonly reason: string };

/** A decision's events and what it reports. */
export interface Decided<R> {
  /** The events to append. */
  readonly events: readonly StockEvent[];
  /** The outcome. */
  readonly result: R;
}

/**
 * Adds units.
 *
 * @example
 * ```ts
 * import { initialStock, restock } from "./stock.ts";
 * restock(5)(initialStock); // [{ type: "Restocked", data: { quantity: 5 } }]
 * ```
 */
export function restock(quantity: number): (s: Stock) => StockEvent[] {
  return () => [{ type: "Restocked", data: { quantity } }];
}

/**
 * Reserves `quantity` units for `orderId`, or records why not; a repeat reports the first
 * outcome and records nothing.
 *
 * @example
 * ```ts
 * import { initialStock, reserve } from "./stock.ts";
 * reserve("o1", 2)(initialStock).result; // { ok: false, reason: "out of stock: 2 wanted, 0 free" }
 * ```
 */
export function reserve(orderId: string, quantity: number): (s: Stock) => Decided<ReserveResult> {
  return (s) => {
    const hold = s.orders[orderId];
    if (hold === "held") return { events: [], result: { ok: true } };
    if (hold === "rejected") {
      return { events: [], result: { ok: false, reason: s.rejections[orderId] } };
    }
    if (hold === "released") return { events: [], result: { ok: false, reason: "released" } };
    if (s.available < quantity) {
      return {
        events: [{
          type: "ReservationRejected",
          data: { orderId, quantity, available: s.available },
        }],
        result: { ok: false, reason: outOfStock(quantity, s.available) },
      };
    }
    return { events: [{ type: "Reserved", data: { orderId, quantity } }], result: { ok: true } };
  };
}

/**
 * Gives back what `orderId` holds; releasing an order that holds nothing changes nothing.
 *
 * @example
 * ```ts
 * import { foldStock, initialStock, release } from "./stock.ts";
 * const s = foldStock(initialStock, [
 *   { type: "Restocked", data: { quantity: 5 } },
 *   { type: "Reserved", data: { orderId: "o1", quantity: 2 } },
 * ]);
 * release("o1")(s); // [{ type: "Released", data: { orderId: "o1", quantity: 2 } }]
 * ```
 */
export function release(orderId: string): (s: Stock) => StockEvent[] {
  return (s) => {
    const quantity = s.held[orderId];
    return quantity === undefined ? [] : [{ type: "Released", data: { orderId, quantity } }];
  };
}

/** Commands and queries on stock. */
export interface StockService {
  /** Adds units of `sku`. */
  restock(sku: string, quantity: number): Promise<void>;
  /** Reserves units of `sku` for an order. */
  reserve(
    sku: string,
    orderId: string,
    quantity: number,
    options?: TransactOptions,
  ): Promise<ReserveResult>;
  /** Releases an order's units of `sku`. */
  release(sku: string, orderId: string, options?: TransactOptions): Promise<void>;
  /** The SKU's state. */
  read(sku: string): Promise<Stock>;
}

/**
 * The Stock service: each command is one decider transaction on the SKU's stream.
 *
 * @example
 * ```ts
 * import { createMemoryStore } from "../../sources/memory.ts";
 * import { stockService } from "./stock.ts";
 * const stock = stockService(createMemoryStore());
 * await stock.restock("tea", 5);
 * await stock.reserve("tea", "o1", 2); // { ok: true }
 * (await stock.read("tea")).available; // 3
 * ```
 */
export function stockService(
  store: EventStore,
  options: { cache?: StateCache } = {},
): StockService {
  const decider = createDecider<StockEvent, Stock>({
    store,
    codec: stockCodec,
    initial: initialStock,
    fold: foldStock,
    cache: options.cache,
    // A SKU is a hot stream: every order of it reserves and may release.
    maxAttempts: 10,
  });
  return {
    restock: (sku, quantity) => decider.transact(stockStream(sku), restock(quantity)),
    reserve: (sku, orderId, quantity, opts) =>
      decider.transact(stockStream(sku), reserve(orderId, quantity), opts),
    release: (sku, orderId, opts) => decider.transact(stockStream(sku), release(orderId), opts),
    read: (sku) => decider.query(stockStream(sku), (s) => s),
  };
}
