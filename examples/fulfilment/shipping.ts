/**
 * Shipping: one order's shipment. Shipping records a tracking id, or a refusal when the order
 * has no address; either outcome is final, and shipping again reports it without writing.
 *
 * @module
 */
import { createCodec } from "../../core/codec.ts";
import { createDecider, type StateCache, type TransactOptions } from "../../core/decider.ts";
import type { EventStore } from "../../core/store.ts";
import { streamName } from "../../core/streamName.ts";
import { fieldsOf, integer, text } from "../hotel/fields.ts";

/** The category of Shipment streams. */
export const SHIPMENT = "Shipment";

/**
 * The stream of order `orderId`'s shipment.
 *
 * @example
 * ```ts
 * import { shipmentStream } from "./shipping.ts";
 * shipmentStream("o1"); // "Shipment-o1"
 * ```
 */
export const shipmentStream = (orderId: string): string => streamName(SHIPMENT, orderId);

/** What happens to a shipment. */
export type ShipmentEvent =
  | {
    type: "Shipped";
    data: { sku: string; quantity: number; address: string; trackingId: string };
  }
  | { type: "ShipmentRefused"; data: { reason: string } };

/**
 * Stored Shipment events ↔ typed ones.
 *
 * @example
 * ```ts
 * import { shipmentCodec } from "./shipping.ts";
 * shipmentCodec.encode({ type: "ShipmentRefused", data: { reason: "no address" } }).type; // "ShipmentRefused"
 * ```
 */
export const shipmentCodec = createCodec<ShipmentEvent>({
  Shipped: {
    parse: (d) => {
      const f = fieldsOf(d);
      return {
        sku: text(f, "sku"),
        quantity: integer(f, "quantity"),
        address: text(f, "address"),
        trackingId: text(f, "trackingId"),
      };
    },
  },
  ShipmentRefused: { parse: (d) => ({ reason: text(fieldsOf(d), "reason") }) },
});

/** The folded state of a shipment: nothing yet, shipped, or refused. */
export type Shipment =
  | { readonly status: "none" }
  | { readonly status: "shipped"; readonly trackingId: string }
  | { readonly status: "refused"; readonly reason: string };

/** A shipment with no events. */
export const initialShipment: Shipment = { status: "none" };

/**
 * Applies events to a shipment's state.
 *
 * @example
 * ```ts
 * import { foldShipment, initialShipment } from "./shipping.ts";
 * foldShipment(initialShipment, [{ type: "ShipmentRefused", data: { reason: "no address" } }]).status; // "refused"
 * ```
 */
export const foldShipment = (state: Shipment, events: readonly ShipmentEvent[]): Shipment =>
  events.reduce<Shipment>(
    (_, e) =>
      e.type === "Shipped"
        ? { status: "shipped", trackingId: e.data.trackingId }
        : { status: "refused", reason: e.data.reason },
    state,
  );

/** The outcome of shipping. */
export type ShipResult =
  | { readonly ok: true; readonly trackingId: string }
  | { readonly ok: false; readonly reason: string };

/**
 * Ships `quantity` of `sku` for `orderId` to `address`, or refuses without an address.
 *
 * @example
 * ```ts
 * import { initialShipment, ship } from "./shipping.ts";
 * ship("o1", "tea", 1, "")(initialShipment).result; // { ok: false, reason: "no address" }
 * ```
 */
export function ship(
  orderId: string,
  sku: string,
  quantity: number,
  address: string,
): (s: Shipment) => { events: ShipmentEvent[]; result: ShipResult } {
  return (s) => {
    if (s.status === "shipped") {
      return { events: [], result: { ok: true, trackingId: s.trackingId } };
    }
    if (s.status === "refused") return { events: [], result: { ok: false, reason: s.reason } };
    if (address.trim().length === 0) {
      return {
        events: [{ type: "ShipmentRefused", data: { reason: "no address" } }],
        result: { ok: false, reason: "no address" },
      };
    }
    const trackingId = `T-${orderId}`;
    return {
      events: [{ type: "Shipped", data: { sku, quantity, address, trackingId } }],
      result: { ok: true, trackingId },
    };
  };
}

/** Commands and queries on shipments. */
export interface ShippingService {
  /** Ships an order. */
  ship(
    orderId: string,
    sku: string,
    quantity: number,
    address: string,
    options?: TransactOptions,
  ): Promise<ShipResult>;
  /** The shipment's state. */
  read(orderId: string): Promise<Shipment>;
}

/**
 * The Shipping service: each command is one decider transaction on the order's shipment stream.
 *
 * @example
 * ```ts
 * import { createMemoryStore } from "../../sources/memory.ts";
 * import { shippingService } from "./shipping.ts";
 * const shipping = shippingService(createMemoryStore());
 * await shipping.ship("o1", "tea", 1, "1 Main St"); // { ok: true, trackingId: "T-o1" }
 * ```
 */
export function shippingService(
  store: EventStore,
  options: { cache?: StateCache } = {},
): ShippingService {
  const decider = createDecider<ShipmentEvent, Shipment>({
    store,
    codec: shipmentCodec,
    initial: initialShipment,
    fold: foldShipment,
    cache: options.cache,
  });
  return {
    ship: (orderId, sku, quantity, address, opts) =>
      decider.transact(shipmentStream(orderId), ship(orderId, sku, quantity, address), opts),
    read: (orderId) => decider.query(shipmentStream(orderId), (s) => s),
  };
}
