/**
 * The progress line `tail` prints each interval: throughput, lag and a bar (redrawn in place on
 * a terminal), or one JSON object with `--json`. Internal to the `impel` command line.
 *
 * @module
 */
import type { Lags, MeteredPipeline } from "../observability/metrics.ts";
import type { Args } from "./args.ts";

/** Prints a pipeline's progress. */
export interface Progress {
  /** Prints one update; `final` prints the summary and ends the redrawn line. */
  print(stats: ReturnType<MeteredPipeline["stats"]>, final: boolean): Promise<void>;
}

/** Progress of `pipeline` since `started` (a `performance.now()` time), per `--json`. */
export function createProgress(args: Args, pipeline: MeteredPipeline, started: number): Progress {
  const io = args.io;
  let last = { at: started, handled: 0 };
  let drawn = false;
  const fmt = (n: number) => Math.round(n).toLocaleString("en-US");
  return {
    async print(stats, final) {
      const lags: Lags = await pipeline.lags(stats).catch(() => ({ tranches: new Map() }));
      const now = performance.now();
      const handled = stats.counters.handled;
      const rate = (handled - last.handled) / Math.max(1e-3, (now - last.at) / 1000);
      last = { at: now, handled };
      let total = 0;
      for (const t of lags.tranches.values()) total += t.lag ?? 0;
      const caughtUp = stats.tranches.length > 0 && stats.tranches.every((t) => t.isTail) &&
        stats.uncompletedBatches === 0 && total === 0;
      // Done over done plus remaining: lag is in position units, so this is indicative only.
      const fraction = total === 0 ? (caughtUp ? 1 : 0) : handled / (handled + total);
      if (args.flag("json")) {
        io.out(
          JSON.stringify({
            elapsedMs: Math.round(now - started),
            handled,
            eventsPerSecond: Math.round(
              final ? handled / Math.max(1e-3, (now - started) / 1000) : rate,
            ),
            caughtUp,
            progress: Number(fraction.toFixed(4)),
            tranches: pipeline.tranches(stats).map((tranche) => {
              const t = stats.tranches.find((x) => x.tranche === tranche);
              const lag = lags.tranches.get(tranche);
              return {
                tranche,
                completed: t?.completed?.toString() ?? null,
                head: lag?.head.toString() ?? null,
                lag: lag?.lag ?? null,
                isTail: t?.isTail ?? false,
              };
            }),
            ...(final ? { final: true } : {}),
          }) + "\n",
        );
        return;
      }
      const lagText = lags.tranches.size === 0 ? "lag unknown" : `lag ${fmt(total)}`;
      if (final) {
        const secs = (now - started) / 1000;
        if (drawn) io.out("\r\x1b[K");
        io.out(
          `${fmt(handled)} events in ${secs.toFixed(1)} s (${
            fmt(handled / Math.max(secs, 1e-3))
          }/s); ${lagText}${caughtUp ? "; caught up" : ""}\n`,
        );
        return;
      }
      const width = 30, filled = Math.round(Math.max(0, Math.min(1, fraction)) * width);
      const bar = caughtUp
        ? "at tail"
        : `[${"#".repeat(filled)}${"-".repeat(width - filled)}] ${(fraction * 100).toFixed(1)}%`;
      const line = `${fmt(rate)} events/s, ${fmt(handled)} handled, ${lagText}, ${bar}`;
      if (io.isTerminal) {
        io.out(`\r\x1b[K${line}`);
        drawn = true;
      } else io.out(line + "\n");
    },
  };
}
