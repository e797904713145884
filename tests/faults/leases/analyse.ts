// The figures of the lease process tests, from the member logs (see member.ts for the lines) and
// what was written: events lost, calls overlapping on a stream, calls started on a slot after
// another member acquired it, commits accepted after another member acquired the slot
// (stale), commits refused, and how long a dead member's slots took to be taken over.

/** One member process as the suite saw it. */
export interface MemberRun {
  /** The member's name (its lease id). */
  readonly member: string;
  /** Its log file's contents. */
  readonly log: string;
  /** When it was SIGKILLed (ms since the epoch): its unfinished calls end there. */
  readonly killedAt?: number;
  /** When it was paused and resumed (SIGSTOP, SIGCONT). */
  readonly paused?: { readonly from: number; readonly to: number };
}

/** What the logs show. */
export interface LeaseFigures {
  /** Events written, and the distinct ones handled by a call that ended. */
  readonly events: number;
  readonly handled: number;
  /** Events handled per event written (redone work after takeovers shows here). */
  readonly handledPerEvent: number;
  /** Written events no ended call covered. */
  readonly lost: number;
  /** Handler calls, and calls cut short by a kill. */
  readonly calls: number;
  readonly interrupted: number;
  /** Pairs of calls on one stream whose intervals overlap (calls frozen by a pause excluded). */
  readonly overlaps: number;
  /** Calls in flight when their member was paused: they end after it resumes, inevitably. */
  readonly frozenCalls: number;
  /** Calls started on a slot after another member had acquired it since. */
  readonly startedAfterLoss: number;
  /** Commits accepted though begun after another member had acquired the slot. */
  readonly staleCommitsAccepted: number;
  /** Commits refused by the fence, and failed otherwise. */
  readonly commitsRefused: number;
  readonly commitsFailed: number;
  /** Commits refused for the paused members. */
  readonly pausedCommitsRefused: number;
  /** Acquisitions, and lines that do not parse. */
  readonly acquisitions: number;
  readonly badLines: number;
  /** Per killed member: ms from the kill until each of its slots was acquired by another. */
  readonly takeoverMs: readonly number[];
}

interface Call {
  readonly member: string;
  readonly stream: string;
  readonly from: number;
  readonly next: number;
  readonly start: number;
  end: number | undefined;
}

interface Acquisition {
  readonly member: string;
  readonly unit: string;
  readonly generation: bigint;
  readonly at: number;
}

/**
 * Computes the figures. `slotOf` maps a stream to its slot's unit (`<category>-<s>/<slots>`);
 * `written` holds each stream's number of events.
 */
export function analyseLeases(
  runs: readonly MemberRun[],
  written: ReadonlyMap<string, number>,
  slotOf: (stream: string) => string,
): LeaseFigures {
  const calls: Call[] = [];
  const acquisitions: Acquisition[] = [];
  const commits: Array<{
    member: string;
    unit: string;
    generation: string;
    started: number;
    outcome: string;
  }> = [];
  let badLines = 0;
  for (const run of runs) {
    const open = new Map<string, Call>();
    for (const line of run.log.split("\n")) {
      if (line === "") continue;
      const f = line.split("\t");
      switch (f[0]) {
        case "start": {
          const call: Call = {
            member: run.member,
            stream: f[1],
            from: Number(f[2]),
            next: Number(f[3]),
            start: Number(f[4]),
            end: undefined,
          };
          calls.push(call);
          open.set(`${f[1]}:${f[2]}`, call);
          break;
        }
        case "end": {
          const call = open.get(`${f[1]}:${f[2]}`);
          if (call === undefined) badLines++;
          else {
            call.end = Number(f[4]);
            open.delete(`${f[1]}:${f[2]}`);
          }
          break;
        }
        case "acquired":
          acquisitions.push({
            member: run.member,
            unit: f[1],
            generation: BigInt(f[2]),
            at: Number(f[3]),
          });
          break;
        case "commit":
          commits.push({
            member: run.member,
            unit: f[1],
            generation: f[3],
            started: Number(f[4]),
            outcome: f[6],
          });
          break;
        case "ready":
        case "alive":
        case "sigterm":
        case "ran":
        case "released":
        case "letgo":
        case "done":
          break;
        default:
          badLines++;
      }
    }
  }
  acquisitions.sort((a, b) => a.at - b.at);
  const byUnit = new Map<string, Acquisition[]>();
  for (const a of acquisitions) {
    const list = byUnit.get(a.unit);
    if (list) list.push(a);
    else byUnit.set(a.unit, [a]);
  }
  /** The latest acquisition of `unit` at or before `t`. */
  const ownerAt = (unit: string, t: number): Acquisition | undefined => {
    let found: Acquisition | undefined;
    for (const a of byUnit.get(unit) ?? []) {
      if (a.at <= t) found = a;
      else break;
    }
    return found;
  };
  const runOf = new Map(runs.map((r) => [r.member, r]));

  // Ends: a killed member's unfinished calls end at the kill.
  let interrupted = 0;
  for (const c of calls) {
    if (c.end !== undefined) continue;
    interrupted++;
    c.end = runOf.get(c.member)?.killedAt ?? Infinity;
  }
  const frozen = (c: Call) => {
    const p = runOf.get(c.member)?.paused;
    return p !== undefined && c.start < p.from && c.end! > p.from;
  };

  let overlaps = 0, frozenCalls = 0, startedAfterLoss = 0;
  const byStream = new Map<string, Call[]>();
  for (const c of calls) {
    if (frozen(c)) frozenCalls++;
    const list = byStream.get(c.stream);
    if (list) list.push(c);
    else byStream.set(c.stream, [c]);
    const owner = ownerAt(slotOf(c.stream), c.start);
    if (owner === undefined || owner.member !== c.member) startedAfterLoss++;
  }
  for (const list of byStream.values()) {
    list.sort((a, b) => a.start - b.start);
    for (let i = 0; i < list.length; i++) {
      for (let j = i + 1; j < list.length && list[j].start < list[i].end!; j++) {
        if (!frozen(list[i]) && !frozen(list[j])) overlaps++;
      }
    }
  }

  // Handled: indexes covered by ended calls (a killed call handled nothing for sure).
  const handledBy = new Map<string, Set<number>>();
  let handledEvents = 0;
  for (const c of calls) {
    if (runOf.get(c.member)?.killedAt !== undefined && c.end === runOf.get(c.member)!.killedAt) {
      continue;
    }
    let set = handledBy.get(c.stream);
    if (set === undefined) handledBy.set(c.stream, set = new Set());
    for (let i = c.from; i < c.next; i++) {
      set.add(i);
      handledEvents++;
    }
  }
  let events = 0, handled = 0;
  for (const [stream, n] of written) {
    events += n;
    const set = handledBy.get(stream);
    for (let i = 0; i < n; i++) if (set?.has(i)) handled++;
  }

  let staleCommitsAccepted = 0, commitsRefused = 0, commitsFailed = 0, pausedCommitsRefused = 0;
  for (const c of commits) {
    if (c.outcome === "refused") {
      commitsRefused++;
      if (runOf.get(c.member)?.paused !== undefined) pausedCommitsRefused++;
    } else if (c.outcome === "failed") commitsFailed++;
    else {
      const owner = ownerAt(c.unit, c.started);
      if (owner?.member !== c.member || String(owner.generation) !== c.generation) {
        staleCommitsAccepted++;
      }
    }
  }

  const takeoverMs: number[] = [];
  for (const run of runs) {
    if (run.killedAt === undefined) continue;
    for (const [unit, list] of byUnit) {
      const last = ownerAt(unit, run.killedAt);
      if (last?.member !== run.member) continue;
      const next = list.find((a) => a.at > run.killedAt! && a.member !== run.member);
      takeoverMs.push(next === undefined ? Infinity : next.at - run.killedAt);
    }
  }

  return {
    events,
    handled,
    handledPerEvent: events === 0 ? 0 : handledEvents / events,
    lost: events - handled,
    calls: calls.length,
    interrupted,
    overlaps,
    frozenCalls,
    startedAfterLoss,
    staleCommitsAccepted,
    commitsRefused,
    commitsFailed,
    pausedCommitsRefused,
    acquisitions: acquisitions.length,
    badLines,
    takeoverMs,
  };
}
