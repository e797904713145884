// The appending side of tests/faults/dynamo.fault.ts: appends through the DynamoDB store at the
// expected version, a few appenders at once, and rides out a server outage by retrying the same
// append. An append whose reply was lost after it committed shows on the retry as a wrong
// expected version at exactly its own end: it is counted as done. It keeps what it wrote per
// stream, which is what the index and the reactor must end up with.
import { WrongExpectedVersionError } from "../../../core/store.ts";
import type { DynamoEventStore } from "../../../stores/dynamo.ts";

/** The type of event `index` of a stream: the index checks it against the entries' types. */
export const typeAt = (index: number): string => `T${index % 10}`;

/** What was written, and a way to write more. */
export interface Writer {
  /** Events written per stream (its version). */
  readonly versions: ReadonlyMap<string, number>;
  /** Events written in all. */
  events(): number;
  /** Failed attempts that were retried (an outage), and appends found committed on a retry. */
  readonly retried: { attempts: number; committedUnseen: number };
  /** Appends `count` events to `stream` at its version, retrying through failures. */
  append(stream: string, count: number): Promise<void>;
  /**
   * Tops each of `streams` up to `perStream` events in one append, 2 streams at once (DynamoDB
   * Local's transactions slow each other down: more at once is slower in all).
   */
  fill(streams: readonly string[], perStream: number): Promise<void>;
  /**
   * Appends 1–3 events at a time to streams drawn by `random` from `streams`, with `appenders`
   * at once (never two on one stream) and `paceMs` between an appender's appends, until
   * `stop()` or `maxEvents`.
   */
  start(
    streams: readonly string[],
    options: { appenders: number; paceMs: number; maxEvents: number },
  ): void;
  /** Stops the appenders started by `start` and waits for their appends to finish. */
  stop(): Promise<void>;
}

/** A writer over `store`, drawing streams and counts from `random`. */
export function writer(store: DynamoEventStore, random: () => number): Writer {
  const versions = new Map<string, number>();
  const retried = { attempts: 0, committedUnseen: 0 };
  const busy = new Set<string>();
  let total = 0, writing = false;
  let loops: Promise<void>[] = [];

  async function append(stream: string, count: number): Promise<void> {
    const expected = versions.get(stream) ?? 0;
    const events = Array.from({ length: count }, (_, k) => ({
      type: typeAt(expected + k),
      data: { stream, index: expected + k },
    }));
    for (;;) {
      try {
        await store.append(stream, events, expected);
        break;
      } catch (e) {
        if (e instanceof WrongExpectedVersionError && e.actual === expected + count) {
          retried.committedUnseen++;
          break;
        }
        if (e instanceof WrongExpectedVersionError) throw e; // a second writer: a bug here
        retried.attempts++;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    versions.set(stream, expected + count);
    total += count;
  }

  return {
    versions,
    events: () => total,
    retried,
    append,
    async fill(streams, perStream) {
      const queue = [...streams];
      await Promise.all(Array.from({ length: 2 }, async () => {
        for (let stream; (stream = queue.shift()) !== undefined;) {
          const v = versions.get(stream) ?? 0;
          if (v < perStream) await append(stream, perStream - v);
        }
      }));
    },
    start(streams, { appenders, paceMs, maxEvents }) {
      writing = true;
      loops = Array.from({ length: appenders }, async () => {
        while (writing && total < maxEvents) {
          const stream = streams[Math.floor(random() * streams.length)];
          if (busy.has(stream)) continue;
          busy.add(stream);
          try {
            await append(stream, 1 + Math.floor(random() * 3));
          } finally {
            busy.delete(stream);
          }
          if (paceMs > 0) await new Promise((r) => setTimeout(r, paceMs * (0.5 + random())));
        }
      });
    },
    async stop() {
      writing = false;
      await Promise.all(loops);
    },
  };
}
