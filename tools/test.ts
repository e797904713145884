/**
 * The test task: starts the servers the backend tests use (PostgreSQL with the MessageDB schema,
 * a Kafka broker, DynamoDB Local), runs the Deno test suite, and stops the servers it started.
 *
 *   deno task test                    # everything
 *   deno task test tests/core         # a subset (servers are still prepared)
 *   IMPEL_SERVERS=none deno task test tests/core   # no servers: core and memory tests only
 */
const root = new URL("..", import.meta.url).pathname;
const servers = (Deno.env.get("IMPEL_SERVERS") ?? "postgres,kafka,dynamodb").split(",").filter((
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

const started: string[] = [];
let ok = true;
try {
  for (const server of servers) {
    if (server === "postgres") ok = await sh("postgres.sh", "impel_test") && ok;
    else if (await sh(`${server}.sh`, "start")) started.push(server);
    else ok = false;
  }
  if (!ok) console.error("some servers did not start: their tests will fail");
  const paths = Deno.args.length ? Deno.args : ["tests/"];
  const { code } = await new Deno.Command(Deno.execPath(), {
    args: ["test", "--allow-all", ...paths],
    cwd: root,
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  Deno.exitCode = code;
} finally {
  for (const server of started.reverse()) await sh(`${server}.sh`, "stop");
}
