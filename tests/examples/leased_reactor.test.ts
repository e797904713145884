// The README's consumer group with leases (examples/leased_reactor.ts) as two real processes under
// Deno and Bun against the PostgreSQL server: they split the 12 slots, every event appended is
// printed by exactly one of them, and SIGTERM stops each with exit 0 and its slots released.
// Also checks that the README shows exactly this file.
import assert from "node:assert/strict";
// @ts-types="@types/pg"
import pg from "pg";
import { messageDbStore } from "../../stores/messagedb.ts";
import { url } from "../support/postgres.ts";
import { readmeForm, readmeShows } from "../support/readme.ts";
import { bun, type ExampleProcess, spawnExample } from "../support/example_process.ts";

const cli = new URL("../../cli.ts", import.meta.url).pathname;
const scope = "messagedb/order-printer";

Deno.test("README: the leased reactor is examples/leased_reactor.ts with the package's names", async () => {
  const code = await readmeForm("examples/leased_reactor.ts");
  assert.ok(await readmeShows(code), "README shows the example as it is");
});

/** Slots held per owner (unexpired leases of the example's scope). */
async function owners(pool: pg.Pool): Promise<Map<string, number>> {
  const { rows } = await pool.query(
    `SELECT owner, count(*)::int AS n FROM impel.leases
      WHERE scope = $1 AND kind = 'unit' AND owner IS NOT NULL AND expires_at > clock_timestamp()
      GROUP BY owner`,
    [scope],
  );
  return new Map(rows.map((r) => [r.owner as string, r.n as number]));
}

async function until(what: string, ok: () => Promise<boolean>, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await ok())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

for (const runtime of ["deno", "bun"] as const) {
  Deno.test({
    name:
      `examples/leased_reactor.ts under ${runtime}: two members split the slots, each event printed once, clean stops release`,
    ignore: runtime === "bun" && bun === undefined,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      // The README's set-up step for this example.
      const init = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", cli, "init", "messagedb", "--url", url],
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.ok(init.success, new TextDecoder().decode(init.stderr));
      const pool = new pg.Pool({ connectionString: url, max: 2 });
      const members: ExampleProcess[] = [];
      try {
        for (let k = 0; k < 2; k++) {
          const member = spawnExample("examples/leased_reactor.ts", runtime, {
            IMPEL_PG_URL: url,
          }, 60_000);
          members.push(member);
          await member.until(/running, sharing the Order slots/);
        }
        // Fair shares of 12 slots over 2 members: 6 each, after the first hands 6 over.
        await until("the slots are split 6 and 6", async () => {
          const counts = [...(await owners(pool)).values()];
          return counts.length === 2 && counts.every((n) => n === 6);
        }, 45_000);
        const tag = crypto.randomUUID().slice(0, 8);
        const streams = Array.from({ length: 24 }, (_, k) => `Order-${tag}${k}`);
        const store = messageDbStore(pool);
        for (const s of streams) await store.append(s, [{ type: "Placed", data: {} }], 0);
        const printed = () =>
          members.map((m) => streams.filter((s) => m.out().includes(`${s} #0 Placed`)));
        await until("every event printed", () => {
          const [a, b] = printed();
          return Promise.resolve(new Set([...a, ...b]).size === streams.length);
        }, 30_000);
        const [a, b] = printed();
        assert.equal(a.length + b.length, streams.length, "no event printed by both members");
        assert.ok(a.length > 0 && b.length > 0, `both members worked: ${a.length}, ${b.length}`);
        for (const m of members) {
          m.child.kill("SIGTERM");
          assert.equal(await m.ended(), 0, m.out());
          assert.match(m.out(), /stopped, checkpoints committed, slots released/);
        }
        assert.equal((await owners(pool)).size, 0, "no slot held after both stopped");
      } finally {
        for (const m of members) m.kill();
        await pool.end();
      }
    },
  });
}
