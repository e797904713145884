#!/usr/bin/env bun
/**
 * The `impel` command line: set up backends, inspect and move checkpoints, watch a source,
 * inspect the DynamoDB index, and check a MessageDB table.
 *
 * ```sh
 * deno run -A jsr:@impel/impel/cli <command> [options]    # or: bun run cli.ts <command> [options]
 * ```
 *
 * | command | what it does |
 * | --- | --- |
 * | `init postgres` | creates the PostgreSQL checkpoint table |
 * | `init messagedb` | installs (or with `--uninstall` removes) the MessageDB NOTIFY trigger; warns about rows above the global-position sequence |
 * | `init dynamo` | creates DynamoDB event, index and checkpoint tables |
 * | `init cosmos` | creates the Cosmos DB database, events container and container of checkpoints and leases |
 * | `checkpoints show` | lists the checkpoints of a source (and group) |
 * | `checkpoints set` | sets a checkpoint to a position, the start or the tail, or deletes it; refuses a MessageDB position past its category's tail unless `--force`, and a tranche it holds no checkpoint for unless `--create` |
 * | `tail messagedb\|dynamo\|cosmos` | runs a source into a stats-only sink, printing throughput and lag (Cosmos: throughput only; `tail kafka`: not available, exit 3) |
 * | `index` | shows the DynamoDB index: partitions, open epochs, a stream's entry |
 * | `check messagedb` | looks for rows not written through `write_message` (above the sequence, gaps and disorder in stream indexes) |
 * | `leases list` | the consumer-group leases in PostgreSQL: who holds which slot, generations, expiries, hand-over requests, live members |
 * | `replay` | replays MessageDB categories or streams from a position or a time at a limited rate, with a progress bar; or with `--group --reset-checkpoint` moves a group's checkpoints back to that start (refused while it runs) |
 * | `queue stats\|peek\|requeue-dead` | a PostgreSQL queue's counts by state and oldest message's age, its oldest messages or dead letters (not taken), dead letters back into the queue |
 * | `parked init\|list\|show\|release\|skip` | the park store of parked streams (PostgreSQL or DynamoDB): create it, list and show parked streams, ask a running sink to release (replay) or skip one |
 *
 * Every command takes `--help`. Connections: `--url` or `IMPEL_PG_URL` for PostgreSQL (else
 * libpq's `PG*` variables); `--endpoint` or `IMPEL_DYNAMO_ENDPOINT` and `--region` or
 * `AWS_REGION` for DynamoDB, with credentials from the AWS SDK's usual chain; `--endpoint` or
 * `IMPEL_COSMOS_ENDPOINT`, `--key` or `IMPEL_COSMOS_KEY` and `--database` for Cosmos DB.
 *
 * Exit codes ({@linkcode EXIT}): 0 done; 1 the operation failed; 2 usage error; 3 not available
 * (an impel module or the backend's schema is missing); 4 not found (no checkpoints, no such
 * table or tranche); 5 could not connect; 130 interrupted (Ctrl-C stopped `replay` before it was
 * done, or a second Ctrl-C).
 *
 * @module
 */
import { ImpelError } from "./core/errors.ts";
import { errorText } from "./core/failure.ts";
import { Args, type Command, EXIT_HELP, HELP, helpText, parse } from "./cli/args.ts";
import { CliError, EXIT, isConnectionError, usage } from "./cli/exit.ts";
import { type CliIo, exitProcess, processArgs, processIo } from "./cli/io.ts";
import { initCosmos, initDynamo, initMessageDb, initPostgres } from "./cli/init.ts";
import { checkpointsSet, checkpointsShow } from "./cli/checkpoints.ts";
import { tailCosmos, tailDynamo, tailKafka, tailMessageDb } from "./cli/tail.ts";
import { indexCommand } from "./cli/index_command.ts";
import { checkMessageDb } from "./cli/check.ts";
import { leasesList } from "./cli/leases.ts";
import { parkedInit, parkedList, parkedRelease, parkedShow, parkedSkip } from "./cli/parked.ts";
import { replayCommand } from "./cli/replay.ts";
import { queuePeek, queueRequeueDead, queueStats } from "./cli/queue.ts";
import { retentionRun } from "./cli/retention.ts";
import { VERSION } from "./version.ts";

export { EXIT };
export type { CliIo };

const COMMANDS: readonly Command[] = [
  initPostgres,
  initMessageDb,
  initDynamo,
  initCosmos,
  checkpointsShow,
  checkpointsSet,
  tailMessageDb,
  tailDynamo,
  tailCosmos,
  tailKafka,
  indexCommand,
  checkMessageDb,
  parkedInit,
  parkedList,
  parkedShow,
  parkedRelease,
  parkedSkip,
  leasesList,
  replayCommand,
  queueStats,
  queuePeek,
  queueRequeueDead,
  retentionRun,
];

function overview(prefix: readonly string[] = []): string {
  const list = COMMANDS.filter((c) => prefix.every((p, i) => c.path[i] === p));
  const lines = [
    "impel: set up backends, inspect checkpoints, watch sources.\n",
    `Usage: impel ${
      prefix.length ? prefix.join(" ") + " " : ""
    }<command> [options]   (every command takes --help)`,
    "       impel --version\n",
    "Commands:",
    ...list.map((c) =>
      `  ${c.path.join(" ").padEnd(22)} ${c.summary.split(". ")[0].replace(/\.$/, "")}`
    ),
    "",
    EXIT_HELP,
  ];
  return lines.join("\n") + "\n";
}

/**
 * Runs the CLI with `argv` (without the program name) and returns the exit code; never exits
 * the process itself.
 *
 * @example
 * ```ts
 * import { main } from "@impel/impel/cli";
 * let text = "";
 * const code = await main(["--help"], { out: (t) => void (text += t), err: () => {}, env: () => undefined, isTerminal: false });
 * console.log(code, text.includes("checkpoints show")); // 0 true
 * ```
 */
export async function main(argv: readonly string[], io: CliIo = processIo()): Promise<number> {
  const first = argv.findIndex((a) => a.startsWith("-"));
  const words = first < 0 ? [...argv] : argv.slice(0, first);
  const wantsHelp = argv.includes("--help") || argv.includes("-h");
  const asked = words[0] === "help" ? words.slice(1) : words;
  if (words.length === 0 && argv[0] === "--version") {
    io.out(`impel ${VERSION}\n`);
    return EXIT.ok;
  }
  const command = COMMANDS.find((c) =>
    c.path.length <= asked.length && c.path.every((p, i) => asked[i] === p)
  );
  if (command && words[0] === "help") {
    io.out(helpText(command));
    return EXIT.ok;
  }
  if (!command) {
    const group = COMMANDS.some((c) => c.path[0] === asked[0]) ? asked.slice(0, 1) : [];
    if (
      (asked.length === 0 || (group.length === 1 && asked.length === 1)) &&
      (wantsHelp || words[0] === "help")
    ) {
      io.out(overview(group));
      return EXIT.ok;
    }
    const problem = asked.length === 0
      ? "a command is needed"
      : group.length === 1 && asked.length === 1
      ? `${asked[0]} needs a subcommand`
      : `unknown command ${JSON.stringify(asked.join(" "))}`;
    io.err(`impel: ${problem}\n\n${overview(group)}`);
    return EXIT.usage;
  }
  try {
    const parsed = parse(argv.slice(command.path.length), [...command.options, HELP]);
    if (parsed.values.help) {
      io.out(helpText(command));
      return EXIT.ok;
    }
    if (parsed.positionals.length > (command.positionals ?? 0)) {
      throw usage(`unexpected argument ${JSON.stringify(parsed.positionals[0])}`);
    }
    return await command.run(new Args(command, parsed, io), io);
  } catch (error) {
    if (error instanceof CliError) {
      io.err(`impel ${command.path.join(" ")}: ${error.message}\n`);
      if (error.exitCode === EXIT.usage) {
        io.err(`usage: impel ${command.usage}\n(see impel ${command.path.join(" ")} --help)\n`);
      }
      return error.exitCode;
    }
    if (isConnectionError(error)) {
      io.err(`impel ${command.path.join(" ")}: cannot connect: ${errorText(error)}\n`);
      return EXIT.connection;
    }
    if (error instanceof ImpelError && error.code === "InvalidArgument") {
      io.err(`impel ${command.path.join(" ")}: ${error.message}\n`);
      return EXIT.usage;
    }
    io.err(`impel ${command.path.join(" ")}: ${errorText(error)}\n`);
    return EXIT.failed;
  }
}

if (import.meta.main) exitProcess(await main(processArgs()));
