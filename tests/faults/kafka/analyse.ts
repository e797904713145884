// Figures from the per-run logs of tests/faults/kafka/member.ts: lost, redone, reordered,
// overlapping calls across members, commits for partitions not owned.

/** What one member process wrote. */
export interface RunLog {
  /** A name for the run (its log file). */
  readonly run: string;
  /** The log's text. */
  readonly text: string;
}

/** The counts of a scenario. */
export interface Figures {
  /** Message values handled at least once, of those expected. */
  readonly distinct: number;
  /** Values never handled. */
  readonly lost: number;
  /** Handlings beyond the first (at-least-once redelivery). */
  readonly redone: number;
  /** Calls within one run whose values did not follow the previous call's for that stream. */
  readonly reordered: number;
  /** Pairs of calls on one stream in different runs that overlapped in time. */
  readonly overlaps: number;
  /** The longest such overlap, ms. */
  readonly maxOverlapMs: number;
  /** Accepted commits for a partition not in the run's assignment at the time. */
  readonly commitsNotOwned: number;
  /** Group joins over all runs. */
  readonly joins: number;
  /** run() rejections: code and message. */
  readonly rejections: readonly string[];
}

interface Call {
  readonly run: string;
  readonly start: number;
  readonly end: number;
}

/** Counts the figures over `logs`, for values 0 .. expected - 1. */
export function analyse(logs: readonly RunLog[], expected: number): Figures {
  const seen = new Uint32Array(expected);
  let redone = 0, reordered = 0, commitsNotOwned = 0, joins = 0;
  const rejections: string[] = [];
  const calls = new Map<string, Call[]>();
  for (const { run, text } of logs) {
    const last = new Map<string, number>();
    let owned = new Set<number>();
    for (const line of text.split("\n")) {
      const parts = line.split(" ");
      switch (parts[0]) {
        case "J":
          joins++;
          // A new assignment refetches from the committed offset: redelivery, not disorder.
          last.clear();
          owned = new Set(parts[2] ? parts[2].split(",").map(Number) : []);
          break;
        case "K":
          if (!owned.has(Number(parts[2]))) commitsNotOwned++;
          break;
        case "X":
          rejections.push(parts.slice(2).join(" "));
          break;
        case "C": {
          const [, start, end, stream, list] = parts;
          if (list === undefined) break; // a line cut short by the kill
          const values = list.split(",").map(Number);
          const previous = last.get(stream) ?? -1;
          if (values[0] <= previous || values.some((v, i) => i > 0 && v <= values[i - 1])) {
            reordered++;
          }
          last.set(stream, values.at(-1)!);
          for (const v of values) {
            if (v >= 0 && v < expected && seen[v]++ > 0) redone++;
          }
          let list2 = calls.get(stream);
          if (list2 === undefined) calls.set(stream, list2 = []);
          list2.push({ run, start: Number(start), end: Number(end) });
          break;
        }
      }
    }
  }
  let overlaps = 0, maxOverlapMs = 0;
  for (const list of calls.values()) {
    list.sort((a, b) => a.start - b.start);
    // Quadratic per stream, which is fine for the tens of calls a stream gets here.
    for (let i = 1; i < list.length; i++) {
      const c = list[i];
      for (let j = 0; j < i; j++) {
        const d = list[j];
        if (d.run !== c.run && d.end > c.start) {
          overlaps++;
          maxOverlapMs = Math.max(maxOverlapMs, Math.min(d.end, c.end) - c.start);
        }
      }
    }
  }
  let distinct = 0;
  for (const n of seen) if (n > 0) distinct++;
  return {
    distinct,
    lost: expected - distinct,
    redone,
    reordered,
    overlaps,
    maxOverlapMs: Math.round(maxOverlapMs * 100) / 100,
    commitsNotOwned,
    joins,
    rejections,
  };
}
