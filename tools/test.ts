/**
 * The test task: starts the servers the backend tests use (PostgreSQL with the MessageDB schema,
 * a Kafka broker, DynamoDB Local, Azurite, a local Cosmos DB), runs the Deno test suite, and stops
 * the servers it started.
 *
 *   deno task test                    # everything
 *   deno task test tests/core         # a subset (servers are still prepared)
 *   IMPEL_SERVERS=none deno task test tests/core   # no servers: core and memory tests only
 *   deno task faults                  # the fault suites: tests/faults/*.fault.ts (real processes
 *                                     # killed, brokers restarted); not part of the default run
 *   deno task faults tests/faults/kafka.fault.ts   # one of them
 *   deno task test:bun                # the same suite under `bun test` (through the Deno shim of
 *                                     # tests/bun/, see bunfig.toml), tests/bun/ included and
 *                                     # tests/faults/ left out
 *   deno task test:bun tests/core     # a subset (Bun's path filters)
 */
const root = new URL("..", import.meta.url).pathname;
const servers = (Deno.env.get("IMPEL_SERVERS") ?? "postgres,kafka,dynamodb,azurite,cosmos").split(
  ",",
)
  .filter((
    s,
  ) => s && s !== "none");

async function sh(script: string, ...args: string[]): Promise<boolean> {
  const { success } = await new Deno.Command("bash", {
    args: [`${root}tools/${script}`, ...args],
    cwd: root,
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  if (!success) console.error(`tools/${script} ${args.join(" ")} failed`);
  return success;
}

function faultSuites(): string[] {
  const dir = `${root}tests/faults/`;
  const files: string[] = [];
  try {
    for (const e of Deno.readDirSync(dir)) {
      if (e.isFile && e.name.endsWith(".fault.ts")) files.push(`tests/faults/${e.name}`);
    }
  } catch {
    // no fault suites yet
  }
  return files.sort();
}

/** The Bun of node_modules (CI installs it there), else the one on PATH. */
function bunPath(): string {
  const local = `${root}node_modules/.bin/bun`;
  try {
    Deno.statSync(local);
    return local;
  } catch {
    return "bun";
  }
}

async function running(server: string): Promise<boolean> {
  const { success } = await new Deno.Command("bash", {
    args: [`${root}tools/${server}.sh`, "status"],
    cwd: root,
    stdout: "null",
    stderr: "null",
  }).output();
  return success;
}

const started: string[] = [];
let ok = true;
try {
  for (const server of servers) {
    if (server === "postgres") ok = await sh("postgres.sh", "impel_test") && ok;
    // A server that is already up (a developer's own, another run's) is used and left running.
    else if (await running(server)) continue;
    else if (await sh(`${server}.sh`, "start")) started.push(server);
    else ok = false;
  }
  if (!ok) console.error("some servers did not start: their tests will fail");
  // Fault suites are named *.fault.ts so that the default run (deno test tests/) skips them.
  const faults = Deno.args[0] === "--faults";
  const bun = Deno.args[0] === "--bun";
  const args = faults || bun ? Deno.args.slice(1) : Deno.args;
  const paths = args.length ? args : faults ? faultSuites() : ["tests/"];
  // Under Bun each file gets a fresh global (--isolate), as each file is its own module graph
  // under Deno. tests/faults/ (fault suites and their helpers' tests) stays out of the Bun run.
  const [bin, command] = bun
    ? [bunPath(), ["test", "--isolate", "--path-ignore-patterns=tests/faults/**", ...paths]]
    : [Deno.execPath(), ["test", "--allow-all", ...paths]];
  const { code } = await new Deno.Command(bin, {
    args: command,
    cwd: root,
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  Deno.exitCode = code;
} finally {
  for (const server of started.reverse()) await sh(`${server}.sh`, "stop");
}
