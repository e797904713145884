// `impel replay` and `impel queue` against the real PostgreSQL server prepared by
// tools/postgres.sh (IMPEL_PG_URL, default postgres://postgres@127.0.0.1:5432/impel_test). Most
// cases call main() in-process; one runs the CLI as a process under Deno and Bun.
import assert from "node:assert/strict";
import { type CliIo, EXIT, main } from "../cli.ts";
import { initPostgresCheckpoints, postgresCheckpoints } from "../checkpoints/postgres.ts";
import { messageDbCheckpointKey } from "../sources/messagedb.ts";
import { initPostgresQueues, postgresQueues } from "../queues/postgres.ts";
import { seed, unique, url, withSchema } from "./support/postgres.ts";

const root = new URL("..", import.meta.url).pathname;
const bunPath = await Deno.stat(`${root}node_modules/.bin/bun`).then(
  () => `${root}node_modules/.bin/bun`,
  () => undefined,
);

interface Result {
  code: number;
  out: string;
  err: string;
}

async function cli(args: string[], isTerminal = false, signal?: AbortSignal): Promise<Result> {
  let out = "", err = "";
  const io: CliIo = {
    out: (t) => void (out += t),
    err: (t) => void (err += t),
    env: (name) => ({ IMPEL_PG_URL: url } as Record<string, string>)[name],
    isTerminal,
    signal,
  };
  const code = await main(args, io);
  return { code, out, err };
}

async function spawn(runtime: "deno" | "bun", args: string[]): Promise<Result> {
  const bin = runtime === "deno" ? Deno.execPath() : bunPath!;
  const command = new Deno.Command(bin, {
    args: runtime === "deno" ? ["run", "-A", "cli.ts", ...args] : ["run", "cli.ts", ...args],
    cwd: root,
    env: { IMPEL_PG_URL: url, NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  });
  const { code, stdout, stderr } = await command.output();
  const dec = new TextDecoder();
  return { code, out: dec.decode(stdout), err: dec.decode(stderr) };
}

Deno.test("cli replay: help and usage errors", async () => {
  const help = await cli(["replay", "--help"]);
  assert.equal(help.code, EXIT.ok);
  assert.match(help.out, /Usage: impel replay/);
  assert.match(help.out, /--reset-checkpoint/);
  const top = await cli(["--help"]);
  for (const c of ["replay", "queue stats", "queue peek", "queue requeue-dead"]) {
    assert.ok(top.out.includes(`  ${c} `), c);
  }
  const cases: Array<[string[], RegExp]> = [
    [["replay", "--from-position", "1"], /--category or --stream is required/],
    [["replay", "--category", "A"], /one of --from-time and --from-position/],
    [["replay", "--category", "A", "--from-position", "x"], /--from-position must be/],
    [["replay", "--category", "A", "--from-time", "yesterday"], /--from-time must be/],
    [["replay", "--category", "A", "--from-position", "1", "--rate", "0"], /--rate must be/],
    [
      ["replay", "--category", "A", "--from-position", "1", "--group", "g"],
      /needs --reset-checkpoint/,
    ],
    [["replay", "--category", "A", "--from-position", "1", "--reset-checkpoint"], /needs --group/],
    [["queue", "stats"], /--queue is required/],
  ];
  for (const [args, message] of cases) {
    const r = await cli(args);
    assert.equal(r.code, EXIT.usage, args.join(" "));
    assert.match(r.err, message, args.join(" "));
  }
});

Deno.test("cli replay --print: the events as JSON lines, progress on stderr", async () => {
  await withSchema(async (pool) => {
    const category = unique("Replay");
    await seed(pool, category, 3, 4);
    const r = await cli(["replay", "--category", category, "--from-position", "0", "--print"]);
    assert.equal(r.code, EXIT.ok, r.err);
    const lines = r.out.trim().split("\n").map((l) => JSON.parse(l));
    assert.equal(lines.length, 12);
    assert.ok(lines.every((l) => l.stream.startsWith(`${category}-`) && l.type === "Happened"));
    assert.match(r.err, /completed: 12 events/);
  });
});

Deno.test("cli replay from a time at a rate: plain progress lines, a bar on a terminal, JSON", async () => {
  await withSchema(async (pool) => {
    const category = unique("Replay");
    await seed(pool, category, 6, 3);
    await new Promise((r) => setTimeout(r, 20));
    const { rows } = await pool.query("SELECT now() AS now");
    const time = new Date(rows[0].now).toISOString();
    await new Promise((r) => setTimeout(r, 20));
    await seed(pool, category, 6, 10, 3); // 60 after
    const args = ["replay", "--category", category, "--from-time", time, "--rate", "60"];
    const plain = await cli([...args, "--interval", "0.3"]);
    assert.equal(plain.code, EXIT.ok, plain.err);
    assert.match(plain.err, /is global position \d+/);
    assert.ok(!plain.out.includes("\r"), "no redraw off a terminal");
    assert.ok(!/\[[#-]+\]/.test(plain.out), `no bar off a terminal: ${plain.out}`);
    assert.match(plain.out, /^\d+\/60 events \(\d+\.\d%\), \d+\/s, ETA \S+$/m);
    assert.match(plain.out, /completed: 60 events in/);

    const tty = await cli([...args, "--interval", "0.3"], true);
    assert.equal(tty.code, EXIT.ok, tty.err);
    assert.ok(tty.out.includes("\r\x1b[K["), "redrawn on a terminal");
    assert.match(tty.out, /\[#*-*\] \d+\.\d% \d+\/60 events, \d+\/s, ETA/, "a bar");

    const json = await cli([...args, "--interval", "0.3", "--json"]);
    assert.equal(json.code, EXIT.ok, json.err);
    const objects = json.out.trim().split("\n").map((l) => JSON.parse(l));
    const last = objects.at(-1);
    assert.equal(last.final, true);
    assert.equal(last.state, "completed");
    assert.equal(last.done, 60);
    assert.equal(last.total, 60);
    assert.ok(objects.length >= 2, "progress while running");
  });
});

Deno.test("cli replay: Ctrl-C cancels, saying how far it got, and exits 130", async () => {
  await withSchema(async (pool) => {
    const category = unique("Replay");
    await seed(pool, category, 10, 20); // 200
    const r = await cli(
      ["replay", "--category", category, "--from-position", "0", "--rate", "100"],
      false,
      AbortSignal.timeout(700),
    );
    assert.equal(EXIT.interrupted, 130, "as shells report a SIGINT");
    assert.equal(r.code, 130, r.err);
    const done = Number(/cancelled: (\d+) events/.exec(r.out)?.[1]);
    assert.ok(done > 0 && done < 200, r.out);
  });
});

Deno.test("cli replay --group --reset-checkpoint: rewinds the group, refused while it runs", async () => {
  await withSchema(async (pool, schema) => {
    await initPostgresCheckpoints(pool, { schema });
    const store = postgresCheckpoints(pool, { schema });
    const category = unique("Replay");
    await seed(pool, category, 2, 2);
    const group = unique("projector");
    const key = messageDbCheckpointKey(category, { group });
    await store.commit(key, 100n);
    const args = [
      "replay",
      "--category",
      category,
      "--from-position",
      "7",
      "--group",
      group,
      "--reset-checkpoint",
      "--schema",
      schema,
    ];
    const unhold = await store.hold!({ source: "messagedb", group });
    try {
      const refused = await cli(args);
      assert.equal(refused.code, EXIT.failed);
      assert.match(refused.err, /is running/);
      assert.equal(await store.load(key), 100n);
    } finally {
      await unhold();
    }
    const done = await cli(args);
    assert.equal(done.code, EXIT.ok, done.err);
    assert.match(done.out, new RegExp(`${category}/${group}: 100 -> 7`));
    assert.equal(await store.load(key), 7n);
  });
});

Deno.test("cli queue stats, peek and requeue-dead", async () => {
  await withSchema(async (pool, schema) => {
    await initPostgresQueues(pool, { schema });
    const queues = postgresQueues(pool, { schema, maxDeliveries: 1 });
    try {
      await queues.enqueue("mail", [{ to: "ada" }, { to: "bob" }, { to: "cy" }]);
      const [m] = await queues.dequeue("mail", { visibilityTimeoutMs: 60_000 });
      await queues.nack(m, { error: "mailbox full" });
      // ada (delivered once: maxDeliveries) moves to the dead letters; bob and cy are taken.
      const taken = await queues.dequeue("mail", { visibilityTimeoutMs: 60_000, max: 3 });
      assert.deepEqual(taken.map((t) => (t.body as { to: string }).to), ["bob", "cy"]);
      await queues.nack(taken[1], { delayMs: 60_000 });
      const q = ["--queue", "mail", "--schema", schema];

      const stats = await cli(["queue", "stats", ...q, "--json"]);
      assert.equal(stats.code, EXIT.ok, stats.err);
      const s = JSON.parse(stats.out);
      assert.deepEqual([s.ready, s.inFlight, s.delayed, s.dead], [0, 1, 1, 1]);
      assert.ok(s.oldestAgeMs >= 0 && s.oldestAgeMs < 60_000, String(s.oldestAgeMs));
      const table = await cli(["queue", "stats", ...q]);
      assert.match(
        table.out,
        /QUEUE\s+READY\s+IN FLIGHT\s+DELAYED\s+DEAD\s+OLDEST\nmail\s+0\s+1\s+1\s+1\s+\d/,
      );

      const peek = await cli(["queue", "peek", ...q]);
      assert.equal(peek.code, EXIT.ok, peek.err);
      assert.match(peek.out, /inFlight .*"bob"/);
      assert.match(peek.out, /delayed .*"cy"/);
      const dead = await cli(["queue", "peek", ...q, "--dead", "--json"]);
      const letters = dead.out.trim().split("\n").map((l) => JSON.parse(l));
      assert.deepEqual(letters.map((d) => [d.body.to, d.lastError]), [["ada", "mailbox full"]]);
      assert.equal((await queues.stats("mail")).inFlight, 1, "peek took nothing");

      const requeued = await cli(["queue", "requeue-dead", ...q]);
      assert.equal(requeued.code, EXIT.ok, requeued.err);
      assert.match(requeued.out, /requeued 1 dead letter of mail/);
      assert.equal((await queues.stats("mail")).dead, 0);
      const none = await cli(["queue", "peek", ...q, "--dead"]);
      assert.equal(none.code, EXIT.notFound);
      const missing = await cli(["queue", "stats", "--queue", "mail", "--schema", unique("none_")]);
      assert.equal(missing.code, EXIT.notFound);
      assert.match(missing.err, /initPostgresQueues/);
    } finally {
      await queues.close();
    }
  });
});

Deno.test("cli replay: a real process under Deno and Bun", async () => {
  await withSchema(async (pool) => {
    const category = unique("Replay");
    await seed(pool, category, 2, 3);
    for (const runtime of bunPath ? ["deno", "bun"] as const : ["deno"] as const) {
      const r = await spawn(runtime, [
        "replay",
        "--category",
        category,
        "--from-position",
        "0",
        "--json",
      ]);
      assert.equal(r.code, EXIT.ok, `${runtime}: ${r.err}`);
      const last = JSON.parse(r.out.trim().split("\n").at(-1)!);
      assert.equal(last.done, 6, runtime);
      assert.equal(last.state, "completed", runtime);
    }
  });
});

Deno.test("cli replay: SIGINT to a real process under Deno and Bun cancels it with exit 130", async () => {
  await withSchema(async (pool) => {
    const category = unique("Replay");
    await seed(pool, category, 4, 25); // 100 at 20/s: 5 s unless interrupted
    for (const runtime of bunPath ? ["deno", "bun"] as const : ["deno"] as const) {
      const bin = runtime === "deno" ? Deno.execPath() : bunPath!;
      const args = ["replay", "--category", category, "--from-position", "0", "--rate", "20"];
      const child = new Deno.Command(bin, {
        args: runtime === "deno" ? ["run", "-A", "cli.ts", ...args] : ["run", "cli.ts", ...args],
        cwd: root,
        env: { IMPEL_PG_URL: url, NO_COLOR: "1" },
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const dec = new TextDecoder();
      let out = "";
      const reader = child.stdout.getReader();
      // The first progress line: the replay runs and has taken Ctrl-C over.
      while (!out.includes("/100 events")) {
        const { value, done } = await reader.read();
        if (done) break;
        out += dec.decode(value);
      }
      child.kill("SIGINT");
      for (let r; !(r = await reader.read()).done;) out += dec.decode(r.value);
      const { code } = await child.status;
      const err = dec.decode(await new Response(child.stderr).arrayBuffer());
      assert.equal(code, 130, `${runtime}: ${out} ${err}`);
      const done = Number(/cancelled: (\d+) events/.exec(out)?.[1]);
      assert.ok(done > 0 && done < 100, `${runtime}: ${out}`);
    }
  });
});
