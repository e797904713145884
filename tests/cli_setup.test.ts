// The CLI's set-up on a fresh PostgreSQL database (`impel init messagedb` installs MessageDB
// itself), and `impel --version`. Each case creates its own database and drops it afterwards.
import assert from "node:assert/strict";
// @ts-types="@types/pg"
import pg from "pg";
import { type CliIo, EXIT, main } from "../cli.ts";
import { VERSION } from "../version.ts";
import { fetchRelease, fromTarball, schemaSource } from "../cli/messagedb_schema.ts";
import { messageDbInstallScripts, messageDbStore } from "../stores/messagedb.ts";
import { unique, url } from "./support/postgres.ts";

const root = new URL("..", import.meta.url);
const localDir = new URL("node_modules/@eventide/message-db/database/", root);

async function cli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = "", err = "";
  const io: CliIo = {
    out: (t) => void (out += t),
    err: (t) => void (err += t),
    env: () => undefined,
    isTerminal: false,
  };
  const code = await main(args, io);
  return { code, out, err };
}

/** Runs `fn` with the URL of a new empty database, dropped afterwards. */
async function withDatabase(fn: (dbUrl: string) => Promise<void>): Promise<void> {
  const name = unique("impel_fresh_");
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name}`);
    await fn(url.replace(/\/[^/]*$/, `/${name}`));
  } finally {
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await admin.end();
  }
}

async function query(dbUrl: string, text: string): Promise<Record<string, unknown>[]> {
  const client = new pg.Client({ connectionString: dbUrl });
  await client.connect();
  try {
    return (await client.query(text)).rows;
  } finally {
    await client.end();
  }
}

Deno.test("cli init messagedb: installs MessageDB on a fresh database, then is idempotent", async () => {
  await withDatabase(async (dbUrl) => {
    const first = await cli(["init", "messagedb", "--url", dbUrl]);
    assert.equal(first.code, EXIT.ok, first.err);
    assert.match(first.out, /MessageDB \S+ installed from /);
    assert.match(first.out, /notify trigger for channel impel_messagedb installed/);
    assert.match(first.out, /checkpoint table "impel"."checkpoints" is ready/);

    // A plain connection (no search_path option) can use the store: the database carries it.
    const pool = new pg.Pool({ connectionString: dbUrl, max: 2 });
    try {
      const store = messageDbStore(pool);
      await store.append("Order-1", [{ type: "Placed", data: { n: 1 } }], 0);
      const read = await store.readStream("Order-1");
      assert.deepEqual(read.map((e) => e.type), ["Placed"]);
    } finally {
      await pool.end();
    }

    const again = await cli(["init", "messagedb", "--url", dbUrl]);
    assert.equal(again.code, EXIT.ok, again.err);
    assert.match(again.out, /MessageDB \S+ is installed/);
    const rows = await query(dbUrl, "SELECT count(*)::int AS n FROM message_store.messages");
    assert.equal(rows[0].n, 1, "a second init keeps what is there");
  });
});

Deno.test("cli init messagedb: a missing or broken installer installs nothing", async () => {
  await withDatabase(async (dbUrl) => {
    const missing = await cli(["init", "messagedb", "--url", dbUrl, "--sql-dir", "/no/such/dir"]);
    assert.equal(missing.code, EXIT.unavailable);
    assert.match(missing.err, /--sql-dir \/no\/such\/dir holds no install.sh/);

    // A copy of the installer whose write_message script is broken: one transaction, so the
    // scripts that ran before it leave nothing behind and a later init starts afresh.
    const dir = await Deno.makeTempDir();
    try {
      await new Deno.Command("cp", { args: ["-r", localDir.pathname + ".", dir] }).output();
      await Deno.writeTextFile(`${dir}/functions/write-message.sql`, "CREATE FUNCTION broken(");
      const broken = await cli(["init", "messagedb", "--url", dbUrl, "--sql-dir", dir]);
      assert.equal(broken.code, EXIT.failed);
      assert.match(broken.err, /functions\/write-message.sql failed \(nothing was installed\)/);
      const rows = await query(
        dbUrl,
        "SELECT to_regclass('message_store.messages') IS NULL AS absent",
      );
      assert.equal(rows[0].absent, true);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
    const fixed = await cli(["init", "messagedb", "--url", dbUrl, "--sql-dir", localDir.pathname]);
    assert.equal(fixed.code, EXIT.ok, fixed.err);
  });
});

Deno.test("cli init messagedb: the release from the npm registry matches the installed package", async () => {
  const fetched = await fetchRelease();
  assert.match(fetched.from, /^https:\/\/registry\.npmjs\.org\/@eventide\/message-db\/-\//);
  const local = await schemaSource(localDir.pathname, false);
  const [a, b] = await Promise.all([
    messageDbInstallScripts(fetched.read),
    messageDbInstallScripts(local.read),
  ]);
  assert.ok(a.length > 20);
  assert.deepEqual(a, b);
});

Deno.test("cli init messagedb: a tarball that does not match its integrity is refused", async () => {
  const bytes = new Uint8Array([1, 2, 3]);
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-512", bytes));
  const integrity = `sha512-${btoa(String.fromCharCode(...digest))}`;
  bytes[0] = 9;
  await assert.rejects(
    fromTarball(bytes, integrity, "t.tgz"),
    (e: Error & { code?: string }) =>
      e.code === "MessageDbSchemaIntegrity" && /t\.tgz does not match/.test(e.message),
  );
});

Deno.test("cli --version agrees with deno.json and package.json; package.json names the bin", async () => {
  const r = await cli(["--version"]);
  assert.equal(r.code, EXIT.ok);
  assert.equal(r.out, `impel ${VERSION}\n`);
  const deno = JSON.parse(await Deno.readTextFile(new URL("deno.json", root)));
  const pkg = JSON.parse(await Deno.readTextFile(new URL("package.json", root)));
  assert.equal(deno.version, VERSION);
  assert.equal(pkg.version, VERSION);
  assert.equal(pkg.bin.impel, "./cli.ts");
  const head = (await Deno.readTextFile(new URL("cli.ts", root))).split("\n")[0];
  assert.equal(head, "#!/usr/bin/env bun");
});

Deno.test("cli: a backend's driver is fetched only when its command runs (lazy dynamic imports)", async () => {
  const denoDir = await Deno.makeTempDir({ prefix: "impel_deno_dir_" });
  // What a first run downloads, as Deno reports it: a fresh cache, no node_modules, no lockfile.
  const firstRun = async (args: string[]) => {
    const { code, stderr } = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--unstable-lazy-dynamic-imports",
        "--node-modules-dir=none",
        "--no-lock",
        "cli.ts",
        ...args,
      ],
      cwd: root,
      env: { DENO_DIR: denoDir, NO_COLOR: "1" },
      stdout: "null",
      stderr: "piped",
    }).output();
    const downloads = new TextDecoder().decode(stderr).split("\n").filter((l) =>
      l.startsWith("Download")
    );
    return { code, downloads: downloads.join("\n") };
  };
  try {
    const version = await firstRun(["--version"]);
    assert.equal(version.code, EXIT.ok);
    assert.match(version.downloads, /logtape/, "a first run does download (the check can fail)");
    assert.doesNotMatch(version.downloads, /\/pg\b|@aws-sdk|kafkajs/);
    const show = await firstRun(["checkpoints", "show", "--source", "messagedb", "--url", url]);
    // Found or not, it connected: the driver loaded.
    assert.ok(([EXIT.ok, EXIT.notFound] as number[]).includes(show.code), `exit ${show.code}`);
    assert.match(show.downloads, /\/pg\b/, "PostgreSQL's driver, now that a command needs it");
    assert.doesNotMatch(show.downloads, /@aws-sdk|kafkajs/);
  } finally {
    await Deno.remove(denoDir, { recursive: true });
  }
});
