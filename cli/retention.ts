/**
 * The `retention run` command: one pass of the PostgreSQL retention job with rules from a JSON
 * file, for a cron job or an operator. Internal to the `impel` command line.
 *
 * @module
 */
import { readFile } from "node:fs/promises";
import { InvalidArgumentError } from "../core/errors.ts";
import { errorText } from "../core/failure.ts";
import { type Command, JSON_OUT } from "./args.ts";
import { load, PG, withPostgres } from "./backends.ts";
import { notFound, usage } from "./exit.ts";
import { table } from "./table.ts";

/** `impel retention run`: one pass over the rules of a file. */
export const retentionRun: Command = {
  path: ["retention", "run"],
  summary: "Makes one retention pass over MessageDB categories and queue dead letters.",
  usage:
    "retention run [--url URL] --rules FILE [--schema NAME] [--queue-schema NAME] [--batch-size N] [--json]",
  details: "FILE holds a JSON array of rules, first match wins, e.g.\n" +
    '  [{ "target": "category", "match": "Audit", "policy": {} },\n' +
    '   { "target": "category", "match": "*", "policy": { "maxAgeMs": 2592000000 } },\n' +
    '   { "target": "queue", "match": "*", "policy": { "maxCount": 10000 }, "archive": true }]\n' +
    "Tables come from initPostgresRetention (and initPostgresQueues for queue rules).",
  options: [
    ...PG,
    { name: "rules", kind: "string", arg: "FILE", help: "JSON file of retention rules" },
    {
      name: "schema",
      kind: "string",
      arg: "NAME",
      fallback: "impel",
      help: "schema of the horizon and archive tables",
    },
    {
      name: "queue-schema",
      kind: "string",
      arg: "NAME",
      fallback: "impel",
      help: "schema of the queue tables",
    },
    { name: "batch-size", kind: "string", arg: "N", help: "rows scanned per statement (1000)" },
    JSON_OUT,
  ],
  async run(args) {
    const file = args.required("rules");
    let rules: unknown;
    try {
      rules = JSON.parse(await readFile(file, "utf8"));
    } catch (error) {
      throw usage(`--rules ${file}: not a readable JSON file (${errorText(error)})`);
    }
    const batchSize = args.integer("batch-size", 1000, 1);
    return await withPostgres(args, async (pool) => {
      const m = await load("retention/postgres.ts", () => import("../retention/postgres.ts"));
      let job;
      try {
        job = m.postgresRetention(pool, {
          rules: rules as never,
          schema: args.string("schema"),
          queueSchema: args.string("queue-schema"),
          batchSize,
        });
      } catch (error) {
        if (error instanceof InvalidArgumentError) throw usage(`--rules ${file}: ${error.message}`);
        throw error;
      }
      let report;
      try {
        report = await job.runOnce();
      } catch (error) {
        if (error instanceof m.RetentionTablesMissingError) throw notFound(error.message);
        throw error;
      }
      if (args.flag("json")) {
        args.io.out(JSON.stringify(report) + "\n");
        return 0;
      }
      const rows = [
        ...Object.entries(report.categories).map(([n, r]) => ["category", n, r]),
        ...Object.entries(report.queues).map(([n, r]) => ["queue", n, r]),
      ] as Array<[string, string, { removed: number; archived: number }]>;
      args.io.out(table([
        ["TARGET", "NAME", "REMOVED", "ARCHIVED"],
        ...rows.map(([t, n, r]) => [t, n, String(r.removed), String(r.archived)]),
      ]));
      args.io.out(
        `${rows.length === 0 ? "nothing to remove" : "done"} in ${
          Math.round(report.durationMs)
        } ms\n`,
      );
      return 0;
    });
  },
};
