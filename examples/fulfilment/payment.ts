/**
 * Payment: one order's payment. The shop requests it; the payment gateway answers later by
 * capturing or declining it (so the shop gives up after a deadline). Cancelling is the
 * compensation: a pending request is cancelled (a late capture is then refused), a captured one
 * refunded, anything else left as it is; it always leaves nothing owed either way. Every
 * decision is idempotent by design.
 *
 * @module
 */
import { createCodec } from "../../core/codec.ts";
import { createDecider, type StateCache, type TransactOptions } from "../../core/decider.ts";
import type { EventStore } from "../../core/store.ts";
import { streamName } from "../../core/streamName.ts";
import { fieldsOf, integer, text } from "../hotel/fields.ts";

/** The category of Payment streams. */
export const PAYMENT = "Payment";

/**
 * The stream of order `orderId`'s payment.
 *
 * @example
 * ```ts
 * import { paymentStream } from "./payment.ts";
 * paymentStream("o1"); // "Payment-o1"
 * ```
 */
export const paymentStream = (orderId: string): string => streamName(PAYMENT, orderId);

/** What happens to a payment. */
export type PaymentEvent =
  | { type: "PaymentRequested"; data: { orderId: string; amount: number } }
  | { type: "PaymentCaptured"; data: { amount: number } }
  | { type: "PaymentDeclined"; data: { reason: string } }
  | { type: "PaymentCancelled"; data: Record<string, never> }
  | { type: "PaymentRefunded"; data: { amount: number } };

/**
 * Stored Payment events ↔ typed ones.
 *
 * @example
 * ```ts
 * import { paymentCodec } from "./payment.ts";
 * paymentCodec.encode({ type: "PaymentCancelled", data: {} }).type; // "PaymentCancelled"
 * ```
 */
export const paymentCodec = createCodec<PaymentEvent>({
  PaymentRequested: {
    parse: (d) => {
      const f = fieldsOf(d);
      return { orderId: text(f, "orderId"), amount: integer(f, "amount") };
    },
  },
  PaymentCaptured: { parse: (d) => ({ amount: integer(fieldsOf(d), "amount") }) },
  PaymentDeclined: { parse: (d) => ({ reason: text(fieldsOf(d), "reason") }) },
  PaymentCancelled: { parse: () => ({}) },
  PaymentRefunded: { parse: (d) => ({ amount: integer(fieldsOf(d), "amount") }) },
});

/** Where a payment is. */
export type PaymentStatus =
  | "none"
  | "requested"
  | "captured"
  | "declined"
  | "cancelled"
  | "refunded";

/** The folded state of a payment. */
export interface Payment {
  /** Where it is. */
  readonly status: PaymentStatus;
  /** The amount requested, in minor units. */
  readonly amount: number;
}

/** A payment with no events. */
export const initialPayment: Payment = { status: "none", amount: 0 };

function evolve(s: Payment, e: PaymentEvent): Payment {
  switch (e.type) {
    case "PaymentRequested":
      return { status: "requested", amount: e.data.amount };
    case "PaymentCaptured":
      return { ...s, status: "captured" };
    case "PaymentDeclined":
      return { ...s, status: "declined" };
    case "PaymentCancelled":
      return { ...s, status: "cancelled" };
    case "PaymentRefunded":
      return { ...s, status: "refunded" };
  }
}

/**
 * Applies events to a payment's state.
 *
 * @example
 * ```ts
 * import { foldPayment, initialPayment } from "./payment.ts";
 * foldPayment(initialPayment, [{ type: "PaymentRequested", data: { orderId: "o1", amount: 5 } }]).status; // "requested"
 * ```
 */
export const foldPayment = (state: Payment, events: readonly PaymentEvent[]): Payment =>
  events.reduce(evolve, state);

/**
 * Requests `amount` for `orderId`, once: a payment that exists already (even cancelled) is left
 * as it is.
 *
 * @example
 * ```ts
 * import { initialPayment, request } from "./payment.ts";
 * request("o1", 450)(initialPayment); // [{ type: "PaymentRequested", data: { orderId: "o1", amount: 450 } }]
 * ```
 */
export function request(orderId: string, amount: number): (s: Payment) => PaymentEvent[] {
  return (s) =>
    s.status === "none" ? [{ type: "PaymentRequested", data: { orderId, amount } }] : [];
}

/**
 * The gateway captured a requested payment (anything else is left as it is).
 *
 * @example
 * ```ts
 * import { capture, initialPayment } from "./payment.ts";
 * capture()({ status: "requested", amount: 450 }); // [{ type: "PaymentCaptured", data: { amount: 450 } }]
 * capture()(initialPayment); // []
 * ```
 */
export function capture(): (s: Payment) => PaymentEvent[] {
  return (s) =>
    s.status === "requested" ? [{ type: "PaymentCaptured", data: { amount: s.amount } }] : [];
}

/**
 * The gateway declined a requested payment.
 *
 * @example
 * ```ts
 * import { decline } from "./payment.ts";
 * decline("card expired")({ status: "requested", amount: 450 }); // [{ type: "PaymentDeclined", data: { reason: "card expired" } }]
 * ```
 */
export function decline(reason: string): (s: Payment) => PaymentEvent[] {
  return (s) => s.status === "requested" ? [{ type: "PaymentDeclined", data: { reason } }] : [];
}

/**
 * The compensation: cancel what is not captured (also a payment never requested, so that a late
 * request is refused), refund what is; a declined, cancelled or refunded payment is left alone.
 *
 * @example
 * ```ts
 * import { cancel } from "./payment.ts";
 * cancel()({ status: "captured", amount: 450 }); // [{ type: "PaymentRefunded", data: { amount: 450 } }]
 * cancel()({ status: "requested", amount: 450 }); // [{ type: "PaymentCancelled", data: {} }]
 * ```
 */
export function cancel(): (s: Payment) => PaymentEvent[] {
  return (s) => {
    switch (s.status) {
      case "none":
      case "requested":
        return [{ type: "PaymentCancelled", data: {} }];
      case "captured":
        return [{ type: "PaymentRefunded", data: { amount: s.amount } }];
      default:
        return [];
    }
  };
}

/** Commands and queries on payments. */
export interface PaymentService {
  /** Requests the payment of an order. */
  request(orderId: string, amount: number, options?: TransactOptions): Promise<void>;
  /** The gateway captured it. */
  capture(orderId: string, options?: TransactOptions): Promise<void>;
  /** The gateway declined it. */
  decline(orderId: string, reason: string, options?: TransactOptions): Promise<void>;
  /** Cancels or refunds it. */
  cancel(orderId: string, options?: TransactOptions): Promise<void>;
  /** The payment's state. */
  read(orderId: string): Promise<Payment>;
}

/**
 * The Payment service: each command is one decider transaction on the order's payment stream.
 *
 * @example
 * ```ts
 * import { createMemoryStore } from "../../sources/memory.ts";
 * import { paymentService } from "./payment.ts";
 * const payments = paymentService(createMemoryStore());
 * await payments.request("o1", 450);
 * await payments.capture("o1");
 * (await payments.read("o1")).status; // "captured"
 * ```
 */
export function paymentService(
  store: EventStore,
  options: { cache?: StateCache } = {},
): PaymentService {
  const decider = createDecider<PaymentEvent, Payment>({
    store,
    codec: paymentCodec,
    initial: initialPayment,
    fold: foldPayment,
    cache: options.cache,
  });
  const on = paymentStream;
  return {
    request: (orderId, amount, opts) =>
      decider.transact(on(orderId), request(orderId, amount), opts),
    capture: (orderId, opts) => decider.transact(on(orderId), capture(), opts),
    decline: (orderId, reason, opts) => decider.transact(on(orderId), decline(reason), opts),
    cancel: (orderId, opts) => decider.transact(on(orderId), cancel(), opts),
    read: (orderId) => decider.query(on(orderId), (s) => s),
  };
}
