// The periodic source re-crawling a real PostgreSQL table (the server tools/postgres.sh prepares;
// IMPEL_PG_URL overrides the database): unchanged rows are not handled again, changed ones are.
import assert from "node:assert/strict";
import { InvalidArgumentError, run, type StreamEvent, streamsSink } from "../../mod.ts";
import { memoryCheckpoints } from "../../checkpoints/memory.ts";
import { type PeriodicItem, periodicSource } from "../../sources/periodic.ts";
import { poolFixture, unique } from "../support/postgres.ts";

const withPool = poolFixture({ max: 2 });

Deno.test("periodic source: re-crawls a table; after two rows change exactly those two are handled again", () =>
  withPool(async (pool) => {
    const table = unique("periodic_products_");
    await pool.query(`CREATE TABLE ${table} (id int PRIMARY KEY, name text, price int)`);
    try {
      await pool.query(
        `INSERT INTO ${table} SELECT k, 'item ' || k, k * 10 FROM generate_series(1, 20) AS k`,
      );
      let crawls = 0;
      const crawl = async (): Promise<PeriodicItem[]> => {
        const { rows } = await pool.query(`SELECT id, name, price FROM ${table} ORDER BY id`);
        crawls++;
        return rows.map((r) => ({ stream: `Product-${r.id}`, data: r, type: "ProductListed" }));
      };
      const handled: Array<{ stream: string; event: StreamEvent }> = [];
      const sink = streamsSink({
        handler: (stream, events) =>
          void handled.push(...events.map((event) => ({ stream, event }))),
        statsIntervalMs: 0,
        commitIntervalMs: 10,
      });
      const checkpoints = memoryCheckpoints();
      const stop = new AbortController();
      const running = run(
        periodicSource({ name: "products", crawl, intervalMs: 30, checkpoints, maxBatchItems: 8 }),
        sink,
        { signal: stop.signal },
      );
      const waitFor = async (what: string, ok: () => boolean) => {
        const deadline = Date.now() + 10_000;
        while (!ok()) {
          assert.ok(Date.now() < deadline, `${what} in time`);
          await new Promise((r) => setTimeout(r, 10));
        }
      };
      try {
        await waitFor("the first crawl handled", () => handled.length >= 20);
        const afterFirst = crawls;
        await waitFor("three more crawls", () => crawls >= afterFirst + 3);
        assert.equal(handled.length, 20, "unchanged rows are not handled again");
        await pool.query(`UPDATE ${table} SET price = price + 1 WHERE id IN (4, 17)`);
        await waitFor("the changed rows handled", () => handled.length >= 22);
        const afterChange = crawls;
        await waitFor("three more crawls", () => crawls >= afterChange + 3);
        await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 5000 });
      } finally {
        stop.abort();
        await running;
      }
      assert.equal(handled.length, 22);
      const again = handled.slice(20);
      assert.deepEqual(again.map((h) => [h.stream, h.event.index]).sort(), [
        ["Product-17", 1],
        ["Product-4", 1],
      ]);
      assert.deepEqual(again.find((h) => h.stream === "Product-4")!.event.data, {
        id: 4,
        name: "item 4",
        price: 41,
      });
      const first = handled.find((h) => h.stream === "Product-4")!.event;
      const hashOf = (e: StreamEvent) => (e.meta as { contentHash: string }).contentHash;
      assert.notEqual(hashOf(first), hashOf(again[0].event), "the content hash changed");
      assert.equal(first.type, "ProductListed");
      // The checkpoint is the start of a crawl that was completely handled.
      const at = await checkpoints.load({ source: "products", tranche: "0", group: "default" });
      assert.ok(at !== undefined && Number(at) <= Date.now() && Number(at) > Date.now() - 60_000);
    } finally {
      await pool.query(`DROP TABLE IF EXISTS ${table}`);
    }
  }));

Deno.test("periodic source: bad options and bad crawls are typed errors", async () => {
  const base = { name: "p", intervalMs: 10, crawl: () => Promise.resolve([]) };
  for (
    const [field, override] of [
      ["intervalMs", { intervalMs: 0 }],
      ["crawl", { crawl: undefined }],
      ["name", { name: "" }],
      ["maxBatchItems", { maxBatchItems: 0 }],
    ] as const
  ) {
    assert.throws(
      () => periodicSource({ ...base, ...override } as never),
      (e: unknown) => e instanceof InvalidArgumentError && e.field === field,
    );
  }
  for (
    const items of [
      [{ stream: "NoId", data: 1 }],
      [{ stream: "A-1", data: 1 }, { stream: "A-1", data: 2 }],
    ]
  ) {
    const sink = streamsSink({ handler: () => {}, statsIntervalMs: 0 });
    await assert.rejects(
      run(periodicSource({ ...base, crawl: () => Promise.resolve(items) }), sink),
      (e: unknown) => e instanceof InvalidArgumentError && /crawl\(0\) of p/.test(e.message),
    );
  }
});
