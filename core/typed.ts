/**
 * Typed handlers: a sink given a codec hands its handler decoded events, so that
 * `switch (e.type)` narrows `e.data` and nobody casts. An event the codec cannot read fails its
 * stream with {@linkcode EventDecodeError}, under the sink's failure policy (retried, parked or
 * faulting, as a handler error would); one the codec's policy skips is left out of the call.
 *
 * @module
 */
import { type Codec, EventDecodeError, type TypedEvent } from "./codec.ts";
import { InvalidArgumentError } from "./errors.ts";
import { errorText } from "./failure.ts";
import type { StreamEvent } from "./event.ts";
import type { Handler, HandlerContext } from "./scheduler.ts";
import type { StreamName } from "./streamName.ts";

/**
 * A stream event whose `type` and `data` are one of the codec's typed events: the union stays a
 * union, so checking `type` narrows `data`.
 *
 * @example
 * ```ts
 * import type { DecodedEvent } from "@impel/impel";
 * type Event = { type: "Charged"; data: { amount: number } } | { type: "Refunded"; data: {} };
 * const amount = (e: DecodedEvent<Event>) => e.type === "Charged" ? e.data.amount : 0;
 * ```
 *
 * @category Pipeline
 */
export type DecodedEvent<E extends TypedEvent> = E extends TypedEvent
  ? Omit<StreamEvent, "type" | "data"> & E
  : never;

/**
 * A handler of decoded events; what it returns means what a {@linkcode Handler}'s return means
 * (indexes are the stream's, skipped events included).
 *
 * @example
 * ```ts
 * import type { TypedHandler } from "@impel/impel";
 * type Event = { type: "Charged"; data: { amount: number } };
 * const handler: TypedHandler<Event> = (stream, events) => {
 *   for (const e of events) console.log(stream, e.index, e.data.amount);
 * };
 * ```
 *
 * @category Pipeline
 */
export type TypedHandler<E extends TypedEvent> = (
  stream: StreamName,
  events: readonly DecodedEvent<E>[],
  context: HandlerContext,
) => Promise<number | void> | number | void;

/**
 * Wraps a {@linkcode TypedHandler} as a plain {@linkcode Handler} that decodes each span with
 * `codec` first (what `streamsSink({ codec, handler })` does).
 *
 * @example
 * ```ts
 * import { createCodec, decodingHandler, streamsSink } from "@impel/impel";
 * type Event = { type: "Charged"; data: { amount: number } };
 * const codec = createCodec<Event>({ Charged: {} });
 * const handler = decodingHandler(codec, (_stream, events) => {
 *   for (const e of events) console.log(e.data.amount.toFixed(2));
 * });
 * const sink = streamsSink({ handler, statsIntervalMs: 0 });
 * await sink.stop();
 * ```
 *
 * @category Pipeline
 */
export function decodingHandler<E extends TypedEvent>(
  codec: Codec<E>,
  handler: TypedHandler<E>,
): Handler {
  if (codec === null || typeof codec !== "object" || typeof codec.decode !== "function") {
    throw new InvalidArgumentError("codec", "must be a codec (createCodec)");
  }
  if (typeof handler !== "function") {
    throw new InvalidArgumentError("handler", "must be a function");
  }
  return (stream, events, context) => {
    const decoded: DecodedEvent<E>[] = [];
    for (const e of events) {
      let typed: E | undefined;
      try {
        typed = codec.decode(e);
      } catch (error) {
        if (error instanceof EventDecodeError) throw error;
        // A throwing upcaster or parse of the user's own: still this event's decode failure.
        throw new EventDecodeError("MalformedEvent", e, `${errorText(error)} (in ${stream})`, {
          cause: error,
        });
      }
      if (typed !== undefined) {
        decoded.push({ ...e, type: typed.type, data: typed.data } as DecodedEvent<E>);
      }
    }
    // Everything skipped: handled, as far as this consumer is concerned.
    if (decoded.length === 0) return;
    return handler(stream, decoded, context);
  };
}
