// Reading the logs of tests/parked/support/reactor.ts: the calls each run made, per stream, and
// the figures the kill tests assert on (order, overlap, what was handled).

/** One handler call as logged: where it started, where it ended (or failed), in which run. */
export interface Call {
  readonly stream: string;
  readonly from: number;
  /** The index reached; undefined for a call that failed or never ended (killed). */
  readonly next: number | undefined;
  readonly failed: boolean;
  readonly pid: number;
  /** When it ended (or started, if it never did), ms since the epoch. */
  readonly at: number;
}

/** The calls of one log, in log order, paired start to end. */
export function callsOf(log: string): Call[] {
  const calls: Call[] = [];
  const open = new Map<string, { from: number; pid: number; at: number }>();
  for (const line of log.split("\n")) {
    const [kind, stream, a, b, c, d] = line.split("\t");
    if (kind === "start") open.set(stream, { from: Number(a), pid: Number(c), at: Number(d) });
    else if (kind === "end" || kind === "fail") {
      const o = open.get(stream);
      if (o === undefined) continue;
      open.delete(stream);
      const ended = kind === "end";
      calls.push({
        stream,
        from: o.from,
        next: ended ? Number(b) : undefined,
        failed: !ended,
        pid: ended ? Number(c) : Number(b),
        at: ended ? Number(d) : Number(c),
      });
    }
  }
  for (const [stream, o] of open) {
    calls.push({ stream, from: o.from, next: undefined, failed: false, pid: o.pid, at: o.at });
  }
  return calls;
}

/** Overlapping calls of one stream in one log: a start while the previous call still runs. */
export function overlapsOf(log: string): number {
  const running = new Set<string>();
  let overlaps = 0;
  for (const line of log.split("\n")) {
    const [kind, stream] = line.split("\t");
    if (kind === "start") {
      if (running.has(stream)) overlaps++;
      running.add(stream);
    } else if (kind === "end" || kind === "fail") running.delete(stream);
  }
  return overlaps;
}

/** The indexes a stream's completed calls covered, in call order (repeats included). */
export function handled(calls: readonly Call[], stream: string): number[] {
  const out: number[] = [];
  for (const c of calls) {
    if (c.stream !== stream || c.next === undefined) continue;
    for (let i = c.from; i < c.next; i++) out.push(i);
  }
  return out;
}

/**
 * Calls of a stream that went backwards within one run: started below where its previous
 * completed call of that run ended.
 */
export function reorderedOf(calls: readonly Call[]): number {
  const reached = new Map<string, number>();
  let reordered = 0;
  for (const c of calls) {
    const key = `${c.pid}\t${c.stream}`;
    const at = reached.get(key);
    if (at !== undefined && c.from < at) reordered++;
    if (c.next !== undefined) reached.set(key, Math.max(at ?? 0, c.next));
  }
  return reordered;
}

/** Events written but covered by no completed call. */
export function missing(calls: readonly Call[], written: ReadonlyMap<string, number>): number {
  const covered = new Map<string, Set<number>>();
  for (const c of calls) {
    if (c.next === undefined) continue;
    let set = covered.get(c.stream);
    if (set === undefined) covered.set(c.stream, set = new Set());
    for (let i = c.from; i < c.next; i++) set.add(i);
  }
  let lost = 0;
  for (const [stream, n] of written) {
    const set = covered.get(stream);
    for (let i = 0; i < n; i++) if (!set?.has(i)) lost++;
  }
  return lost;
}

/** Events whose first handling ended before the first handling of the event before them. */
export function outOfOrder(calls: readonly Call[]): number {
  const first = new Map<string, Map<number, number>>();
  for (const c of calls) {
    if (c.next === undefined) continue;
    let m = first.get(c.stream);
    if (m === undefined) first.set(c.stream, m = new Map());
    for (let i = c.from; i < c.next; i++) if (!m.has(i) || m.get(i)! > c.at) m.set(i, c.at);
  }
  let n = 0;
  for (const m of first.values()) {
    for (const [i, at] of m) if (i > 0 && m.has(i - 1) && at < m.get(i - 1)!) n++;
  }
  return n;
}
