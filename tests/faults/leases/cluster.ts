// A cluster of real member processes (member.ts) on one category of the real MessageDB, for the
// lease process tests (tests/leases/processes.test.ts, short) and the fault suite
// (tests/faults/leases.fault.ts, long): a fresh schema for the lease and checkpoint tables, a
// fresh category, members spawned, killed, paused and stopped, an optional writer, the logs, and
// the figures of analyse.ts. Nothing here asserts: the callers do.
// @ts-types="@types/pg"
import pg from "pg";
import { initPostgresCheckpoints } from "../../../checkpoints/postgres.ts";
import { initPostgresLeases, type LeaseView, postgresLeases } from "../../../leases/postgres.ts";
import { messageDbStore } from "../../../stores/messagedb.ts";
import { unique, url } from "../../support/postgres.ts";
import { type Child, exitWithin, spawnScript } from "../support/process.ts";
import { analyseLeases, type LeaseFigures, type MemberRun } from "./analyse.ts";

/** Lease timing of the members (ms). */
export interface Timing {
  readonly durationMs: number;
  readonly heartbeatMs: number;
  readonly handoverMs: number;
}

/** The timing of the short runs: a dead member's slots move within 2.3 s. */
export const SHORT_TIMING: Timing = { durationMs: 2000, heartbeatMs: 300, handoverMs: 1000 };

/** One member process. */
export interface Member {
  readonly name: string;
  readonly child: Child;
  readonly log: string;
  killedAt?: number;
  paused?: { from: number; to: number };
  stopped?: boolean;
}

/** Options of {@linkcode createCluster}. */
export interface ClusterOptions {
  readonly slots: number;
  readonly timing: Timing;
  readonly handlerMs?: number;
}

/** A running cluster; `close` drops everything it made. */
export interface Cluster {
  readonly pool: pg.Pool;
  readonly category: string;
  readonly schema: string;
  readonly dir: string;
  readonly members: Member[];
  /**
   * Spawns a member; resolves once it logged `ready`. `handlerMs` overrides the cluster's for
   * this member.
   */
  /**
   * Starts a member; `commitIntervalMs` is its sink's (200 ms unless given: a long one keeps its
   * completed work uncommitted until a revocation or stop commits it).
   */
  spawn(name?: string, handlerMs?: number, commitIntervalMs?: number): Promise<Member>;
  /** SIGKILL. */
  kill(m: Member): Promise<void>;
  /** SIGTERM and wait for a clean exit. */
  stop(m: Member): Promise<void>;
  /**
   * SIGSTOP for `ms`, then SIGCONT. With `busy`, asked once the process has stopped: while it
   * answers false (say, no call in flight in the log), the process is let go on at once and
   * stopped again a moment later (up to 10 s), so that the pause surely catches what `busy` saw.
   */
  pause(m: Member, ms: number, busy?: () => Promise<boolean>): Promise<void>;
  /** Appends `perStream` events to each of streams `[0, streams)`, at any version. */
  seed(streams: number, perStream: number): Promise<void>;
  /** Appends a few events to random streams until the returned function is called. */
  write(streams: number, random: () => number): () => Promise<void>;
  /** Waits until every written event was handled by an ended call (from the logs). */
  awaitHandled(timeoutMs: number): Promise<void>;
  /** Live slot owners now: owner → number of slots. */
  owners(): Promise<Map<string, number>>;
  /** The lease table of the group now, times on the database's clock. */
  leases(): Promise<LeaseView>;
  /** From `m`'s log: its calls that handle index `from` or later, and those not ended yet. */
  calls(m: Member, from?: number): Promise<{ started: number; open: number }>;
  /** The figures from the logs so far. */
  figures(): Promise<LeaseFigures>;
  /** Stops the live members, then drops the schema and the category. */
  close(keepLogs?: boolean): Promise<void>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits until the process is stopped (state T in /proc; up to 2 s, then goes on anyway). */
async function stoppedProcess(pid: number) {
  const deadline = performance.now() + 2_000;
  while (performance.now() < deadline) {
    const stat = await Deno.readTextFile(`/proc/${pid}/stat`).catch(() => "");
    // The state follows the command name in parentheses, which may hold spaces.
    if (/^[Tt]$/.test(stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3))) return;
    await sleep(1);
  }
}
/** The lease scope of the members (member.ts: group "leased" of the MessageDB source). */
const SCOPE = "messagedb/leased";
const epoch = () => performance.timeOrigin + performance.now();

/** Creates the tables and category of a cluster (no members yet). */
export async function createCluster(options: ClusterOptions): Promise<Cluster> {
  const pool = new pg.Pool({ connectionString: url, max: 6 });
  pool.on("error", () => {});
  const category = unique("Leased", 10);
  const schema = unique("leases_", 10);
  const dir = await Deno.makeTempDir({ prefix: "impel-leases-" });
  await initPostgresLeases(pool, { schema });
  await initPostgresCheckpoints(pool, { schema });
  const members: Member[] = [];
  const writers = new Set<() => Promise<void>>();
  const store = messageDbStore(pool);
  let count = 0;

  const readLogs = async (): Promise<MemberRun[]> =>
    await Promise.all(members.map(async (m) => ({
      member: m.name,
      log: await Deno.readTextFile(m.log).catch(() => ""),
      ...(m.killedAt === undefined ? {} : { killedAt: m.killedAt }),
      ...(m.paused === undefined ? {} : { paused: m.paused }),
    })));
  const written = async () => {
    const { rows } = await pool.query(
      `SELECT stream_name AS stream, count(*)::int AS n,
              MOD(@message_store.hash_64(message_store.cardinal_id(stream_name)), $2) AS slot
         FROM message_store.messages WHERE message_store.category(stream_name) = $1
        GROUP BY stream_name`,
      [category, options.slots],
    );
    const counts = new Map<string, number>(), slots = new Map<string, string>();
    for (const r of rows) {
      counts.set(r.stream, r.n);
      slots.set(r.stream, `${category}-${r.slot}/${options.slots}`);
    }
    return { counts, slots };
  };
  const figures = async () => {
    const { counts, slots } = await written();
    return analyseLeases(await readLogs(), counts, (s) => slots.get(s) ?? "?");
  };

  const cluster: Cluster = {
    pool,
    category,
    schema,
    dir,
    members,
    async spawn(name = `m${count}`, handlerMs = options.handlerMs ?? 10, commitIntervalMs = 200) {
      count++;
      const log = `${dir}/${name}.log`;
      const child = spawnScript("tests/faults/leases/member.ts", {
        env: {
          IMPEL_PG_URL: url,
          LEASE_CATEGORY: category,
          LEASE_SCHEMA: schema,
          LEASE_LOG: log,
          LEASE_MEMBER: name,
          LEASE_SLOTS: String(options.slots),
          LEASE_DURATION_MS: String(options.timing.durationMs),
          LEASE_HEARTBEAT_MS: String(options.timing.heartbeatMs),
          LEASE_HANDOVER_MS: String(options.timing.handoverMs),
          HANDLER_MS: String(handlerMs),
          COMMIT_INTERVAL_MS: String(commitIntervalMs),
        },
        stderrPath: `${dir}/${name}.err`,
      });
      const m: Member = { name, child, log };
      members.push(m);
      const deadline = performance.now() + 30_000;
      while (!(await Deno.readTextFile(log).catch(() => "")).startsWith("ready")) {
        if (performance.now() > deadline) throw new Error(`${name} did not start`);
        await sleep(50);
      }
      return m;
    },
    async kill(m) {
      m.killedAt = epoch();
      m.child.kill("SIGKILL");
      await m.child.status;
    },
    async stop(m) {
      m.stopped = true;
      m.child.kill("SIGTERM");
      // Deno has been seen to miss a SIGTERM under load (the member never logs it): send it again.
      for (let i = 0; i < 10; i++) {
        const exited = await Promise.race([m.child.status.then(() => true), sleep(1000)]);
        if (exited || (await Deno.readTextFile(m.log)).includes("\nsigterm")) break;
        console.warn(`${m.name} did not see SIGTERM after ${i + 1} s: sending it again`);
        m.child.kill("SIGTERM");
      }
      const status = await exitWithin(m.child, 20_000, `${m.name}'s clean stop`);
      if (status.code !== 0) {
        throw new Error(
          `${m.name} exited ${status.code}: ${await Deno.readTextFile(`${dir}/${m.name}.err`)}`,
        );
      }
    },
    async pause(m, ms, busy) {
      const giveUp = performance.now() + 10_000;
      for (;;) {
        m.child.kill("SIGSTOP");
        // Taken once it has stopped: a call it logged between a time taken before the kill and
        // the stop was counted as started after the pause, and its overlap with the new owner's
        // calls as a real one (8 overlaps in a run paused just as a burst's calls began).
        await stoppedProcess(m.child.pid);
        if (busy === undefined || performance.now() > giveUp || await busy()) break;
        m.child.kill("SIGCONT");
        await sleep(5 + Math.random() * 20);
      }
      const from = epoch();
      await sleep(ms);
      m.child.kill("SIGCONT");
      m.paused = { from, to: epoch() };
    },
    async seed(streams, perStream) {
      for (let k = 0; k < perStream; k += 5) {
        const events = Array.from(
          { length: Math.min(5, perStream - k) },
          (_, i) => ({ type: "Happened", data: { i: k + i } }),
        );
        await Promise.all(
          Array.from(
            { length: streams },
            (_, s) => store.append(`${category}-${s}`, events, "any"),
          ),
        );
      }
    },
    write(streams, random) {
      let writing = true;
      const done: Promise<void> = (async () => {
        for (let n = 0; writing; n++) {
          const s = Math.floor(random() * streams);
          const events = Array.from(
            { length: 1 + Math.floor(random() * 3) },
            (_, i) => ({ type: "Late", data: { n, i } }),
          );
          await store.append(`${category}-${s}`, events, "any");
          await sleep(5 + random() * 20);
        }
      })();
      const stop = async () => {
        writing = false;
        await done;
      };
      writers.add(stop);
      return stop;
    },
    async awaitHandled(timeoutMs) {
      const deadline = performance.now() + timeoutMs;
      for (;;) {
        const f = await figures();
        if (f.lost === 0 && f.events > 0) return;
        if (performance.now() > deadline) {
          throw new Error(`${f.lost} of ${f.events} events unhandled after ${timeoutMs} ms`);
        }
        await sleep(300);
      }
    },
    async owners() {
      const [view] = await postgresLeases(pool, { schema }).list(SCOPE);
      const out = new Map<string, number>();
      for (const l of view.leases) {
        if (l.owner !== undefined && l.expiresAt > view.now) {
          out.set(l.owner, (out.get(l.owner) ?? 0) + 1);
        }
      }
      return out;
    },
    async leases() {
      return (await postgresLeases(pool, { schema }).list(SCOPE))[0];
    },
    async calls(m, from = 0) {
      const open = new Set<string>();
      let started = 0;
      for (const line of (await Deno.readTextFile(m.log).catch(() => "")).split("\n")) {
        const f = line.split("\t");
        if (f[0] === "start") {
          open.add(`${f[1]}:${f[2]}`);
          if (Number(f[3]) > from) started++;
        } else if (f[0] === "end") open.delete(`${f[1]}:${f[2]}`);
      }
      return { started, open: open.size };
    },
    figures,
    async close(keepLogs = false) {
      for (const m of members) {
        if (m.killedAt === undefined && !m.stopped) m.child.kill("SIGKILL");
      }
      await Promise.all(members.map((m) => m.child.status));
      // A test that failed midway left its writer running: stop it before the pool ends.
      await Promise.all([...writers].map((stop) => stop().catch(() => {})));
      await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await pool.query(
        "DELETE FROM message_store.messages WHERE message_store.category(stream_name) = $1",
        [category],
      );
      await pool.end();
      if (keepLogs || Deno.env.get("IMPEL_FAULTS_KEEP") === "1") console.log(`logs kept in ${dir}`);
      else {
        await Deno.remove(dir, { recursive: true }).catch((e) => {
          if (!(e instanceof Deno.errors.NotFound)) throw e;
        });
      }
    },
  };
  return cluster;
}
