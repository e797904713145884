// A workflow runner in its own process, holding its category's runner lease in PostgreSQL
// (tests/workflow/owner.test.ts). Env: IMPEL_PG_URL, CATEGORY, NAME (its member id), DURATION_MS.
// Prints `owned <name>` once it delivers, `delivered <send id>` per send, and on a conflict
// `conflict <code> <message>` (exit 3); SIGTERM stops it cleanly (exit 0).
// @ts-types="@types/pg"
import pg from "pg";
import { initPostgresCheckpoints, postgresCheckpoints } from "../../../checkpoints/postgres.ts";
import { initPostgresLeases, postgresLeases } from "../../../leases/postgres.ts";
import { messageDbSource } from "../../../sources/messagedb.ts";
import { messageDbStore } from "../../../stores/messagedb.ts";
import { pingerOf } from "./pinger.ts";
import {
  startWorkflow,
  workflowCategories,
  WorkflowRunnerConflictError,
} from "../../../core/workflow.ts";

const category = Deno.env.get("CATEGORY")!;
const name = Deno.env.get("NAME")!;
const pool = new pg.Pool({
  connectionString: Deno.env.get("IMPEL_PG_URL") ??
    "postgres://postgres@127.0.0.1:5432/impel_test",
  max: 6,
  options: "-c search_path=message_store,public",
});
pool.on("error", () => {});
await initPostgresLeases(pool);
await initPostgresCheckpoints(pool);
const store = messageDbStore(pool);

const pinger = pingerOf(category);
const write = (line: string) => Deno.stdout.writeSync(new TextEncoder().encode(`${line}\n`));
let owned = false;
const runner = startWorkflow(pinger, {
  store,
  source: messageDbSource({
    client: pool,
    categories: workflowCategories(pinger),
    group: `${category}-runner`,
    checkpoints: postgresCheckpoints(pool),
    tailSleepMs: 20,
  }),
  handlers: {
    Ping: (send) => {
      if (!owned) write(`owned ${name}`);
      owned = true;
      write(`delivered ${send.id}`);
    },
  },
  owner: {
    leases: postgresLeases(pool),
    member: name,
    durationMs: Number(Deno.env.get("DURATION_MS")),
  },
});
write(`started ${name}`);
Deno.addSignalListener("SIGTERM", () => void runner.stop());
let code = 0;
try {
  await runner.running;
} catch (error) {
  if (error instanceof WorkflowRunnerConflictError) {
    write(`conflict ${error.code} ${error.message}`);
    code = 3;
  } else {
    write(`failed ${error}`);
    code = 1;
  }
}
await pool.end();
Deno.exit(code);
