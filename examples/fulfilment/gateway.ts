/**
 * A simulated payment gateway: a reactor over the Payment category that answers each payment
 * request by capturing it, declining it, or never answering (so the fulfilment saga's deadline
 * fires), as `answer` says. The answers are decisions on the payment's state, so a redelivered
 * request is answered once; they carry the request's correlation id, and its id as causation.
 *
 * @module
 */
import type { Handler } from "../../core/scheduler.ts";
import { idOf } from "../../core/streamName.ts";
import type { PaymentService } from "./payment.ts";

/** What the gateway does with a payment request. */
export type GatewayAnswer = "capture" | "decline" | "ignore";

/**
 * The gateway's handler for Payment streams.
 *
 * @example
 * ```ts
 * import { run, streamsSink } from "../../core/sink.ts";
 * import { createMemoryStore, memorySource } from "../../sources/memory.ts";
 * import { gatewayHandler } from "./gateway.ts";
 * import { paymentService } from "./payment.ts";
 * const store = createMemoryStore();
 * const payment = paymentService(store);
 * const sink = streamsSink({ handler: gatewayHandler(payment, () => "capture"), statsIntervalMs: 0 });
 * const stop = new AbortController();
 * const running = run(memorySource({ store, categories: ["Payment"] }), sink, { signal: stop.signal });
 * await payment.request("o1", 450);
 * await sink.monitor.awaitCompletion({ tail: true });
 * console.log((await payment.read("o1")).status); // "captured"
 * stop.abort();
 * await running;
 * ```
 */
export function gatewayHandler(
  payment: PaymentService,
  answer: (orderId: string, amount: number) => GatewayAnswer,
): Handler {
  return async (stream, events) => {
    const requested = events.find((e) => e.type === "PaymentRequested");
    if (requested === undefined) return;
    const orderId = idOf(stream);
    const { status, amount } = await payment.read(orderId);
    if (status !== "requested") return;
    const options = {
      context: { correlationId: requested.correlationId, causationId: requested.id },
    };
    switch (answer(orderId, amount)) {
      case "capture":
        return await payment.capture(orderId, options);
      case "decline":
        return await payment.decline(orderId, "card declined", options);
    }
  };
}
