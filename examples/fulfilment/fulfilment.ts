/**
 * Order fulfilment as a saga over three services, each a decider over its own category:
 * reserve the stock (Stock), take the payment (Payment), ship (Shipment).
 *
 * - Reserving and shipping answer at once: their send handlers reply with the step's outcome.
 * - The payment is asynchronous: the request is sent, and the gateway later captures or declines
 *   it on the Payment stream, which the saga's route turns into the step's outcome. No answer
 *   within {@linkcode PAYMENT_TIMEOUT_MS} fails the step: the request is cancelled (a late
 *   capture is refunded) and the reservation released.
 * - A declined payment releases the reservation; a refused shipment refunds the payment, then
 *   releases the reservation (reverse order).
 *
 * Every send handler passes the send's id on as the service's idempotency key
 * ({@linkcode deliveryOptions}), and every service decision is idempotent by the order id too.
 *
 * @module
 */
import type { StateCache } from "../../core/decider.ts";
import type { StreamEvent } from "../../core/event.ts";
import type { EventStore } from "../../core/store.ts";
import { idOf, type StreamName } from "../../core/streamName.ts";
import {
  defineSaga,
  deliveryOptions,
  type SagaInput,
  type SendHandlers,
  stepCompensated,
  stepFailed,
  stepSucceeded,
} from "../../core/workflow.ts";
import { fieldsOf, integer, text } from "../hotel/fields.ts";
import {
  PAYMENT,
  type PaymentEvent,
  type PaymentService,
  paymentService,
  paymentStream,
} from "./payment.ts";
import { shipmentStream, type ShippingService, shippingService } from "./shipping.ts";
import { type StockService, stockService, stockStream } from "./stock.ts";

/** The category of fulfilment instances: `Fulfilment-{orderId}`. */
export const FULFILMENT = "Fulfilment";

/** How long the gateway has to capture or decline a payment. */
export const PAYMENT_TIMEOUT_MS = 15 * 60_000;

/** An order to fulfil: the data the saga starts with. */
export interface Order {
  /** The order id, also the instance id. */
  readonly orderId: string;
  /** What is ordered. */
  readonly sku: string;
  /** How many. */
  readonly quantity: number;
  /** The price, in minor units. */
  readonly amount: number;
  /** Where to ship (empty: the shipment is refused). */
  readonly address: string;
}

/** What the saga sends. */
export type FulfilmentMessage =
  | { type: "Reserve"; data: { sku: string; orderId: string; quantity: number } }
  | { type: "Release"; data: { sku: string; orderId: string } }
  | { type: "RequestPayment"; data: { orderId: string; amount: number } }
  | { type: "CancelPayment"; data: { orderId: string } }
  | { type: "Ship"; data: { orderId: string; sku: string; quantity: number; address: string } };

function parseOrder(data: unknown): Order {
  const f = fieldsOf(data);
  const address = f.address;
  if (typeof address !== "string") throw new TypeError("address must be a string");
  return {
    orderId: text(f, "orderId"),
    sku: text(f, "sku"),
    quantity: integer(f, "quantity"),
    amount: integer(f, "amount"),
    address,
  };
}

/**
 * The gateway's answers on a Payment stream, as the pay step's outcome.
 *
 * @example
 * ```ts
 * import { paymentOutcome } from "./fulfilment.ts";
 * const event = { index: 1, type: "PaymentDeclined", data: { reason: "card expired" }, meta: null, id: "e", time: new Date(), size: 0 };
 * paymentOutcome("Payment-o1", event); // { id: "o1", input: { type: "StepFailed", data: { step: "pay", reason: "card expired" } } }
 * ```
 */
export function paymentOutcome(
  stream: StreamName,
  event: StreamEvent,
): { id: string; input: SagaInput<Order> } | undefined {
  const e = event as unknown as PaymentEvent;
  switch (e.type) {
    case "PaymentCaptured":
      return { id: idOf(stream), input: stepSucceeded("pay", { amount: e.data.amount }) };
    case "PaymentDeclined":
      return { id: idOf(stream), input: stepFailed("pay", e.data.reason) };
    default:
      return undefined;
  }
}

/**
 * The fulfilment saga.
 *
 * @example
 * ```ts
 * import { fulfilment } from "./fulfilment.ts";
 * const context = { id: "o1", stream: "Fulfilment-o1", now: 0, inputId: "c1", correlationId: "c1", version: 0, timers: [] };
 * const order = { orderId: "o1", sku: "tea", quantity: 1, amount: 450, address: "1 Main St" };
 * fulfilment.decide(fulfilment.initial, { type: "Start", data: order }, context).sends;
 * // [{ to: "Stock-tea", type: "Reserve", data: { sku: "tea", orderId: "o1", quantity: 1 } }]
 * ```
 */
export const fulfilment = defineSaga<Order, FulfilmentMessage>({
  category: FULFILMENT,
  parse: parseOrder,
  // A runner missing one of these handlers is refused at start, not when an order reaches it.
  sends: ["Reserve", "Release", "RequestPayment", "CancelPayment", "Ship"],
  steps: [
    {
      name: "reserve",
      action: (o) => ({
        to: stockStream(o.sku),
        type: "Reserve",
        data: { sku: o.sku, orderId: o.orderId, quantity: o.quantity },
      }),
      compensation: (o) => ({
        to: stockStream(o.sku),
        type: "Release",
        data: { sku: o.sku, orderId: o.orderId },
      }),
    },
    {
      name: "pay",
      action: (o) => ({
        to: paymentStream(o.orderId),
        type: "RequestPayment",
        data: { orderId: o.orderId, amount: o.amount },
      }),
      compensation: (o) => ({
        to: paymentStream(o.orderId),
        type: "CancelPayment",
        data: { orderId: o.orderId },
      }),
      timeoutMs: PAYMENT_TIMEOUT_MS,
    },
    {
      name: "ship",
      action: (o) => ({
        to: shipmentStream(o.orderId),
        type: "Ship",
        data: { orderId: o.orderId, sku: o.sku, quantity: o.quantity, address: o.address },
      }),
    },
  ],
  routes: [{ category: PAYMENT, route: paymentOutcome }],
});

/** The three services the saga drives. */
export interface FulfilmentServices {
  /** Stock reservations. */
  readonly stock: StockService;
  /** Payments. */
  readonly payment: PaymentService;
  /** Shipments. */
  readonly shipping: ShippingService;
}

/**
 * The three services over one store.
 *
 * @example
 * ```ts
 * import { createMemoryStore } from "../../sources/memory.ts";
 * import { fulfilmentServices } from "./fulfilment.ts";
 * const { stock } = fulfilmentServices(createMemoryStore());
 * await stock.restock("tea", 10);
 * ```
 */
export function fulfilmentServices(
  store: EventStore,
  options: { cache?: StateCache } = {},
): FulfilmentServices {
  return {
    stock: stockService(store, options),
    payment: paymentService(store, options),
    shipping: shippingService(store, options),
  };
}

/**
 * How each message reaches its service. Reserving and shipping reply with the step's outcome;
 * the payment's outcome comes from the gateway through the route, so requesting replies
 * nothing; compensations reply once done.
 *
 * @example
 * ```ts
 * import { createMemoryStore } from "../../sources/memory.ts";
 * import { fulfilmentHandlers, fulfilmentServices } from "./fulfilment.ts";
 * const handlers = fulfilmentHandlers(fulfilmentServices(createMemoryStore()));
 * console.log(Object.keys(handlers)); // ["Reserve", "Release", "RequestPayment", "CancelPayment", "Ship"]
 * ```
 */
export function fulfilmentHandlers(
  services: FulfilmentServices,
): SendHandlers<SagaInput<Order>, FulfilmentMessage> {
  const { stock, payment, shipping } = services;
  return {
    Reserve: async (send) => {
      const { sku, orderId, quantity } = send.data;
      const result = await stock.reserve(sku, orderId, quantity, deliveryOptions(send));
      return result.ok ? stepSucceeded("reserve") : stepFailed("reserve", result.reason);
    },
    Release: async (send) => {
      await stock.release(send.data.sku, send.data.orderId, deliveryOptions(send));
      return stepCompensated("reserve");
    },
    RequestPayment: async (send) => {
      await payment.request(send.data.orderId, send.data.amount, deliveryOptions(send));
    },
    CancelPayment: async (send) => {
      await payment.cancel(send.data.orderId, deliveryOptions(send));
      return stepCompensated("pay");
    },
    Ship: async (send) => {
      const { orderId, sku, quantity, address } = send.data;
      const result = await shipping.ship(orderId, sku, quantity, address, deliveryOptions(send));
      return result.ok
        ? stepSucceeded("ship", { trackingId: result.trackingId })
        : stepFailed("ship", result.reason);
    },
  };
}
