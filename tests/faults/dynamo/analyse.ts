// Figures of tests/faults/dynamo.fault.ts that the MessageDB analysis (../messagedb/analyse.ts,
// used for the reactor's calls) does not give: what the indexer processes did, from their logs
// (see indexer.ts for the line format), and whether the index holds every event exactly once,
// in stream order, from the batches of a dynamoSource reading it.
import type { Batch } from "../../../core/batch.ts";

/** What the indexer runs did, summed. */
export interface IndexerFigures {
  /** Indexer processes. */
  readonly runs: number;
  /** Runs that found saved progress for every shard, and runs that found none for some shard. */
  readonly resumed: number;
  readonly startedOver: number;
  /** Runs that started over although an earlier run had saved progress (ingested a batch). */
  readonly startedOverAfterProgress: number;
  /** Runs that indexed (and recorded) at least one batch. */
  readonly progressed: number;
  /** Batches of records ingested; events indexed; events seen again (already indexed). */
  readonly ingests: number;
  readonly events: number;
  readonly redone: number;
  /** The most events one run saw again. */
  readonly maxRedoneInRun: number;
  /** Appends parked as gaps, records parked, records dropped, epochs closed. */
  readonly gaps: number;
  readonly parked: number;
  readonly dropped: number;
  readonly epochsClosed: number;
  /** runStreamsIndexer rejections: code and message. */
  readonly rejections: readonly string[];
  /** Lines that do not parse. */
  readonly badLines: number;
  /** Median and longest time between ingest lines of a run (or from ready to the first), ms. */
  readonly medianIngestGapMs: number;
  readonly maxIngestGapMs: number;
}

/** Sums the logs of the indexer runs, in the order they ran. */
export function indexerFigures(logs: readonly string[]): IndexerFigures {
  let resumed = 0, startedOver = 0, startedOverAfterProgress = 0, ingests = 0, events = 0;
  let redone = 0, maxRedoneInRun = 0, gaps = 0, parked = 0, dropped = 0, epochsClosed = 0;
  let badLines = 0, progressSaved = false, progressed = 0;
  const rejections: string[] = [];
  const gapsMs: number[] = [];
  for (const text of logs) {
    let fresh = false, shards = 0, redoneInRun = 0, ingested = false;
    for (const line of text.split("\n")) {
      if (line === "") continue;
      const f = line.split("\t");
      switch (f[0]) {
        case "resume":
          shards++;
          if (f[2] === "-" || f[2] === undefined) fresh = true;
          break;
        case "ingest": {
          const n = f.slice(2, 10).map(Number);
          if (f.length !== 11 || n.some((x) => !Number.isInteger(x) || x < 0)) {
            badLines++;
            break;
          }
          ingests++;
          ingested = true;
          events += n[0];
          redone += n[1];
          redoneInRun += n[1];
          gaps += n[2];
          parked += n[3];
          dropped += n[4];
          epochsClosed += n[6];
          gapsMs.push(n[7]);
          break;
        }
        case "X":
          rejections.push(f.slice(2).join(" "));
          break;
        case "ready":
        case "done":
          break;
        default:
          badLines++;
      }
    }
    if (fresh || shards === 0) {
      startedOver++;
      if (progressSaved) startedOverAfterProgress++;
    } else resumed++;
    maxRedoneInRun = Math.max(maxRedoneInRun, redoneInRun);
    if (ingested) progressed++;
    progressSaved ||= ingested;
  }
  return {
    runs: logs.length,
    resumed,
    startedOver,
    startedOverAfterProgress,
    progressed,
    ingests,
    events,
    redone,
    maxRedoneInRun,
    gaps,
    parked,
    dropped,
    epochsClosed,
    rejections,
    badLines,
    medianIngestGapMs: gapsMs.sort((a, b) => a - b)[Math.floor(gapsMs.length / 2)] ?? NaN,
    maxIngestGapMs: gapsMs.at(-1) ?? NaN,
  };
}

/** What a read of the whole index found, against what was written. */
export interface IndexCheck {
  /** Events read, and distinct events of those written. */
  readonly read: number;
  readonly distinct: number;
  /** Written events the index does not hold. */
  readonly missing: number;
  /** Events read again after they had been read (duplicates in the index). */
  readonly duplicates: number;
  /** Events read before an earlier event of their stream (out of stream order). */
  readonly reordered: number;
  /** Events whose type is not the one written at their index. */
  readonly wrongType: number;
  /** Events of streams never written, or at or past a stream's written length. */
  readonly unknown: number;
}

/**
 * Follows the batches of a source reading the index from the start and checks each event against
 * `written` (events per stream) and `typeAt` (the type written at an index).
 */
export function indexChecker(
  written: ReadonlyMap<string, number>,
  typeAt: (index: number) => string,
): { add(batch: Batch): void; complete(): boolean; figures(): IndexCheck } {
  const seen = new Map<string, Uint8Array>();
  for (const [stream, n] of written) seen.set(stream, new Uint8Array(n));
  // Per stream, the index after the last event read first time: the next one in order.
  const next = new Map<string, number>();
  let read = 0, distinct = 0, duplicates = 0, reordered = 0, wrongType = 0, unknown = 0;
  let total = 0;
  for (const n of written.values()) total += n;
  return {
    add(batch) {
      for (const { stream, event } of batch.items) {
        read++;
        const marks = seen.get(stream);
        if (marks === undefined || event.index >= marks.length) {
          unknown++;
          continue;
        }
        if (event.type !== typeAt(event.index)) wrongType++;
        if (marks[event.index] === 1) {
          duplicates++;
          continue;
        }
        marks[event.index] = 1;
        distinct++;
        if (event.index !== (next.get(stream) ?? 0)) reordered++;
        next.set(stream, event.index + 1);
      }
    },
    complete: () => distinct >= total,
    figures: () => ({
      read,
      distinct,
      missing: total - distinct,
      duplicates,
      reordered,
      wrongType,
      unknown,
    }),
  };
}
