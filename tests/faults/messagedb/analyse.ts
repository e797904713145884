// The crash-loop figures of tests/faults/messagedb.fault.ts, computed from the reactor's per-run
// logs (see reactor.ts for the line format) and the number of events written per stream.

/** One reactor process: its log and what the suite saw around it. */
export interface RunLog {
  /** The run's log file contents. */
  readonly log: string;
  /** The process id it was spawned with. */
  readonly pid: number;
  /** When it was spawned, in ms since the epoch. */
  readonly spawnedAt: number;
  /** Milliseconds from spawn to exit. */
  readonly livedMs: number;
  /** The committed checkpoint before it was spawned and after it exited. */
  readonly before: bigint;
  readonly after: bigint;
  /** The category's head (last global position + 1) when it was spawned. */
  readonly headAtStart: bigint;
}

/** What the crash loop measured. The last run is the final one, run to completion. */
export interface Figures {
  /** Killed runs, those of them that started behind the head, and those whose checkpoint moved. */
  readonly killedRuns: number;
  readonly killedRunsWithWork: number;
  readonly killedRunsAdvanced: number;
  /** Events and streams written. */
  readonly events: number;
  readonly streams: number;
  /** Events in handler calls that ended, and in calls that started (killed mid-call included). */
  readonly handled: number;
  readonly started: number;
  readonly handledPerEvent: number;
  readonly startedPerEvent: number;
  /** Events handled by the final run alone. */
  readonly handledInFinalRun: number;
  /**
   * Events the killed runs committed (the final run handles each event past its starting
   * checkpoint once), and what they handled per event committed: the cost of lasting progress.
   */
  readonly committedByKilledRuns: number;
  readonly killedHandledPerCommitted: number;
  /** Handler calls, and calls cut short by a kill. */
  readonly calls: number;
  readonly interruptedCalls: number;
  /** Written events that no ended call covered. */
  readonly lost: number;
  /** Handled indexes at or past a stream's written length, or on streams never written. */
  readonly unknown: number;
  /** Calls, per stream within a run, starting below the previous call's end. */
  readonly reordered: number;
  /** Calls, per stream within a run, starting beyond the previous call's end. */
  readonly skippedInRun: number;
  /** Calls started on a stream whose previous call had not ended. */
  readonly overlaps: number;
  /** Lines with another pid than their run's, or that do not parse. */
  readonly foreignLines: number;
  /** How long each killed run whose checkpoint did not move lived, in ms. */
  readonly notAdvancedLivedMs: number[];
  /** Median ms from spawn to the reactor's `ready` line, and from spawn to exit of killed runs. */
  readonly medianReadyMs: number;
  readonly medianLivedMs: number;
}

const median = (xs: number[]): number => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
};

/** Computes the figures of `runs` (in order, the last one final) against `written` per stream. */
export function analyse(runs: readonly RunLog[], written: ReadonlyMap<string, number>): Figures {
  const coverage = new Map<string, Uint32Array>();
  for (const [stream, n] of written) coverage.set(stream, new Uint32Array(n));
  let handled = 0, started = 0, calls = 0, interrupted = 0, unknown = 0;
  let reordered = 0, skippedInRun = 0, overlaps = 0, foreign = 0, handledInFinalRun = 0;
  const ready: number[] = [];
  runs.forEach((run, r) => {
    const open = new Map<string, number>();
    const lastNext = new Map<string, number>();
    for (const line of run.log.split("\n")) {
      if (line === "") continue;
      const f = line.split("\t");
      const kind = f[0];
      if (kind === "ready" || kind === "done") {
        if (Number(f[1]) !== run.pid) foreign++;
        if (kind === "ready") ready.push(Number(f[2]) - run.spawnedAt);
        continue;
      }
      const [stream, from, next, pid] = [f[1], Number(f[2]), Number(f[3]), Number(f[4])];
      if (
        (kind !== "start" && kind !== "end") || f.length !== 6 || pid !== run.pid ||
        !(Number.isInteger(from) && Number.isInteger(next) && next > from)
      ) {
        foreign++;
        continue;
      }
      if (kind === "start") {
        calls++;
        started += next - from;
        if (open.has(stream)) overlaps++;
        open.set(stream, from);
        const previous = lastNext.get(stream);
        if (previous !== undefined && from < previous) reordered++;
        if (previous !== undefined && from > previous) skippedInRun++;
        lastNext.set(stream, next);
        continue;
      }
      if (open.get(stream) !== from) {
        foreign++;
        continue;
      }
      open.delete(stream);
      handled += next - from;
      if (r === runs.length - 1) handledInFinalRun += next - from;
      const covered = coverage.get(stream);
      for (let i = from; i < next; i++) {
        if (covered !== undefined && i < covered.length) covered[i]++;
        else unknown++;
      }
    }
    interrupted += open.size;
  });
  let events = 0, lost = 0;
  for (const covered of coverage.values()) {
    events += covered.length;
    for (const c of covered) if (c === 0) lost++;
  }
  const killed = runs.slice(0, -1);
  return {
    killedRuns: killed.length,
    killedRunsWithWork: killed.filter((r) => r.before < r.headAtStart).length,
    killedRunsAdvanced: killed.filter((r) => r.after > r.before).length,
    events,
    streams: written.size,
    handled,
    started,
    handledPerEvent: handled / events,
    startedPerEvent: started / events,
    handledInFinalRun,
    committedByKilledRuns: events - handledInFinalRun,
    killedHandledPerCommitted: (handled - handledInFinalRun) / (events - handledInFinalRun),
    calls,
    interruptedCalls: interrupted,
    lost,
    unknown,
    reordered,
    skippedInRun,
    overlaps,
    foreignLines: foreign,
    notAdvancedLivedMs: killed.filter((r) => r.after <= r.before).map((r) => Math.round(r.livedMs)),
    medianReadyMs: Math.round(median(ready)),
    medianLivedMs: Math.round(median(killed.map((r) => r.livedMs))),
  };
}
