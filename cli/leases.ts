/**
 * The `leases list` command: who holds which slot of a consumer group with leases, since when,
 * until when, and which members are live, from the PostgreSQL lease table. Internal to the
 * `impel` command line.
 *
 * @module
 */
import type { ScopedLeaseView } from "../core/lease.ts";
import { type Command, JSON_OUT } from "./args.ts";
import { load, PG, withPostgres } from "./backends.ts";
import { EXIT, notFound } from "./exit.ts";
import { table } from "./table.ts";

const seconds = (ms: number) => (ms / 1000).toFixed(1);

// Slots in their numeric order (Order-2/12 before Order-10/12), as a reader counts them.
const collator = new Intl.Collator("en", { numeric: true });

/** `impel leases list`: the leases and members of every scope, or of one. */
export const leasesList: Command = {
  path: ["leases", "list"],
  summary: "Lists the leases and members of consumer groups with leases.",
  usage: "leases list [--url URL] [--scope NAME] [--schema NAME] [--table NAME] [--json]",
  details: "A scope is <source>/<group>, e.g. messagedb/reactor. Times are the database's. " +
    "A lease whose expiry has passed is free: its former owner shows in brackets. " +
    "Units sort numerically; UNITS is how many units each member says it works on " +
    "(members of one scope must agree). " +
    "Exits 4 when there is no lease table or nothing in it.",
  options: [
    { name: "scope", kind: "string", arg: "NAME", help: "only this scope" },
    ...PG,
    {
      name: "schema",
      kind: "string",
      arg: "NAME",
      fallback: "impel",
      help: "schema of the lease table",
    },
    { name: "table", kind: "string", arg: "NAME", fallback: "leases", help: "lease table" },
    JSON_OUT,
  ],
  async run(args) {
    const scope = args.string("scope");
    return await withPostgres(args, async (pool) => {
      const m = await load("leases/postgres.ts", () => import("../leases/postgres.ts"));
      const store = m.postgresLeases(pool, {
        schema: args.string("schema"),
        table: args.string("table"),
      });
      let views: readonly ScopedLeaseView[];
      try {
        views = await store.list(scope);
      } catch (error) {
        if (error instanceof m.LeaseTableMissingError) {
          throw notFound(error.message);
        }
        throw error;
      }
      views = views.filter((v) => v.leases.length > 0 || v.members.length > 0);
      if (args.flag("json")) {
        args.io.out(
          JSON.stringify(views, (_, v) => typeof v === "bigint" ? v.toString() : v) + "\n",
        );
      } else if (views.length > 0) {
        const leases = [[
          "SCOPE",
          "UNIT",
          "OWNER",
          "GENERATION",
          "HELD FOR",
          "EXPIRES IN",
          "ASKED BY",
        ]];
        const members = [["SCOPE", "MEMBER", "STATE", "LAST HEARTBEAT", "JOINED", "UNITS"]];
        for (const v of views) {
          const sorted = [...v.leases].sort((a, b) => collator.compare(a.unit, b.unit));
          for (const l of sorted) {
            const live = l.owner !== undefined && l.expiresAt > v.now;
            leases.push([
              v.scope,
              l.unit,
              l.owner === undefined ? "-" : live ? l.owner : `(${l.owner})`,
              l.generation.toString(),
              live && l.acquiredAt !== undefined ? `${seconds(v.now - l.acquiredAt)} s` : "-",
              live ? `${seconds(l.expiresAt - v.now)} s` : "free",
              l.requestedBy ?? "-",
            ]);
          }
          for (const b of v.members) {
            members.push([
              v.scope,
              b.member,
              b.expiresAt > v.now ? "live" : "gone",
              `${seconds(v.now - b.renewedAt)} s ago`,
              b.joinedAt === undefined ? "-" : `${seconds(v.now - b.joinedAt)} s ago`,
              b.units?.split(":")[0] ?? "-",
            ]);
          }
        }
        args.io.out(table(leases));
        if (members.length > 1) args.io.out("\n" + table(members));
      }
      if (views.length === 0) {
        args.io.err(`no leases${scope === undefined ? "" : ` in scope ${scope}`}\n`);
        return EXIT.notFound;
      }
      return EXIT.ok;
    });
  },
};
