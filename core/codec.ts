/**
 * Codecs: typed events ↔ stored events (type, data, meta), with versioned upcasting of old
 * shapes and a policy for events the codec cannot read.
 *
 * A typed event is a plain `{ type, data }` object and an aggregate's events are a union of
 * them, so that `switch (event.type)` narrows `data`. The stored form uses the same type names.
 *
 * Schema versions: each event type has a current version (default 1). The encoder records it in
 * the metadata under {@linkcode SCHEMA_VERSION_KEY} when it is above 1; an event without the
 * marker is version 1, so events written before a type was ever versioned need no migration.
 * Decoding runs the type's upcasters from the stored version up to the current one, then its
 * `parse` (if any) to check the shape.
 *
 * Events of a type the codec does not know, and events whose data fails to upcast or parse, are
 * rejected with {@linkcode EventDecodeError} by default; the `onUnknown` / `onMalformed` options
 * can skip them instead, and the codec counts what it skipped.
 *
 * Encoding checks what decoding will check: the stored form is JSON, so `encode` takes the data
 * through JSON (as every store does) and runs the type's `parse` on the result, rejecting with
 * {@linkcode EventEncodeError} an event that no reader could decode — whatever the decode
 * policies, since a skipping reader would silently drop it. {@linkcode Codec.roundTrip} also
 * returns the typed event as readers will see it (NaN as null, a Date as its ISO string, an
 * `undefined` field gone), which is what a decider folds into the state it caches: the same
 * values every store returns, though object key order may differ (MessageDB keeps jsonb, which
 * orders keys by length, then bytewise). What some store could not keep is refused too: a byte
 * array (JSON would make it an index-keyed object, DynamoDB binary), and a string holding a NUL
 * or a lone surrogate (which jsonb rejects). The metadata keys in {@linkcode RESERVED_META_KEYS}
 * belong to the codec and the stores: caller metadata naming one, as its JSON would store it
 * (after any `toJSON`), is refused, and what is stored is that JSON.
 *
 * @module
 */
import { describe, ImpelError, InvalidArgumentError } from "./errors.ts";
import type { StreamEvent } from "./event.ts";
import type { EventData } from "./store.ts";

/**
 * The metadata key under which the encoder records an event's schema version (when above 1).
 *
 * @example
 * ```ts
 * import { SCHEMA_VERSION_KEY } from "@impel/impel";
 * const meta = { [SCHEMA_VERSION_KEY]: 2 }; // how a version-2 event's metadata looks
 * ```
 *
 * @category Write side
 */
export const SCHEMA_VERSION_KEY = "schemaVersion";

/**
 * Metadata keys that callers may not set in {@linkcode EncodeContext.meta}: the codec's schema
 * version, the tracing ids that stores keep in the metadata (pass them as `correlationId` /
 * `causationId` instead), and the decider's idempotency keys and window.
 *
 * @example
 * ```ts
 * import { RESERVED_META_KEYS } from "@impel/impel";
 * console.log(RESERVED_META_KEYS.includes("schemaVersion")); // true
 * ```
 *
 * @category Write side
 */
export const RESERVED_META_KEYS: readonly string[] = Object.freeze([
  SCHEMA_VERSION_KEY,
  "correlationId",
  "causationId",
  "idempotencyKey",
  "idempotencyKeys",
  "idempotencyWindow",
]);

/**
 * The shape of a typed event: a type name and its data.
 *
 * @example
 * ```ts
 * import { type Codec, createCodec, type EventData, type TypedEvent } from "@impel/impel";
 *
 * type Event =
 *   | { type: "Charged"; data: { amount: number } }
 *   | { type: "Refunded"; data: { amount: number; reason: string } };
 *
 * // Code that serves every aggregate takes its event union as `E extends TypedEvent`.
 * function encodeAll<E extends TypedEvent>(codec: Codec<E>, events: readonly E[]): EventData[] {
 *   return events.map((e) => codec.encode(e));
 * }
 * const codec = createCodec<Event>({ Charged: {}, Refunded: {} });
 * encodeAll(codec, [{ type: "Refunded", data: { amount: 5, reason: "late" } }]);
 * ```
 *
 * @category Write side
 */
export interface TypedEvent {
  /** The event type, also its stored type name. */
  readonly type: string;
  /** The event body. */
  readonly data: unknown;
}

/**
 * The data of the member of the union `E` whose type is `K`.
 *
 * @example
 * ```ts
 * import { createCodec, type DataOf } from "@impel/impel";
 *
 * type Event =
 *   | { type: "Charged"; data: { amount: number } }
 *   | { type: "CheckedOut"; data: { at: string } };
 *
 * function parseCharged(data: unknown): DataOf<Event, "Charged"> {
 *   const amount = (data as { amount?: unknown }).amount;
 *   if (typeof amount !== "number") throw new Error("amount must be a number");
 *   return { amount };
 * }
 * const codec = createCodec<Event>({ Charged: { parse: parseCharged }, CheckedOut: {} });
 * ```
 *
 * @category Write side
 */
export type DataOf<E extends TypedEvent, K extends E["type"]> = Extract<E, { type: K }>["data"];

/**
 * Converts data of one schema version into the next: the function registered under version `n`
 * receives version-`n` data and returns version-`n + 1` data. Throwing marks the event malformed.
 *
 * @example
 * ```ts
 * import { createCodec, type Upcaster } from "@impel/impel";
 * import { createMemoryStore } from "@impel/impel/sources/memory";
 *
 * type Event = { type: "Charged"; data: { amount: number; currency: string } };
 * // Version 1 had no currency: every charge was in euros.
 * const addCurrency: Upcaster = (data) => ({ ...(data as { amount: number }), currency: "EUR" });
 * const codec = createCodec<Event>({ Charged: { version: 2, upcast: { 1: addCurrency } } });
 *
 * const store = createMemoryStore();
 * await store.append("Account-1", [{ type: "Charged", data: { amount: 5 } }], 0); // version 1
 * const [stored] = await store.readStream("Account-1");
 * console.log(codec.decode(stored)); // { type: "Charged", data: { amount: 5, currency: "EUR" } }
 * ```
 *
 * @category Write side
 */
export type Upcaster = (data: unknown, meta: unknown) => unknown;

/**
 * How the codec treats one event type.
 *
 * @example
 * ```ts
 * import { createCodec, type EventSpec } from "@impel/impel";
 * import { createMemoryStore } from "@impel/impel/sources/memory";
 *
 * type CheckedOut = { at: string };
 * const checkedOut: EventSpec<CheckedOut> = {
 *   aliases: ["CheckOutCompleted"], // its name before a rename
 *   parse: (data) => {
 *     if (typeof (data as Partial<CheckedOut>).at !== "string") throw new Error("no `at`");
 *     return data as CheckedOut;
 *   },
 * };
 * const codec = createCodec<{ type: "CheckedOut"; data: CheckedOut }>({ CheckedOut: checkedOut });
 *
 * const store = createMemoryStore();
 * await store.append("Stay-1", [{ type: "CheckOutCompleted", data: { at: "2024-05-01" } }], 0);
 * const [stored] = await store.readStream("Stay-1");
 * console.log(codec.decode(stored)?.type); // "CheckedOut"
 * ```
 *
 * @category Write side
 */
export interface EventSpec<Data> {
  /** The current schema version of this type's data (default 1). */
  readonly version?: number;
  /**
   * Upcasters by the version they convert from: `{ 1: v1ToV2, 2: v2ToV3 }`. Every version from 1
   * to `version - 1` needs one.
   */
  readonly upcast?: Readonly<Record<number, Upcaster>>;
  /**
   * Checks (and may normalise) current-version data; throw to mark the event malformed. Without
   * it, data is trusted as stored.
   */
  readonly parse?: (data: unknown) => Data;
  /** Older stored names of this type, decoded as this type (for renamed events). */
  readonly aliases?: readonly string[];
}

/**
 * One {@linkcode EventSpec} per member of the event union `E`.
 *
 * @example
 * ```ts
 * import { type CodecSpec, createCodec } from "@impel/impel";
 *
 * type Event =
 *   | { type: "Charged"; data: { amount: number } }
 *   | { type: "CheckedOut"; data: { at: string } };
 *
 * // Leaving out a member of the union, or naming one that is not in it, fails to compile.
 * const spec: CodecSpec<Event> = { Charged: {}, CheckedOut: { aliases: ["Departed"] } };
 * const codec = createCodec<Event>(spec);
 * ```
 *
 * @category Write side
 */
export type CodecSpec<E extends TypedEvent> = {
  readonly [K in E["type"]]: EventSpec<DataOf<E, K>>;
};

/**
 * What to do with an event the codec cannot decode: throw, or skip it and count it.
 *
 * @example
 * ```ts
 * import { createCodec, type DecodeFailurePolicy } from "@impel/impel";
 * import { createMemoryStore } from "@impel/impel/sources/memory";
 *
 * // This reader folds charges only: other event types in the stream are not its concern.
 * const onUnknown: DecodeFailurePolicy = "skip";
 * const codec = createCodec<{ type: "Charged"; data: { amount: number } }>({ Charged: {} }, {
 *   onUnknown,
 * });
 *
 * const store = createMemoryStore();
 * await store.append("Account-1", [{ type: "Audited", data: {} }], 0);
 * const [stored] = await store.readStream("Account-1");
 * console.log(codec.decode(stored), codec.skipped.unknown); // undefined 1
 * ```
 *
 * @category Write side
 */
export type DecodeFailurePolicy = "fail" | "skip";

/**
 * Options of {@linkcode createCodec}.
 *
 * @example
 * ```ts
 * import { type CodecOptions, createCodec } from "@impel/impel";
 *
 * type Event = { type: "Charged"; data: { amount: number } };
 * const options: CodecOptions = {
 *   onUnknown: "skip",
 *   onMalformed: "fail",
 *   onSkip: (error) => console.warn(`skipped: ${error.message}`),
 * };
 * const codec = createCodec<Event>({ Charged: {} }, options);
 * ```
 *
 * @category Write side
 */
export interface CodecOptions {
  /** Events of a type not in the spec (default `"fail"`). */
  readonly onUnknown?: DecodeFailurePolicy;
  /** Events whose upcasting or parsing throws, or whose schema version is invalid (default `"fail"`). */
  readonly onMalformed?: DecodeFailurePolicy;
  /** Called for every skipped event, e.g. to log it. */
  readonly onSkip?: (error: EventDecodeError) => void;
}

/**
 * Metadata and tracing ids to attach to encoded events.
 *
 * @example
 * ```ts
 * import { createCodec, type EncodeContext } from "@impel/impel";
 *
 * type Event = { type: "Charged"; data: { amount: number } };
 * const codec = createCodec<Event>({ Charged: {} });
 * const context: EncodeContext = {
 *   meta: { user: "ann" },
 *   correlationId: "req-17",
 *   causationId: "cmd-3",
 * };
 * const stored = codec.encode({ type: "Charged", data: { amount: 5 } }, context);
 * console.log(stored.meta, stored.correlationId); // { user: "ann" } "req-17"
 * ```
 *
 * @category Write side
 */
export interface EncodeContext {
  /**
   * Metadata to store with every event (an object: the schema version is added to it); it must
   * not use a key of {@linkcode RESERVED_META_KEYS}.
   */
  readonly meta?: Readonly<Record<string, unknown>>;
  /** Correlation id to record. */
  readonly correlationId?: string;
  /** Causation id to record. */
  readonly causationId?: string;
}

/**
 * Counts of events a codec skipped under its `"skip"` policies.
 *
 * @example
 * ```ts
 * import { type CodecCounters, createCodec } from "@impel/impel";
 * import { createMemoryStore } from "@impel/impel/sources/memory";
 *
 * type Event = { type: "Charged"; data: { amount: number } };
 * const codec = createCodec<Event>({
 *   Charged: {
 *     parse: (d) => {
 *       if (typeof (d as { amount?: unknown }).amount !== "number") throw new Error("no amount");
 *       return d as { amount: number };
 *     },
 *   },
 * }, { onUnknown: "skip", onMalformed: "skip" });
 *
 * const store = createMemoryStore();
 * const written = [{ type: "Charged", data: {} }, { type: "Audited", data: {} }];
 * await store.append("Account-1", written, 0);
 * for (const event of await store.readStream("Account-1")) codec.decode(event);
 * const { unknown, malformed }: Readonly<CodecCounters> = codec.skipped;
 * console.log(unknown, malformed); // 1 1
 * ```
 *
 * @category Write side
 */
export interface CodecCounters {
  /** Events of unknown types skipped. */
  unknown: number;
  /** Malformed events skipped. */
  malformed: number;
}

/**
 * Converts typed events of the union `E` to and from the store's form.
 *
 * @example
 * ```ts
 * import { createCodec } from "@impel/impel";
 * type Event = { type: "Charged"; data: { amount: number } };
 * const codec = createCodec<Event>({ Charged: {} });
 * const stored = codec.encode({ type: "Charged", data: { amount: 5 } });
 * console.log(stored.type); // "Charged"
 * ```
 *
 * @category Write side
 */
export interface Codec<E extends TypedEvent> {
  /**
   * The stored form of `event`; throws {@linkcode EventEncodeError} when a reader could not
   * decode it (its data does not survive JSON or fails the type's `parse`).
   */
  encode(event: E, context?: EncodeContext): EventData;
  /**
   * The stored form of `event` together with the typed event a reader will decode from it
   * (after the store's JSON trip and the type's `parse`); throws as `encode` does.
   */
  roundTrip(event: E, context?: EncodeContext): RoundTrip<E>;
  /**
   * The typed form of a stored event, or `undefined` when the event is skipped under the
   * codec's policies; throws {@linkcode EventDecodeError} under `"fail"`.
   */
  decode(event: StreamEvent): E | undefined;
  /** Events skipped so far, by reason. */
  readonly skipped: Readonly<CodecCounters>;
}

/**
 * What {@linkcode Codec.roundTrip} returns: what to append, and what readers will decode.
 *
 * @example
 * ```ts
 * import { createCodec, type RoundTrip } from "@impel/impel";
 * type Event = { type: "Measured"; data: { value: number | null } };
 * const codec = createCodec<Event>({ Measured: {} });
 * const trip: RoundTrip<Event> = codec.roundTrip({ type: "Measured", data: { value: NaN } });
 * console.log(trip.decoded.data.value); // null: what JSON, and so every reader, makes of NaN
 * ```
 *
 * @category Write side
 */
export interface RoundTrip<E> {
  /** The stored form, to append. */
  readonly stored: EventData;
  /** The typed event as a reader decodes it from the stored form. */
  readonly decoded: E;
}

/**
 * An event cannot be encoded because no reader could decode it: its type is not the codec's,
 * its data does not survive JSON (a BigInt, a cycle, nothing at all), holds what some store
 * cannot keep (a byte array, a string with a NUL or a lone surrogate) or fails the type's
 * `parse`, or its metadata uses a reserved key. `code` is `"UnencodableEvent"`.
 *
 * @example
 * ```ts
 * import { createCodec, EventEncodeError } from "@impel/impel";
 * const codec = createCodec<{ type: "Charged"; data: { amount: number } }>({
 *   Charged: {
 *     parse: (d) => {
 *       if (!Number.isInteger((d as { amount?: unknown }).amount)) throw new Error("not cents");
 *       return d as { amount: number };
 *     },
 *   },
 * });
 * try {
 *   codec.encode({ type: "Charged", data: { amount: 12.5 } });
 * } catch (e) {
 *   if (e instanceof EventEncodeError) console.log(e.type, e.message); // "Charged" ... not cents
 * }
 * ```
 *
 * @category Write side
 */
export class EventEncodeError extends ImpelError {
  /** The type of the refused event. */
  readonly type: string;
  /** Creates the error; `problem` says what was wrong. */
  constructor(type: string, problem: string, options?: ErrorOptions) {
    super("UnencodableEvent", `cannot encode event ${type}: ${problem}`, options);
    this.type = type;
  }
}

/**
 * A stored event could not be decoded: its type is unknown (`code` `"UnknownEventType"`) or its
 * data or schema version is not acceptable (`code` `"MalformedEvent"`).
 *
 * @example
 * ```ts
 * import { createCodec, EventDecodeError } from "@impel/impel";
 * const codec = createCodec<{ type: "A"; data: null }>({ A: {} });
 * try {
 *   codec.decode({ index: 4, type: "B", data: null, meta: null, id: "x", time: new Date(), size: 0 });
 * } catch (e) {
 *   if (e instanceof EventDecodeError) console.log(e.code, e.index); // "UnknownEventType" 4
 * }
 * ```
 *
 * @category Write side
 */
export class EventDecodeError extends ImpelError {
  /** The stored type of the event. */
  readonly type: string;
  /** The event's index in its stream. */
  readonly index: number;
  /** The event's id. */
  readonly eventId: string;
  /** Creates the error; `problem` says what was wrong. */
  constructor(
    code: "UnknownEventType" | "MalformedEvent",
    event: Pick<StreamEvent, "type" | "index" | "id">,
    problem: string,
    options?: ErrorOptions,
  ) {
    super(
      code,
      `cannot decode event ${event.index} (${event.type}, id ${event.id}): ${problem}`,
      options,
    );
    this.type = event.type;
    this.index = event.index;
    this.eventId = event.id;
  }
}

interface Entry {
  readonly type: string;
  readonly version: number;
  readonly upcast: Readonly<Record<number, Upcaster>>;
  readonly parse: ((data: unknown) => unknown) | undefined;
}

function checkPolicy(field: string, value: unknown): DecodeFailurePolicy {
  if (value !== "fail" && value !== "skip") {
    throw new InvalidArgumentError(field, `must be "fail" or "skip", got ${describe(value)}`);
  }
  return value;
}

function storedVersion(meta: unknown): unknown {
  if (meta === null || typeof meta !== "object" || Array.isArray(meta)) return 1;
  return (meta as Record<string, unknown>)[SCHEMA_VERSION_KEY] ?? 1;
}

// A NUL, or half of a surrogate pair: valid in JS strings and JSON text, refused by PostgreSQL's
// jsonb (MessageDB), so no store-independent codec may let them through.
// deno-lint-ignore no-control-regex
const UNSTORABLE_TEXT = new RegExp(
  "\\u0000|[\\ud800-\\udbff](?![\\udc00-\\udfff])|(?<![\\ud800-\\udbff])[\\udc00-\\udfff]",
);

function unstorableText(text: string): string | undefined {
  const found = UNSTORABLE_TEXT.exec(text);
  if (found === null) return undefined;
  return found[0] === "\u0000"
    ? "a NUL character (\\u0000)"
    : `a lone surrogate (\\u${found[0].charCodeAt(0).toString(16)})`;
}

function isBytes(value: unknown): boolean {
  return ArrayBuffer.isView(value) || value instanceof ArrayBuffer;
}

/**
 * The JSON text of `value`, or an {@linkcode EventEncodeError} saying why there is none, or why
 * a store could not keep it: byte arrays (which JSON turns into index-keyed objects while
 * DynamoDB would keep them as binary) and strings no jsonb column accepts (NUL, lone surrogates).
 */
function jsonText(type: string, what: string, value: unknown): string {
  if (isBytes(value)) {
    throw new EventEncodeError(
      type,
      `its ${what} is a byte array, not JSON (stores would disagree on it: encode it, e.g. as base64)`,
    );
  }
  let text: string | undefined;
  let problem: string | undefined;
  try {
    text = JSON.stringify(value, function (key, v) {
      if (problem === undefined) {
        const inKey = unstorableText(key);
        if (inKey !== undefined) problem = `a key holds ${inKey}`;
        else if (typeof v === "string") {
          const inValue = unstorableText(v);
          if (inValue !== undefined) problem = `a string holds ${inValue}`;
        } else if (isBytes(v)) {
          problem = "it holds a byte array, not JSON (encode it, e.g. as base64)";
        }
        if (problem !== undefined && key !== "") problem += ` (at ${JSON.stringify(key)})`;
      }
      return v;
    });
  } catch (error) {
    throw new EventEncodeError(type, `its ${what} is not JSON: ${errorText(error)}`, {
      cause: error,
    });
  }
  if (text === undefined) {
    throw new EventEncodeError(type, `its ${what} is not JSON (got ${describe(value)})`);
  }
  if (problem !== undefined) {
    throw new EventEncodeError(type, `its ${what} cannot be stored: ${problem}`);
  }
  return text;
}

/**
 * The metadata to store: the caller's as JSON will keep it (so a `toJSON` cannot smuggle a
 * reserved key in), checked for reserved keys, plus the schema version.
 */
function encodeMeta(
  entry: Entry,
  callerMeta: Readonly<Record<string, unknown>> | undefined,
): Record<string, unknown> | undefined {
  let meta: Record<string, unknown> | undefined;
  if (callerMeta !== undefined && callerMeta !== null) {
    if (typeof callerMeta !== "object" || Array.isArray(callerMeta)) {
      throw new EventEncodeError(
        entry.type,
        `context.meta must be an object, got ${describe(callerMeta)}`,
      );
    }
    const parsed: unknown = JSON.parse(jsonText(entry.type, "metadata", callerMeta));
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
      throw new EventEncodeError(
        entry.type,
        `context.meta must be stored as a JSON object, its JSON is ${describe(parsed)}`,
      );
    }
    meta = parsed as Record<string, unknown>;
    for (const key of RESERVED_META_KEYS) {
      if (Object.hasOwn(meta, key)) {
        throw new EventEncodeError(
          entry.type,
          `context.meta.${key} is reserved (schema versions belong to the codec; pass tracing ids ` +
            `as context.correlationId / causationId and idempotency keys as a transact option)`,
        );
      }
    }
  }
  if (entry.version > 1) meta = { ...meta, [SCHEMA_VERSION_KEY]: entry.version };
  return meta;
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * Creates a {@linkcode Codec} for the event union `E` from one {@linkcode EventSpec} per type.
 * The spec is checked up front: every upcaster a version needs must be present and no two
 * types may share a name or alias.
 *
 * @example
 * ```ts
 * import { createCodec } from "@impel/impel";
 *
 * // Version 2 of Charged renamed `cents` to `amount`.
 * type Event =
 *   | { type: "Charged"; data: { amount: number } }
 *   | { type: "CheckedOut"; data: { at: string } };
 *
 * const codec = createCodec<Event>({
 *   Charged: {
 *     version: 2,
 *     upcast: { 1: (d) => ({ amount: (d as { cents: number }).cents }) },
 *     parse: (d) => {
 *       const amount = (d as { amount?: unknown }).amount;
 *       if (typeof amount !== "number") throw new Error("amount must be a number");
 *       return { amount };
 *     },
 *   },
 *   CheckedOut: {},
 * }, { onUnknown: "skip" });
 *
 * const old = { index: 0, type: "Charged", data: { cents: 250 }, meta: null, id: "e1", time: new Date(), size: 0 };
 * codec.decode(old); // { type: "Charged", data: { amount: 250 } }
 * codec.encode({ type: "Charged", data: { amount: 3 } }).meta; // { schemaVersion: 2 }
 * ```
 *
 * @category Write side
 */
export function createCodec<E extends TypedEvent>(
  spec: CodecSpec<E>,
  options: CodecOptions = {},
): Codec<E> {
  if (spec === null || typeof spec !== "object") {
    throw new InvalidArgumentError(
      "spec",
      `must be an object of event specs, got ${describe(spec)}`,
    );
  }
  const onUnknown = checkPolicy("onUnknown", options.onUnknown ?? "fail");
  const onMalformed = checkPolicy("onMalformed", options.onMalformed ?? "fail");
  const onSkip = options.onSkip;
  const byType = new Map<string, Entry>();
  const byStoredName = new Map<string, Entry>();

  for (const [type, raw] of Object.entries(spec) as [string, EventSpec<unknown>][]) {
    if (type.length === 0) throw new InvalidArgumentError("spec", "has an empty event type");
    if (raw === null || typeof raw !== "object") {
      throw new InvalidArgumentError(`spec.${type}`, `must be an object, got ${describe(raw)}`);
    }
    const version = raw.version ?? 1;
    if (!Number.isInteger(version) || version < 1) {
      throw new InvalidArgumentError(
        `spec.${type}.version`,
        `must be an integer >= 1, got ${describe(version)}`,
      );
    }
    const upcast = raw.upcast ?? {};
    for (let v = 1; v < version; v++) {
      if (typeof upcast[v] !== "function") {
        throw new InvalidArgumentError(
          `spec.${type}.upcast`,
          `needs an upcaster from version ${v} to ${v + 1}`,
        );
      }
    }
    if (raw.parse !== undefined && typeof raw.parse !== "function") {
      throw new InvalidArgumentError(
        `spec.${type}.parse`,
        `must be a function, got ${describe(raw.parse)}`,
      );
    }
    const entry: Entry = { type, version, upcast, parse: raw.parse };
    byType.set(type, entry);
    for (const name of [type, ...(raw.aliases ?? [])]) {
      if (typeof name !== "string" || name.length === 0) {
        throw new InvalidArgumentError(
          `spec.${type}.aliases`,
          `must hold non-empty strings, got ${describe(name)}`,
        );
      }
      if (byStoredName.has(name)) {
        throw new InvalidArgumentError(
          `spec.${type}`,
          `stored name ${JSON.stringify(name)} is used twice`,
        );
      }
      byStoredName.set(name, entry);
    }
  }

  const skipped: CodecCounters = { unknown: 0, malformed: 0 };

  function reject(error: EventDecodeError, policy: DecodeFailurePolicy): undefined {
    if (policy === "fail") throw error;
    if (error.code === "UnknownEventType") skipped.unknown++;
    else skipped.malformed++;
    onSkip?.(error);
    return undefined;
  }

  function roundTrip(event: E, context: EncodeContext = {}): RoundTrip<E> {
    const entry = byType.get(event?.type);
    if (entry === undefined) {
      throw new EventEncodeError(
        String(event?.type),
        `is not a type of this codec (got ${describe(event?.type)})`,
      );
    }
    const meta = encodeMeta(entry, context.meta);
    for (const field of ["correlationId", "causationId"] as const) {
      const id = context[field];
      if (id === undefined) continue;
      const problem = typeof id === "string" ? unstorableText(id) : `is ${describe(id)}`;
      if (problem !== undefined) {
        throw new EventEncodeError(entry.type, `context.${field} cannot be stored: ${problem}`);
      }
    }
    // The data as any store keeps it (JSON), then as a reader's decode checks it: a decision
    // that cannot be read back is refused here, before it is appended.
    const text = jsonText(entry.type, "data", event.data);
    let data: unknown = JSON.parse(text);
    try {
      if (entry.parse) data = entry.parse(data);
    } catch (error) {
      throw new EventEncodeError(
        entry.type,
        `its data would be rejected by readers: ${errorText(error)}`,
        { cause: error },
      );
    }
    const stored: EventData = {
      type: entry.type,
      data: event.data,
      ...(meta === undefined ? {} : { meta }),
      ...(context.correlationId === undefined ? {} : { correlationId: context.correlationId }),
      ...(context.causationId === undefined ? {} : { causationId: context.causationId }),
    };
    return { stored, decoded: { type: entry.type, data } as E };
  }

  return {
    skipped,
    encode(event: E, context: EncodeContext = {}): EventData {
      return roundTrip(event, context).stored;
    },
    roundTrip,
    decode(event: StreamEvent): E | undefined {
      const entry = byStoredName.get(event.type);
      if (entry === undefined) {
        return reject(
          new EventDecodeError("UnknownEventType", event, "unknown event type"),
          onUnknown,
        );
      }
      const version = storedVersion(event.meta);
      if (
        typeof version !== "number" || !Number.isInteger(version) || version < 1 ||
        version > entry.version
      ) {
        const problem = `schema version ${describe(version)} is not in [1, ${entry.version}]`;
        return reject(new EventDecodeError("MalformedEvent", event, problem), onMalformed);
      }
      let data = event.data;
      try {
        for (let v = version; v < entry.version; v++) data = entry.upcast[v](data, event.meta);
        if (entry.parse) data = entry.parse(data);
      } catch (error) {
        const problem = `data of schema version ${version} rejected: ${errorText(error)}`;
        return reject(
          new EventDecodeError("MalformedEvent", event, problem, { cause: error }),
          onMalformed,
        );
      }
      return { type: entry.type, data } as E;
    },
  };
}
