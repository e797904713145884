/**
 * The `replay` command: replays MessageDB categories or streams from a position or a time at a
 * limited rate, printing progress (a bar on a terminal, plain lines otherwise, or JSON), and
 * optionally the events themselves; or, with `--group --reset-checkpoint`, moves a group's
 * checkpoints back to that start so that its own pipeline replays. Internal to the `impel`
 * command line.
 *
 * @module
 */
import type { Position } from "../core/batch.ts";
import { PipelineRunningError } from "../core/checkpoints.ts";
import type { StreamEvent } from "../core/event.ts";
import { errorText } from "../core/failure.ts";
import type { Args, Command } from "./args.ts";
import {
  load,
  mapCheckpointError,
  messageDb,
  PG,
  PG_TABLE,
  type Pool,
  postgresStore,
  withPostgres,
} from "./backends.ts";
import { CliError, EXIT, isConnectionError, usage } from "./exit.ts";

type ReplayModule = typeof import("../replay/messagedb.ts");
type Progress = ReturnType<import("../replay/messagedb.ts").Replay["progress"]>;

const fmt = (n: number) => Math.round(n).toLocaleString("en-US");

function duration(ms: number | undefined): string {
  if (ms === undefined) return "?";
  const s = Math.round(ms / 1000);
  return s < 60
    ? `${s}s`
    : s < 3600
    ? `${Math.floor(s / 60)}m${s % 60}s`
    : `${(s / 3600).toFixed(1)}h`;
}

/**
 * One progress update: done / total, the share done, rate and ETA; with `bar` (a terminal, where
 * the line is redrawn in place) led by a bar, else a plain line for a log or a pipe.
 */
function progressLine(p: Progress, bar: boolean): string {
  const percent = `${(p.fraction * 100).toFixed(1)}%`;
  const events = `${fmt(p.done)}/${p.total === undefined ? "?" : fmt(p.total)} events`;
  const rest = `${fmt(p.eventsPerSecond)}/s, ETA ${duration(p.etaMs)}${
    p.state === "paused" ? " (paused)" : ""
  }`;
  if (!bar) return `${events} (${percent}), ${rest}`;
  const width = 30, filled = Math.round(p.fraction * width);
  return `[${"#".repeat(filled)}${"-".repeat(width - filled)}] ${percent} ${events}, ${rest}`;
}

function progressJson(p: Progress, final: boolean): string {
  return JSON.stringify({
    state: p.state,
    done: p.done,
    total: p.total ?? null,
    progress: Number(p.fraction.toFixed(4)),
    eventsPerSecond: Math.round(p.eventsPerSecond),
    etaMs: p.etaMs === undefined ? null : Math.round(p.etaMs),
    elapsedMs: Math.round(p.elapsedMs),
    from: p.from?.toString() ?? null,
    ...(final ? { final: true } : {}),
  }) + "\n";
}

/** `--from-time` as a Date: ISO 8601, or a duration ago (`90s`, `15m`, `2h`, `1d`). */
function parseTime(text: string): Date {
  const ago = /^(\d+(?:\.\d+)?)(s|m|h|d)$/.exec(text);
  if (ago) {
    const unit = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }[ago[2] as "s"];
    return new Date(Date.now() - Number(ago[1]) * unit);
  }
  const time = /^\d{4}-\d{2}-\d{2}/.test(text) ? new Date(text) : new Date(NaN);
  if (Number.isNaN(time.getTime())) {
    throw usage(
      `--from-time must be an ISO 8601 time or a duration ago (15m, 2h), got ${
        JSON.stringify(text)
      }`,
    );
  }
  return time;
}

/** `impel replay`: replays MessageDB categories or streams, or rewinds a group. */
export const replayCommand: Command = {
  path: ["replay"],
  summary:
    "Replays MessageDB categories or streams from a position or a time at a limited rate, with progress.",
  usage:
    "replay [--url URL] (--category NAME... | --stream NAME...) (--from-time TIME | --from-position N) [--rate N] [--print] [--json] | ... --group NAME --reset-checkpoint",
  details: `Events from the start up to each category's head when the command starts are replayed
into this command: counted, or with --print written to standard output as one JSON object per
line (progress then goes to standard error). Progress is a bar on a terminal, a line per
interval otherwise, or JSON with --json. Ctrl-C cancels, printing how far it got, and exits
130. Nothing durable is written.
--from-time finds the first global position written at or after TIME (ISO 8601, or 15m / 2h /
1d ago) by a binary search on global_position.

With --group NAME --reset-checkpoint the command replays nothing itself (it has not the group's
handler): it moves the group's checkpoint of each category back to the start, refused while a
pipeline of the group runs, and prints old -> new, so that the group's own pipeline replays when
it next starts.`,
  options: [
    ...PG,
    { name: "category", kind: "list", arg: "NAME", help: "a category to replay" },
    {
      name: "stream",
      kind: "list",
      arg: "NAME",
      help: "a stream to replay (instead of categories)",
    },
    {
      name: "from-time",
      kind: "string",
      arg: "TIME",
      help: "start at the first message written at or after TIME",
    },
    { name: "from-position", kind: "string", arg: "N", help: "start at global position N" },
    { name: "rate", kind: "string", arg: "N", help: "at most N events per second" },
    { name: "print", kind: "boolean", help: "write each event as a JSON line to standard output" },
    { name: "json", kind: "boolean", help: "progress as one JSON object per interval" },
    {
      name: "interval",
      kind: "string",
      arg: "SECONDS",
      fallback: "1",
      help: "how often to print progress",
    },
    { name: "batch-size", kind: "string", arg: "N", fallback: "1000", help: "messages per read" },
    {
      name: "group",
      kind: "string",
      arg: "NAME",
      help: "with --reset-checkpoint: the group to rewind",
    },
    {
      name: "reset-checkpoint",
      kind: "boolean",
      help: "move --group's checkpoints back to the start",
    },
    {
      name: "source",
      kind: "string",
      arg: "NAME",
      fallback: "messagedb",
      help: "the source's name in checkpoint keys, with --group",
    },
    ...PG_TABLE,
  ],
  async run(args) {
    const categories = args.list("category");
    const streams = args.list("stream");
    if (categories.length === 0 && streams.length === 0) {
      throw usage("--category or --stream is required");
    }
    if (categories.length > 0 && streams.length > 0) {
      throw usage("give --category or --stream, not both");
    }
    const fromTime = args.string("from-time");
    const fromPosition = args.string("from-position");
    if ((fromTime === undefined) === (fromPosition === undefined)) {
      throw usage("give one of --from-time and --from-position");
    }
    if (fromPosition !== undefined && !/^\d+$/.test(fromPosition)) {
      throw usage(
        `--from-position must be a global position (an integer >= 0), got ${
          JSON.stringify(fromPosition)
        }`,
      );
    }
    const time = fromTime === undefined ? undefined : parseTime(fromTime);
    const rateText = args.string("rate");
    const rate = rateText === undefined ? undefined : Number(rateText);
    if (rate !== undefined && (!/^\d+(\.\d+)?$/.test(rateText!) || !(rate > 0))) {
      throw usage(
        `--rate must be a positive number of events per second, got ${JSON.stringify(rateText)}`,
      );
    }
    const group = args.string("group");
    if (group !== undefined && !args.flag("reset-checkpoint")) {
      throw usage(
        "--group needs --reset-checkpoint: this command cannot run the group's handler; it moves the group's checkpoints back so that its own pipeline replays",
      );
    }
    if (args.flag("reset-checkpoint") && group === undefined) {
      throw usage("--reset-checkpoint needs --group");
    }
    if (group !== undefined && (rate !== undefined || args.flag("print"))) {
      throw usage("--rate and --print replay here; with --group the group's own pipeline replays");
    }
    const batchSize = args.integer("batch-size", 1000, 1);
    return await withPostgres(args, async (pool) => {
      const m: ReplayModule = await load(
        "replay/messagedb.ts",
        () => import("../replay/messagedb.ts"),
      );
      await messageDb(() => pool.query("SELECT message_store.message_store_version()"));
      let from: Position;
      if (time !== undefined) {
        const found = await m.positionAtTime(pool, time);
        from = found.position;
        args.io.err(
          `${time.toISOString()} is global position ${from} (${found.lookups} lookups)\n`,
        );
      } else from = BigInt(fromPosition!);
      if (group !== undefined) return await rewind(args, pool, group, categories, streams, from);
      return await replayHere(args, m, pool, { categories, streams, from, rate, batchSize });
    });
  },
};

/** Moves `group`'s checkpoints back to `from`, refused while it runs. */
async function rewind(
  args: Args,
  pool: Pool,
  group: string,
  categories: string[],
  streams: string[],
  from: Position,
): Promise<number> {
  if (streams.length > 0) throw usage("--group rewinds categories: give --category");
  const sources = await load("sources/messagedb.ts", () => import("../sources/messagedb.ts"));
  const store = await postgresStore(args, pool);
  const sourceName = args.string("source")!;
  const scope = { source: sourceName, group };
  for (const category of categories) {
    const key = sources.messageDbCheckpointKey(category, { group, sourceName });
    const previous = await store.load(key).catch(mapCheckpointError);
    await store.resetUnlessRunning!(scope, key, from).catch((error) => {
      if (!(error instanceof PipelineRunningError)) return mapCheckpointError(error);
      throw new CliError(EXIT.failed, "PipelineRunning", error.message, { cause: error });
    });
    args.io.out(
      `checkpoint ${key.source}/${key.tranche}/${key.group}: ${previous ?? "none"} -> ${from}\n`,
    );
  }
  return EXIT.ok;
}

async function replayHere(
  args: Args,
  m: ReplayModule,
  pool: Pool,
  o: {
    categories: string[];
    streams: string[];
    from: Position;
    rate: number | undefined;
    batchSize: number;
  },
): Promise<number> {
  const io = args.io;
  const print = args.flag("print");
  const json = args.flag("json");
  // Events own standard output with --print: progress goes to standard error, never redrawn.
  const say = print ? io.err : io.out;
  const redraw = io.isTerminal && !print && !json;
  const intervalMs = args.seconds("interval", 1)! * 1000;
  const cancel = new AbortController();
  const stop = () => cancel.abort();
  io.signal?.addEventListener("abort", stop, { once: true });
  const handler = print
    ? (stream: string, events: readonly StreamEvent[]) => {
      let text = "";
      for (const e of events) {
        text += JSON.stringify({
          stream,
          index: e.index,
          type: e.type,
          id: e.id,
          time: e.time,
          data: e.data,
          meta: e.meta,
        }) + "\n";
      }
      io.out(text);
    }
    : () => {};
  const replay = m.replayMessageDb({
    client: pool,
    ...(o.streams.length > 0 ? { streams: o.streams } : { categories: o.categories }),
    from: { position: o.from },
    rate: o.rate,
    batchSize: o.batchSize,
    handler,
    statsIntervalMs: 0,
    signal: cancel.signal,
  });
  let drawn = false;
  const show = (final: boolean) => {
    const p = replay.progress();
    if (p.state === "starting") return;
    if (json) return say(progressJson(p, final));
    if (final) {
      if (drawn) say("\r\x1b[K");
      return say(
        `${p.state}: ${fmt(p.done)} events in ${(p.elapsedMs / 1000).toFixed(1)} s (${
          fmt(p.eventsPerSecond)
        }/s)\n`,
      );
    }
    if (redraw) {
      say(`\r\x1b[K${progressLine(p, true)}`);
      drawn = true;
    } else say(progressLine(p, false) + "\n");
  };
  const ticker = setInterval(() => show(false), intervalMs);
  let ended: Awaited<typeof replay.done>;
  try {
    ended = await replay.done;
  } catch (error) {
    if (isConnectionError(error)) {
      throw new CliError(EXIT.connection, "ConnectionFailed", `replay failed: ${errorText(error)}`);
    }
    throw error;
  } finally {
    clearInterval(ticker);
    io.signal?.removeEventListener("abort", stop);
  }
  show(true);
  // Cancelled (only Ctrl-C cancels it): not done, and reported as shells expect of a SIGINT.
  return ended.state === "cancelled" ? EXIT.interrupted : EXIT.ok;
}
