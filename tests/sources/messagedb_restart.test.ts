// Restarts the PostgreSQL server under a running MessageDB source and checks that it reconnects
// (reads and LISTEN) and carries on with nothing lost. Needs the server prepared by
// tools/postgres.sh. When the test runs as root next to a Debian cluster serving the test URL,
// the cluster is really stopped and started (pg_ctlcluster), so connections are refused for a
// while; otherwise (or with IMPEL_PG_OUTAGE=terminate) every connection to the test database is
// terminated (pg_terminate_backend).
import assert from "node:assert/strict";
// @ts-types="@types/pg"
import pg from "pg";
import { run, streamsSink } from "../../core/sink.ts";
import { initPostgresCheckpoints, postgresCheckpoints } from "../../checkpoints/postgres.ts";
import { messageDbStore, type SqlClient } from "../../stores/messagedb.ts";
import {
  installNotifyTrigger,
  messageDbSource,
  poolNotifications,
} from "../../sources/messagedb.ts";
import { sleep } from "../support/core.ts";
import { unique, url } from "../support/postgres.ts";

async function sh(cmd: string, ...args: string[]): Promise<{ ok: boolean; out: string }> {
  try {
    const r = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
    return {
      ok: r.success,
      out: new TextDecoder().decode(r.stdout) + new TextDecoder().decode(r.stderr),
    };
  } catch (e) {
    return { ok: false, out: String(e) };
  }
}

/** The Debian cluster (version, name) serving the test URL's port, if this process may restart it. */
async function restartableCluster(): Promise<[string, string] | undefined> {
  const target = new URL(url);
  if (Deno.env.get("IMPEL_PG_OUTAGE") === "terminate") return undefined;
  if (!["127.0.0.1", "localhost"].includes(target.hostname) || Deno.uid() !== 0) return undefined;
  const list = await sh("pg_lsclusters", "--no-header");
  if (!list.ok) return undefined;
  const port = target.port || "5432";
  for (const line of list.out.split("\n")) {
    const [version, name, p] = line.trim().split(/\s+/);
    if (p === port) return [version, name];
  }
  return undefined;
}

/** Cuts every connection; `down` runs once they are cut, before the server is back. */
async function outage(pool: pg.Pool, down: () => void): Promise<string> {
  const cluster = await restartableCluster();
  if (cluster === undefined) {
    await pool.query(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
    );
    down();
    return "terminated backends";
  }
  const [version, name] = cluster;
  const stop = await sh(
    "pg_ctlcluster",
    "--skip-systemctl-redirect",
    version,
    name,
    "stop",
    "-m",
    "fast",
  );
  assert.ok(stop.ok, stop.out);
  down();
  await sleep(1500); // connections are refused meanwhile
  const start = await sh("pg_ctlcluster", "--skip-systemctl-redirect", version, name, "start");
  assert.ok(start.ok, start.out);
  return `restarted cluster ${version}/${name}`;
}

async function appendRetrying(
  pool: pg.Pool,
  category: string,
  streams: number,
  from: number,
  count: number,
) {
  const store = messageDbStore(pool);
  for (let s = 0; s < streams; s++) {
    const events = Array.from({ length: count }, (_, k) => ({ type: "E", data: { i: from + k } }));
    for (let attempt = 0;; attempt++) {
      try {
        await store.append(`${category}-${s}`, events, from);
        break;
      } catch (e) {
        if (attempt > 50) throw e;
        await sleep(200); // the server may still be starting
      }
    }
  }
}

Deno.test({
  name: "messagedb pipeline: Postgres restarted mid-run, the source reconnects and nothing is lost",
  sanitizeResources: false, // pg's sockets to a stopped server close asynchronously
  sanitizeOps: false,
  fn: async () => {
    const pool = new pg.Pool({ connectionString: url, max: 6, connectionTimeoutMillis: 2000 });
    pool.on("error", () => {}); // idle connections die with the server
    const notifications = poolNotifications(pool, { minRetryMs: 100, maxRetryMs: 500 });
    const schema = unique("cp_");
    const category = unique("Restart");
    let failedReads = 0;
    const counting: SqlClient = {
      async query(text, params) {
        try {
          return await pool.query(text, params);
        } catch (e) {
          if (text.includes("get_category_messages")) failedReads++;
          throw e;
        }
      },
    };
    const controller = new AbortController();
    try {
      await installNotifyTrigger(pool);
      await initPostgresCheckpoints(pool, { schema });
      await appendRetrying(pool, category, 40, 0, 25); // 1000 events

      const checkpoints = postgresCheckpoints(pool, { schema });
      const source = messageDbSource({
        client: counting,
        categories: [category],
        group: "restart",
        checkpoints,
        batchSize: 25,
        tailSleepMs: 20_000, // after the restart only NOTIFY can wake the reader in time
        notifications,
        retryMinMs: 50,
        retryMaxMs: 400,
      });
      const byStream = new Map<string, number[]>();
      let count = 0;
      let markDown!: () => void;
      const serverDown = new Promise<void>((resolve) => markDown = resolve);
      const sink = streamsSink({
        handler: async (stream, events) => {
          let list = byStream.get(stream);
          if (list === undefined) byStream.set(stream, list = []);
          for (const e of events) list.push(e.index);
          count += events.length;
          // hold handling (and so, by backpressure, reading) until the server is down, so that
          // the outage hits the source mid-read
          if (count >= 200) await serverDown;
        },
        maxConcurrentStreams: 2,
        maxReadAhead: 4,
        commitIntervalMs: 100,
        statsIntervalMs: 0,
      });
      const running = run(source, sink, { signal: controller.signal });

      while (count < 200) await sleep(5);
      let atOutage = 0;
      const how = await outage(pool, () => {
        atOutage = count;
        markDown();
      });
      await appendRetrying(pool, category, 40, 25, 25); // 1000 more once the server is back
      const written = performance.now();
      while (count < 2000 && performance.now() - written < 15_000) await sleep(20);
      const caughtUpMs = performance.now() - written;

      assert.equal(count, 2000, `${how}: read ${count} of 2000`);
      assert.ok(atOutage < 500, `the outage should hit mid-read (handled ${atOutage} before it)`);
      for (let s = 0; s < 40; s++) {
        assert.deepEqual(byStream.get(`${category}-${s}`), Array.from({ length: 50 }, (_, i) => i));
      }
      assert.ok(
        failedReads > 0 || how === "terminated backends",
        `${how}: no read failed, so no outage was seen`,
      );
      assert.ok(caughtUpMs < 8_000, `caught up ${caughtUpMs} ms after the writes`);
      // now idle at the tail with a 20 s sleep: only a re-established LISTEN delivers this soon
      await sleep(300);
      const pinged = performance.now();
      await appendRetrying(pool, category, 1, 50, 1);
      while (count < 2001 && performance.now() - pinged < 5_000) await sleep(5);
      const pingMs = performance.now() - pinged;
      assert.equal(count, 2001, "an append after the restart was not delivered within 5 s");
      assert.ok(pingMs < 2_000, `append after the restart delivered in ${pingMs} ms`);
      controller.abort();
      await running;
      // the commits that failed during the outage were retried: the final one is at the end
      const { rows } = await pool.query(
        "SELECT max(global_position)::text AS max FROM message_store.messages WHERE stream_name LIKE $1",
        [`${category}-%`],
      );
      const key = { source: "messagedb", tranche: category, group: "restart" };
      assert.equal(await checkpoints.load(key), BigInt(rows[0].max) + 1n);
      console.log(
        `${how} after ${atOutage} events; ${failedReads} failed reads; caught up in ${
          caughtUpMs.toFixed(0)
        } ms; a later append in ${pingMs.toFixed(1)} ms`,
      );
    } finally {
      controller.abort();
      await notifications.close();
      await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => {});
      await pool.end();
    }
  },
});
