// A DynamoDB Local of a fault suite's own (tools/dynamodb.sh on another port, with its pid and log
// files apart and its tables in a directory, so that they survive a stop or a SIGKILL of the
// server), clients for it, and throwaway tables. The shared instance on 8000 is never touched.
//
//   const dynamo = ownDynamo();   // 127.0.0.1:18000, files under /dev/shm/impel-dynamo-fault-18000
//   await dynamo.server("reset");          // started empty
//   await using t = await dynamo.tables({ events: "events", index: "index" });
//   await dynamo.server("kill"); await dynamo.server("start");   // a crash; the tables are kept
import { DeleteTableCommand, DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { DynamoDBStreamsClient } from "@aws-sdk/client-dynamodb-streams";
import { createCheckpointTable } from "../../../checkpoints/dynamo.ts";
import { createEventTable } from "../../../stores/dynamo.ts";
import { createIndexTable } from "../../../stores/dynamo-index.ts";

const root = new URL("../../../", import.meta.url).pathname;

// The tables go to tmpfs where there is one: SQLite's syncs to disk make DynamoDB Local's writes
// several times slower, and a kill of the server (not of the machine) keeps tmpfs files anyway.
function shm(): string {
  try {
    return Deno.statSync("/dev/shm").isDirectory ? "/dev/shm" : "/tmp";
  } catch {
    return "/tmp";
  }
}

const creators = {
  events: createEventTable,
  index: createIndexTable,
  checkpoints: createCheckpointTable,
};

/**
 * What is done to the suite's instance: `tools/dynamodb.sh start`, `stop` or `kill`, or `reset`:
 * stopped, its tables removed, and started again.
 */
export type ServerCommand = "start" | "stop" | "kill" | "reset";

/** A DynamoDB Local of the suite's own. */
export interface OwnDynamo {
  /** Its URL, for the child processes. */
  readonly endpoint: string;
  readonly client: DynamoDBClient;
  readonly streamsClient: DynamoDBStreamsClient;
  /**
   * Runs `tools/dynamodb.sh` on it. `reset` starts it empty, with a fresh JVM: a scenario then
   * neither inherits the last one's tables and streams nor a server slowed by its load.
   */
  server(command: ServerCommand): Promise<void>;
  /** Creates one table per field (named `fault-{kind}-{uuid}`); disposing deletes them. */
  tables<const T extends Record<string, keyof typeof creators>>(
    tables: T,
  ): Promise<{ readonly [K in keyof T]: string } & AsyncDisposable>;
}

/** The instance on `port` (DYNAMODB_FAULT_PORT, default 18000) with its files under `dir`. */
export function ownDynamo(
  port = Number(Deno.env.get("DYNAMODB_FAULT_PORT") ?? 18000),
  dir = `${shm()}/impel-dynamo-fault-${port}`,
): OwnDynamo {
  const endpoint = `http://127.0.0.1:${port}`;
  const config = {
    endpoint,
    region: "local",
    credentials: { accessKeyId: "local", secretAccessKey: "local" },
  };
  const client = new DynamoDBClient(config);
  return {
    endpoint,
    client,
    streamsClient: new DynamoDBStreamsClient(config),
    async server(command) {
      if (command !== "reset") return await run(command);
      await run("stop");
      await Deno.remove(`${dir}/db`, { recursive: true }).catch(() => {});
      await run("start");
    },
    async tables<const T extends Record<string, keyof typeof creators>>(tables: T) {
      const id = crypto.randomUUID().slice(0, 8);
      const names: Record<string, string> = {};
      const created: string[] = [];
      const dispose = async () => {
        for (const TableName of created) {
          await client.send(new DeleteTableCommand({ TableName })).catch(() => {});
        }
      };
      try {
        for (const [field, kind] of Object.entries(tables)) {
          const name = `fault-${kind}-${id}`;
          await creators[kind](client, name);
          created.push(name);
          names[field] = name;
        }
      } catch (e) {
        await dispose();
        throw e;
      }
      return { ...names, [Symbol.asyncDispose]: dispose } as
        & { readonly [K in keyof T]: string }
        & AsyncDisposable;
    },
  };

  async function run(command: "start" | "stop" | "kill"): Promise<void> {
    const { success, stderr } = await new Deno.Command("bash", {
      args: [`${root}tools/dynamodb.sh`, command],
      env: {
        DYNAMODB_PORT: String(port),
        DYNAMODB_RUN_DIR: `${dir}/run`,
        DYNAMODB_DB_PATH: `${dir}/db`,
      },
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(stderr).trim();
    if (!success) throw new Error(`tools/dynamodb.sh ${command} failed: ${text}`);
  }
}
