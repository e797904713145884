/**
 * Sends as their handlers receive them, the handlers' types, and the options a handler gives
 * the target's decider so a re-send appends once.
 *
 * @module
 */
import type { TypedEvent } from "../codec.ts";
import type { TransactOptions } from "../decider.ts";
import { describe, InvalidArgumentError } from "../errors.ts";
import type { HandlerContext } from "../scheduler.ts";
import type { StreamName } from "../streamName.ts";
import { checkId, type Outgoing } from "./definition.ts";

/**
 * A send as its handler receives it: the message, plus its id (pass it on as the target's
 * idempotency key), the instance, and the tracing ids.
 *
 * @example
 * ```ts
 * import type { Delivery } from "@impel/impel/workflow";
 * type Reserve = { type: "Reserve"; data: { orderId: string } };
 * const delivery: Delivery<Reserve> = {
 *   id: "Fulfilment-o1#0",
 *   seq: 0,
 *   workflow: "Fulfilment-o1",
 *   to: "Stock-sku1",
 *   type: "Reserve",
 *   data: { orderId: "o1" },
 *   correlationId: "req-17",
 *   causationId: "cmd-1",
 * };
 * ```
 *
 * @category Workflows
 */
export type Delivery<M extends TypedEvent> = Outgoing<M> & {
  /** The send's deterministic id: `{workflow}#{seq}`. */
  readonly id: string;
  /** Its outbox index. */
  readonly seq: number;
  /** The instance stream that sent it. */
  readonly workflow: StreamName;
  /** The correlation id to record on what it causes. */
  readonly correlationId: string;
  /** The id of the input whose decision sent it. */
  readonly causationId: string;
  /**
   * The send may have been delivered before (this runner called a handler for it already, or it
   * was recorded before this runner first read its instance, so a runner before it may have):
   * {@linkcode deliveryOptions} then has the target's decider search its whole stream for the
   * key when its recent keys are full (`mayRepeat`), so the re-send appends once however many
   * other senders appended in between. `false` for a first delivery. A runner reading a leased
   * consumer group's share marks every send (an instance can move to another member and back).
   */
  readonly redelivery?: boolean;
};

/**
 * Delivers sends of type `K`; may return an input for the sending instance (a reply), which is
 * decided in the same append that records the send delivered. Called at least once per send:
 * make its effect idempotent by `send.id` (see {@linkcode deliveryOptions}). A handler that
 * throws is retried by the sink's failure policy; report a permanent failure as a reply.
 *
 * @example
 * ```ts
 * import type { SendHandler } from "@impel/impel/workflow";
 * type Ship = { type: "Ship"; data: { orderId: string } };
 * type Input = { type: "Shipped"; data: { trackingId: string } };
 * const ship: SendHandler<Input, Ship> = async (send) => {
 *   // ... call the shipping service with send.id as its idempotency key
 *   return { type: "Shipped", data: { trackingId: `T-${send.data.orderId}` } };
 * };
 * ```
 *
 * @category Workflows
 */
export type SendHandler<I extends TypedEvent, M extends TypedEvent> = (
  send: Delivery<M>,
  context: HandlerContext,
) => Promise<I | void> | I | void;

/**
 * One handler per message type of the union `M`.
 *
 * @example
 * ```ts
 * import type { SendHandlers } from "@impel/impel/workflow";
 * type Message = { type: "Email"; data: { to: string } } | { type: "Sms"; data: { to: string } };
 * const handlers: SendHandlers<never, Message> = {
 *   Email: (send) => console.log("email", send.data.to),
 *   Sms: (send) => console.log("sms", send.data.to),
 * };
 * ```
 *
 * @category Workflows
 */
export type SendHandlers<I extends TypedEvent, M extends TypedEvent> = {
  readonly [K in M["type"]]: SendHandler<I, Extract<M, { type: K }>>;
};

/** How many keys each delivery has handed out: the n-th append of a delivery gets key n. */
const keysGiven = new WeakMap<object, number>();

/**
 * The transact options a send handler gives the target's decider: an idempotency key made from
 * the send's id, so a re-send after a crash appends nothing (for a possible re-send,
 * {@linkcode Delivery.redelivery}, also when the key has left the target's recent keys:
 * `mayRepeat`), and the send's correlation id with the send's id as causation id on what the
 * target records.
 *
 * Each call for one delivery gives the next key (the send's id, then `{id}/2`, `{id}/3`...), so
 * a handler that appends twice calls it once per append, in the same order on every delivery;
 * reusing one options object for two appends would drop the second as a duplicate. `part` names
 * the key instead (`{id}/{part}`), for appends whose order or number varies between deliveries.
 *
 * @example
 * ```ts
 * import { createCodec, createDecider } from "@impel/impel";
 * import { deliveryOptions, type SendHandler } from "@impel/impel/workflow";
 * import { createMemoryStore } from "@impel/impel/sources/memory";
 *
 * type Event = { type: "Reserved"; data: { orderId: string } };
 * type Reserve = { type: "Reserve"; data: { orderId: string } };
 * const stock = createDecider<Event, number>({
 *   store: createMemoryStore(),
 *   codec: createCodec<Event>({ Reserved: {} }),
 *   initial: 0,
 *   fold: (n, events) => n + events.length,
 * });
 * const reserve: SendHandler<never, Reserve> = async (send) => {
 *   await stock.transact(send.to, () => [{ type: "Reserved", data: send.data }], deliveryOptions(send));
 * };
 * ```
 *
 * @category Workflows
 */
export function deliveryOptions(send: Delivery<TypedEvent>, part?: string): TransactOptions {
  if (send === null || typeof send !== "object") {
    throw new InvalidArgumentError("send", `must be a Delivery, got ${describe(send)}`);
  }
  checkId(send.id, "send.id");
  let key: string;
  if (part !== undefined) {
    key = `${send.id}/${checkId(part, "part")}`;
  } else {
    const n = (keysGiven.get(send) ?? 0) + 1;
    keysGiven.set(send, n);
    // The first key is the send's id as it is: keys recorded before there were several match.
    key = n === 1 ? send.id : `${send.id}/${n}`;
  }
  return {
    idempotencyKey: key,
    // A possible re-send is searched for beyond the target's recent keys (other senders'
    // appends may have pushed it out of them); a first delivery cannot have been applied.
    ...(send.redelivery === false ? {} : { mayRepeat: true }),
    context: { correlationId: send.correlationId, causationId: send.id },
  };
}
