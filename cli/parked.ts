/**
 * The `parked` commands: create the park table, list and show parked streams, and ask for a
 * release or a skip, on a PostgreSQL or DynamoDB park store. Internal to the `impel` command
 * line.
 *
 * A release or skip is recorded in the store; the running sink of the group applies it within
 * its park policy's `pollMs` (a stopped one when it next starts), so these commands never handle
 * events themselves.
 *
 * @module
 */
import { InvalidArgumentError } from "../core/errors.ts";
import type { ParkAction, ParkedStream, ParkStore } from "../core/park.ts";
import { sameParkRequest } from "../core/park.ts";
import { type Args, type Command, JSON_OUT, type OptionSpec } from "./args.ts";
import { DYNAMO, load, PG, withDynamo, withPostgres } from "./backends.ts";
import { CliError, EXIT, notFound, usage } from "./exit.ts";
import { table } from "./table.ts";

const STORE: OptionSpec[] = [
  {
    name: "store",
    kind: "string",
    arg: "KIND",
    fallback: "postgres",
    help: "where parked streams are kept: postgres or dynamo",
  },
  ...PG,
  {
    name: "schema",
    kind: "string",
    arg: "NAME",
    fallback: "impel",
    help: "schema of the PostgreSQL park table",
  },
  { name: "table", kind: "string", arg: "NAME", fallback: "parked", help: "park table" },
  ...DYNAMO,
];

const GROUP: OptionSpec = {
  name: "group",
  kind: "string",
  arg: "NAME",
  help: "the consumer group",
};
const STREAM: OptionSpec = { name: "stream", kind: "string", arg: "NAME", help: "the stream" };
const BY: OptionSpec = {
  name: "by",
  kind: "string",
  arg: "NAME",
  env: "USER",
  fallback: "cli",
  help: "who asks, as recorded with the request",
};

/** A store's typed failures as exit codes: not parked or no table is 4, a conflict 1. */
function mapped(error: unknown): never {
  const code = (error as { code?: string })?.code;
  if (error instanceof CliError) throw error;
  if (code === "ParkTableMissing") {
    throw notFound(`${(error as Error).message} (impel parked init creates it)`);
  }
  if (code === "StreamNotParked") throw notFound((error as Error).message);
  if (code === "ParkRequestConflict") {
    throw new CliError(EXIT.failed, code, (error as Error).message, { cause: error });
  }
  if (error instanceof InvalidArgumentError) throw usage(error.message);
  if ((error as Error)?.name === "ResourceNotFoundException") {
    throw notFound(`DynamoDB: ${(error as Error).message} (impel parked init creates it)`);
  }
  if (code === "DynamoParkStore" && /non-existent table|ResourceNotFound/i.test(String(error))) {
    throw notFound(`${(error as Error).message} (impel parked init creates it)`);
  }
  throw error;
}

async function withStore<T>(
  args: Args,
  fn: (store: ParkStore) => Promise<T>,
  init = false,
): Promise<T> {
  const kind = args.choice("store", ["postgres", "dynamo"] as const, "postgres");
  if (kind === "postgres") {
    return await withPostgres(args, async (pool) => {
      const m = await load("parked/postgres.ts", () => import("../parked/postgres.ts"));
      const options = { schema: args.string("schema"), table: args.string("table") };
      try {
        if (init) await m.initPostgresParkStore(pool, options);
        return await fn(m.postgresParkStore(pool, options));
      } catch (error) {
        return mapped(error);
      }
    });
  }
  return await withDynamo(args, async (client) => {
    const m = await load("parked/dynamo.ts", () => import("../parked/dynamo.ts"));
    const tableName = args.required("table");
    try {
      if (init) await m.createParkTable(client, tableName);
      return await fn(m.dynamoParkStore(client, { tableName }));
    } catch (error) {
      return mapped(error);
    }
  });
}

const iso = (ms: number) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
const ago = (ms: number) => {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  return s < 120 ? `${s}s` : s < 7200 ? `${Math.round(s / 60)}m` : `${Math.round(s / 3600)}h`;
};
const stateOf = (e: ParkedStream) =>
  e.state === "failed"
    ? `release failed (asked by ${e.resolution?.by}, applied by ${e.resolution?.appliedBy})`
    : e.state !== "parked"
    ? `${e.state} by ${e.resolution?.by}`
    : e.request === undefined
    ? "parked"
    : `${e.request.action} asked by ${e.request.by}${e.claim ? ` (applying: ${e.claim.by})` : ""}`;

/** `impel parked init`: creates the park table. */
export const parkedInit: Command = {
  path: ["parked", "init"],
  summary: "Creates the park table (PostgreSQL: and its schema; DynamoDB) unless it exists.",
  usage: "parked init [--store postgres|dynamo] [--url URL] [--schema NAME] [--table NAME]",
  options: STORE,
  run: (args) =>
    withStore(args, () => {
      args.io.out(`park table ${args.string("table")} is ready\n`);
      return Promise.resolve(EXIT.ok);
    }, true),
};

/** `impel parked list`: the parked streams of a group, or of every group. */
export const parkedList: Command = {
  path: ["parked", "list"],
  summary: "Lists parked streams with their event counts, errors and pending requests.",
  usage: "parked list [--group NAME] [--resolved] [--store postgres|dynamo] [--json]",
  details:
    "Exits 4 when nothing is parked. Without --group it lists every group (DynamoDB: a scan).",
  options: [
    { ...GROUP, help: "only this consumer group" },
    {
      name: "resolved",
      kind: "boolean",
      help: "also list the history: released and skipped episodes, and releases that failed",
    },
    ...STORE,
    JSON_OUT,
  ],
  async run(args) {
    const group = args.string("group");
    const resolved = args.flag("resolved");
    return await withStore(args, async (store) => {
      const list = await store.list(group, { resolved });
      if (args.flag("json")) args.io.out(JSON.stringify(list) + "\n");
      else if (list.length > 0) {
        args.io.out(table([
          ["GROUP", "STREAM", "EVENTS", "PARKED", "ATTEMPTS", "STATE", "ERROR"],
          ...list.map((e) => [
            e.group,
            e.stream,
            String(e.state === "parked" ? e.events : e.resolution?.events ?? 0),
            `${iso(e.parkedAt)} (${ago(e.parkedAt)} ago)`,
            String(e.attempts),
            stateOf(e),
            e.error.length > 120 ? e.error.slice(0, 117) + "..." : e.error,
          ]),
        ]));
      }
      if (list.length === 0) {
        args.io.err(`no parked streams${group ? ` in group ${group}` : ""}\n`);
        return EXIT.notFound;
      }
      return EXIT.ok;
    });
  },
};

/** `impel parked show`: one parked stream, with its first events. */
export const parkedShow: Command = {
  path: ["parked", "show"],
  summary: "Shows one parked stream: its failure, request or resolution, and its first events.",
  usage: "parked show --group NAME --stream NAME [--events N] [--store postgres|dynamo] [--json]",
  details: "Shows the latest episode (released or skipped ones too); exits 4 when there is none.",
  options: [
    GROUP,
    STREAM,
    {
      name: "events",
      kind: "string",
      arg: "N",
      fallback: "20",
      help: "how many of its events to show",
    },
    ...STORE,
    JSON_OUT,
  ],
  async run(args) {
    const group = args.required("group");
    const stream = args.required("stream");
    const limit = args.integer("events", 20, 0);
    return await withStore(args, async (store) => {
      const entry = await store.get(group, stream);
      if (entry === undefined) {
        throw notFound(`stream ${stream} has never been parked in group ${group}`);
      }
      const events = entry.state === "parked" && limit > 0
        ? await store.events(group, stream, entry.episode, 0, limit)
        : [];
      if (args.flag("json")) {
        const shown = events.map((e) => ({ ...e, data: json(e.data), meta: json(e.meta) }));
        args.io.out(JSON.stringify({ ...entry, eventsShown: shown }) + "\n");
        return EXIT.ok;
      }
      const lines = [
        `stream      ${entry.stream} (group ${entry.group}, episode ${entry.episode})`,
        `state       ${stateOf(entry)}`,
        `parked      ${iso(entry.parkedAt)} (${ago(entry.parkedAt)} ago)`,
        `failures    ${entry.attempts} attempts, first ${iso(entry.firstFailedAt)}, last ${
          iso(entry.lastFailedAt)
        }`,
        `error       ${entry.error}`,
        `events      ${entry.events} parked, indexes ${entry.first} to ${entry.next - 1}`,
      ];
      const r = entry.resolution;
      if (r !== undefined) {
        lines.push(
          `resolved    ${r.action} asked by ${r.by}, applied by ${r.appliedBy} at ${iso(r.at)} ` +
            `(${r.events} events${entry.state === "failed" ? " handled, then it failed" : ""})${
              r.reason ? `: ${r.reason}` : ""
            }`,
        );
      }
      if (entry.request?.reason) lines.push(`reason      ${entry.request.reason}`);
      if (entry.request?.upTo !== undefined) {
        lines.push(
          `bound       the skip drops indexes below ${entry.request.upTo}; later ones stay parked`,
        );
      }
      if (entry.request?.action === "release" && entry.claim !== undefined) {
        // The sink records how far its replay got with each claim renewal (every pollMs).
        lines.push(
          `progress    being replayed by ${entry.claim.by}: handled below index ${entry.first}, ` +
            `${entry.events} left (as of its last renewal; claim until ${iso(entry.claim.until)})`,
        );
      }
      args.io.out(lines.join("\n") + "\n");
      if (events.length > 0) {
        args.io.out(
          "\n" + table([
            ["INDEX", "TYPE", "ID", "TIME"],
            ...events.map((e) => [String(e.index), e.type, e.id, iso(e.time.getTime())]),
          ]),
        );
      }
      return EXIT.ok;
    });
  },
};

/** JSON-safe rendering of event data for `--json` (bytes and bigints as the store tags them). */
function json(value: unknown): unknown {
  return JSON.parse(
    JSON.stringify(value, function (this: Record<string, unknown>, key, v) {
      const raw = this[key];
      if (typeof raw === "bigint") return raw.toString();
      if (raw instanceof Uint8Array) return { bytes: raw.length };
      return v;
    }) ?? "null",
  );
}

function requestCommand(action: ParkAction): Command {
  const skip = action === "skip";
  return {
    path: ["parked", action],
    summary: skip
      ? "Asks for a parked stream's events to be dropped, with the reason recorded."
      : "Asks for a parked stream's events to be replayed through the handler, in order, then handled as usual.",
    usage: `parked ${action} --group NAME --stream NAME${
      skip ? " --reason TEXT" : " [--reason TEXT]"
    }${skip ? " [--to INDEX]" : ""} [--by NAME] [--store postgres|dynamo]`,
    details: `
The request is recorded in the park store and applied by the running sink of the group within its
park policy's pollMs (by a stopped one when it next starts): watch it with impel parked show. Asking
again is harmless (the same request stands); asking it again by someone else or for another reason
is refused (exit 1) while the first stands.${
      skip
        ? " A skip drops only the events parked when it is asked (below --to INDEX if given): those parked since stay parked."
        : ""
    } Exits 4 when the stream is not parked, 1 when ${
      skip ? "a release" : "a skip"
    } of it is being applied.`,
    options: [
      GROUP,
      STREAM,
      {
        name: "reason",
        kind: "string",
        arg: "TEXT",
        help: skip
          ? "why the events may be dropped (recorded)"
          : "why they may be replayed now (recorded; optional)",
      } as OptionSpec,
      ...(skip
        ? [{
          name: "to",
          kind: "string",
          arg: "INDEX",
          help: "drop only the events below this index (default: every event parked now)",
        } as OptionSpec]
        : []),
      BY,
      ...STORE,
    ],
    async run(args) {
      const group = args.required("group");
      const stream = args.required("stream");
      // The store records who asked and why for a release too; only a skip must say why.
      const reason = skip ? args.required("reason", ": a skip records why") : args.string("reason");
      const by = args.string("by") ?? "cli";
      const to = skip && args.string("to") !== undefined ? args.integer("to", 0, 0) : undefined;
      const asked = {
        action,
        by,
        ...(reason === undefined ? {} : { reason }),
        ...(to === undefined ? {} : { upTo: to }),
      };
      return await withStore(args, async (store) => {
        const before = await store.get(group, stream);
        const standing = before?.state === "parked" ? before.request : undefined;
        if (standing?.action === action) {
          if (!sameParkRequest(standing, asked)) {
            throw new CliError(
              EXIT.failed,
              "ParkRequestDiffers",
              `a ${action} of ${stream} asked by ${standing.by}${
                standing.reason === undefined ? "" : ` (${JSON.stringify(standing.reason)})`
              } stands; it is applied as asked (ask again once it is done)`,
            );
          }
          args.io.out(
            `${action} of ${stream} (group ${group}) already asked by ${standing.by}; nothing to do\n`,
          );
          return EXIT.ok;
        }
        const entry = await store.request(group, stream, asked);
        if (entry.state !== "parked") {
          args.io.out(
            `stream ${stream} of group ${group} was already ${entry.state} (by ${entry.resolution?.by} at ${
              iso(entry.resolution!.at)
            }); nothing to do\n`,
          );
          return EXIT.ok;
        }
        const bound = entry.request?.upTo === undefined
          ? ""
          : `, dropping indexes below ${entry.request.upTo}`;
        args.io.out(
          `${action} of ${stream} (group ${group}, ${entry.events} events${bound}) recorded, asked by ${entry.request?.by}; ` +
            `the running sink of the group applies it (impel parked show to follow)\n`,
        );
        return EXIT.ok;
      });
    },
  };
}

/** `impel parked release`: asks for a parked stream to be replayed and resumed. */
export const parkedRelease: Command = requestCommand("release");

/** `impel parked skip`: asks for a parked stream's events to be dropped. */
export const parkedSkip: Command = requestCommand("skip");
