/**
 * `impel check messagedb`: looks for the traces that rows written around MessageDB's
 * `write_message` (a plain INSERT, COPY, a restore, a DELETE) leave in the messages table, which
 * can make a reader skip messages or halt a stream for good. Internal to the `impel` command
 * line.
 *
 * What `write_message` guarantees, and what is checked:
 *
 * - it takes each global position from the table's sequence: a row above the sequence's last
 *   value was inserted with an explicit position, and the next `write_message` gets a position
 *   below it that a reader already past it never reads (the sequence check, cheap, also run by
 *   `impel init messagedb`);
 * - it gives a stream's messages the positions 0, 1, 2, … in global-position order: a missing
 *   index (a deleted message, or one inserted with a wrong position) is a permanent gap that
 *   halts the stream, and an index that comes after a later one in global-position order was
 *   written around the lock (the stream check, which reads every row of the categories checked).
 *
 * What cannot be seen: rows written around the lock with the right stream positions that
 * committed out of global-position order. The rows then look like `write_message`'s, and a
 * reader that passed the higher position while the lower one was uncommitted has skipped it.
 * PostgreSQL keeps no commit order of rows (unless `track_commit_timestamp` is on, which it is
 * not by default), so no check on the table can find them. Nor can the deletion of a stream's
 * last messages (it leaves no gap).
 *
 * @module
 */
import { errorText } from "../core/failure.ts";
import { type Args, type Command, JSON_OUT } from "./args.ts";
import { messageDb, PG, type Pool, withPostgres } from "./backends.ts";
import { EXIT, notFound } from "./exit.ts";
import { table } from "./table.ts";

/** The global-position sequence against the rows: a problem when rows go above it. */
export interface SequenceCheck {
  /** The sequence's last value (`null` before its first use). */
  readonly last: string | null;
  /** The highest global position in the table (`null` when empty). */
  readonly max: string | null;
  /** Whether every row is at or below the sequence's last value. */
  readonly ok: boolean;
}

/** Compares the global-position sequence with the highest row. */
export async function checkSequence(pool: Pool): Promise<SequenceCheck> {
  const { rows } = await messageDb(() =>
    pool.query(
      `SELECT pg_sequence_last_value(
                pg_get_serial_sequence('message_store.messages', 'global_position')::regclass
              )::text AS last,
              (SELECT max(global_position) FROM message_store.messages)::text AS max`,
    )
  );
  const last = rows[0].last as string | null, max = rows[0].max as string | null;
  return { last, max, ok: max === null || (last !== null && BigInt(max) <= BigInt(last)) };
}

/** What the sequence check found, in a sentence. */
export function sequenceText(s: SequenceCheck): string {
  if (s.ok) return `sequence: ok (last value ${s.last ?? "unused"}, rows up to ${s.max ?? "none"})`;
  return `sequence: rows go up to global position ${s.max} but the sequence is at ${
    s.last ?? "its start"
  }: they were inserted with explicit positions (a restore without setval?), so the next ` +
    `write_message gets a lower position, which readers past ${s.max} never read; ` +
    `fix with SELECT setval(pg_get_serial_sequence('message_store.messages', ` +
    `'global_position'), ${s.max})`;
}

/** The first row of a stream whose index is not the one `write_message` would have given it. */
export interface StreamProblem {
  /** The stream. */
  readonly stream: string;
  /** The row's global position. */
  readonly globalPosition: string;
  /** Its stream index. */
  readonly index: string;
  /** The index `write_message` would have given it (its rank in global-position order). */
  readonly expected: string;
  /** `missing`: the expected index is nowhere in the stream; `order`: it comes later. */
  readonly problem: "missing" | "order";
}

/** The first misplaced row of every stream of `categories` (all when empty) with one. */
export async function checkStreams(pool: Pool, categories: string[]): Promise<StreamProblem[]> {
  const { rows } = await messageDb(() =>
    pool.query(
      `SELECT DISTINCT ON (t.stream_name) t.stream_name AS stream,
              t.global_position::text AS global_position, t.position::text AS index,
              t.expected::text AS expected,
              NOT EXISTS (SELECT 1 FROM message_store.messages m
                           WHERE m.stream_name = t.stream_name AND m.position = t.expected)
                AS missing
         FROM (SELECT stream_name, global_position, position,
                      row_number() OVER (PARTITION BY stream_name ORDER BY global_position) - 1
                        AS expected
                 FROM message_store.messages
                WHERE cardinality($1::text[]) = 0
                   OR message_store.category(stream_name) = ANY($1::text[])) t
        WHERE t.position <> t.expected
        ORDER BY t.stream_name, t.global_position`,
      [categories],
    )
  );
  return rows.map((r) => ({
    stream: r.stream as string,
    globalPosition: r.global_position as string,
    index: r.index as string,
    expected: r.expected as string,
    problem: r.missing ? "missing" : "order",
  }));
}

/** What a stream problem means, in a sentence. */
export function problemText(p: StreamProblem): string {
  return p.problem === "missing"
    ? `index ${p.expected} missing (a deleted message, or one written around write_message): ` +
      `index ${p.index} at global position ${p.globalPosition} and later wait forever`
    : `index ${p.index} at global position ${p.globalPosition} comes after a later index ` +
      `(written around write_message): a reader handles them out of order or stalls`;
}

const UNSEEN = "not detectable: rows written around write_message with the right stream " +
  "positions that committed out of global-position order (see impel check messagedb --help)";

/** `impel check messagedb`: the sequence and stream checks. */
export const checkMessageDb: Command = {
  path: ["check", "messagedb"],
  summary:
    "Looks for rows of a MessageDB table that were not written through write_message, which can make readers skip messages or halt streams.",
  usage: "check messagedb [--url URL] [--category NAME]... [--limit N] [--json]",
  details: `
Two checks. The sequence: every global position must come from the table's sequence; a row above
its last value (inserted with an explicit position) makes the next write_message land below it,
where a reader already past it never looks. The streams: write_message gives a stream's messages
the indexes 0, 1, 2, ... in global-position order; a missing index (a deleted message) halts the
stream for good, and an index after a later one was written around the category lock. The stream
check reads every row of the categories checked (all, unless --category is given).

Not detectable: rows written around write_message (INSERT, COPY) with the right indexes that
committed out of global-position order. They look like write_message's rows, and a reader that
passed the higher position before the lower one committed has skipped it for good; PostgreSQL
does not record the commit order of rows (unless track_commit_timestamp is on). Nor the deletion
of a stream's last messages. Write through write_message, or stop readers while loading in bulk.

Exits 0 when nothing was found, 1 when something was, 4 when a --category has no messages.`,
  options: [
    ...PG,
    {
      name: "category",
      kind: "list",
      arg: "NAME",
      help: "check only these categories (default: every category)",
    },
    {
      name: "limit",
      kind: "string",
      arg: "N",
      fallback: "20",
      help: "most streams listed (the count covers all)",
    },
    JSON_OUT,
  ],
  run: (args) =>
    withPostgres(args, async (pool) => {
      const categories = args.list("category");
      const limit = args.integer("limit", 20, 1);
      for (const category of categories) {
        const { rows } = await messageDb(() =>
          pool.query(
            `SELECT EXISTS (SELECT 1 FROM message_store.messages
                             WHERE message_store.category(stream_name) = $1) AS found`,
            [category],
          )
        );
        if (!rows[0].found) throw notFound(`no messages in category ${category}`);
      }
      const sequence = await checkSequence(pool);
      const streams = await checkStreams(pool, categories);
      const ok = sequence.ok && streams.length === 0;
      if (args.flag("json")) {
        args.io.out(
          JSON.stringify({
            ok,
            sequence,
            streams: streams.slice(0, limit),
            streamsWithProblems: streams.length,
          }) + "\n",
        );
        return ok ? EXIT.ok : EXIT.failed;
      }
      const scope = categories.length ? `categories ${categories.join(", ")}` : "every category";
      args.io.out(`${sequenceText(sequence)}\n`);
      if (streams.length === 0) args.io.out(`streams: ok (${scope})\n`);
      else {
        args.io.out(`streams: ${streams.length} with misplaced messages (${scope}):\n`);
        args.io.out(table([
          ["STREAM", "GLOBAL POSITION", "INDEX", "EXPECTED", "PROBLEM"],
          ...streams.slice(0, limit).map((p) => [
            p.stream,
            p.globalPosition,
            p.index,
            p.expected,
            problemText(p),
          ]),
        ]));
        if (streams.length > limit) args.io.out(`... and ${streams.length - limit} more\n`);
      }
      args.io.out(`${UNSEEN}\n`);
      return ok ? EXIT.ok : EXIT.failed;
    }),
};

/** The sequence check for `impel init messagedb`: a warning on `args.io.err`, never a failure. */
export async function warnAboutSequence(args: Args, pool: Pool): Promise<void> {
  try {
    const sequence = await checkSequence(pool);
    if (!sequence.ok) args.io.err(`warning: ${sequenceText(sequence)}\n`);
  } catch (error) {
    args.io.err(`warning: could not check the global-position sequence: ${errorText(error)}\n`);
  }
}
