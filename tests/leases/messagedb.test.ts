// The MessageDB source with leases, several members in one process against the real PostgreSQL:
// the slots are shared fairly, every stream is handled by one member at a time and completely, a
// member that stops hands its slots over, and the options are checked. The process-level runs
// (SIGKILL, SIGSTOP, joins and leaves) are in tests/leases/processes.test.ts.
import assert from "node:assert/strict";
// @ts-types="@types/pg"
import type pg from "pg";
import { run, type StreamEvent, streamsSink } from "../../mod.ts";
import { initPostgresCheckpoints, postgresCheckpoints } from "../../checkpoints/postgres.ts";
import { memoryCheckpoints } from "../../checkpoints/memory.ts";
import { initPostgresLeases, postgresLeases } from "../../leases/postgres.ts";
import { memoryLeases } from "../../leases/memory.ts";
import { InvalidArgumentError } from "../../core/errors.ts";
import { type MessageDbSource, messageDbSource } from "../../sources/messagedb.ts";
import { seed, unique, withSchema } from "../support/postgres.ts";

const LEASE = { durationMs: 1500, heartbeatMs: 250, handoverMs: 700, stopTimeoutMs: 300 };

interface Member {
  readonly name: string;
  readonly source: MessageDbSource;
  readonly stop: AbortController;
  readonly running: Promise<void>;
}

/** Start/end of every call, in order, across members; overlaps counted as they happen. */
function journal() {
  const busy = new Map<string, string>();
  const handled = new Map<string, Set<number>>();
  let overlaps = 0, events = 0;
  return {
    handler: (member: string) => async (stream: string, batch: readonly StreamEvent[]) => {
      const other = busy.get(stream);
      if (other !== undefined) overlaps++;
      busy.set(stream, member);
      await new Promise((r) => setTimeout(r, 2));
      let seen = handled.get(stream);
      if (seen === undefined) handled.set(stream, seen = new Set());
      for (const e of batch) {
        if (!seen.has(e.index)) events++;
        seen.add(e.index);
      }
      if (busy.get(stream) === member) busy.delete(stream);
    },
    get overlaps() {
      return overlaps;
    },
    get events() {
      return events;
    },
  };
}

async function until(what: string, ms: number, ok: () => boolean): Promise<void> {
  const deadline = performance.now() + ms;
  while (!ok()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function start(
  pool: pg.Pool,
  schema: string,
  category: string,
  name: string,
  log: ReturnType<typeof journal>,
): Member {
  const stop = new AbortController();
  const source = messageDbSource({
    client: pool,
    categories: [category],
    group: "g",
    checkpoints: postgresCheckpoints(pool, { schema, leases: { schema } }),
    leases: { store: postgresLeases(pool, { schema }), slots: 6, member: name, ...LEASE },
    tailSleepMs: 50,
    signal: stop.signal,
  });
  const sink = streamsSink({
    group: "g",
    handler: log.handler(name),
    statsIntervalMs: 0,
    commitIntervalMs: 100,
    stopTimeoutMs: 300,
  });
  return { name, source, stop, running: run(source, sink, { signal: stop.signal }) };
}

const held = (m: Member) => m.source.leases()!.held.filter((h) => h.state === "working").length;

Deno.test("messagedb leases: three members share six slots, each stream one member at a time, all handled", () =>
  withSchema(async (pool, schema) => {
    await initPostgresCheckpoints(pool, { schema });
    await initPostgresLeases(pool, { schema });
    const category = unique("Lease");
    await seed(pool, category, 200, 3);
    const log = journal();
    const members = ["a", "b", "c"].map((n) => start(pool, schema, category, n, log));
    try {
      await until("every event handled", 20_000, () => log.events === 600);
      await until("the slots balanced", 10_000, () => members.every((m) => held(m) === 2));
      assert.equal(log.overlaps, 0);
      const owned = () => Object.values(members[0].source.leases()!.owners).filter((o) => o).length;
      await until("a's view of the owners complete", 5_000, () => owned() === 6);
      const snapshot = members[0].source.leases()!;
      assert.deepEqual(snapshot.members, ["a", "b", "c"]);
      assert.equal(snapshot.share, 2);
      assert.equal(snapshot.lost, 0);
      // More events after the split: still handled once each.
      await seed(pool, category, 200, 2, 3);
      await until("the later events handled", 20_000, () => log.events === 1000);
      assert.equal(log.overlaps, 0);
    } finally {
      for (const m of members) m.stop.abort();
      await Promise.all(members.map(async (m) => (await m.running, await m.source.released)));
    }
    const [view] = await postgresLeases(pool, { schema }).list("messagedb/g");
    assert.ok(view.leases.every((l) => l.owner === undefined), "all released on stop");
    assert.deepEqual(view.members, [], "all left");
  }));

Deno.test("messagedb leases: a member that stops hands its slots over, nothing lost", () =>
  withSchema(async (pool, schema) => {
    await initPostgresCheckpoints(pool, { schema });
    await initPostgresLeases(pool, { schema });
    const category = unique("Lease");
    await seed(pool, category, 100, 2);
    const log = journal();
    const a = start(pool, schema, category, "a", log);
    const b = start(pool, schema, category, "b", log);
    try {
      await until("first events handled", 20_000, () => log.events === 200);
      await until("balanced", 10_000, () => held(a) === 3 && held(b) === 3);
      a.stop.abort();
      await a.running;
      await a.source.released;
      assert.equal(a.source.leases()!.released, 3);
      const stoppedAt = performance.now();
      await until("b takes all six", 5_000, () => held(b) === 6);
      assert.ok(performance.now() - stoppedAt < LEASE.durationMs, "within a heartbeat or two");
      await seed(pool, category, 100, 2, 2);
      await until("all handled", 20_000, () => log.events === 400);
      assert.equal(log.overlaps, 0);
    } finally {
      a.stop.abort();
      b.stop.abort();
      await Promise.all([a.running, b.running]);
    }
  }));

Deno.test("messagedb leases: bad options are refused, naming the option", () => {
  const fake = { query: () => Promise.resolve({ rows: [] }) };
  const base = { client: fake, categories: ["Order"], group: "g" };
  const store = memoryLeases();
  const cases: Array<[Record<string, unknown>, string]> = [
    [{ checkpoints: memoryCheckpoints(), leases: { store } }, "checkpoints"],
    [
      {
        checkpoints: memoryCheckpoints({ leases: store }),
        leases: { store },
        split: { member: 0, size: 2 },
      },
      "leases",
    ],
    [{ checkpoints: memoryCheckpoints({ leases: store }), leases: { store: {} } }, "leases.store"],
    [
      { checkpoints: memoryCheckpoints({ leases: store }), leases: { store, slots: 0 } },
      "leases.slots",
    ],
    [
      { checkpoints: memoryCheckpoints({ leases: store }), leases: { store }, startFrom: "tail" },
      "startFrom",
    ],
    [
      { checkpoints: memoryCheckpoints({ leases: store }), leases: { store, durationMs: 50 } },
      "leases.durationMs",
    ],
  ];
  for (const [options, field] of cases) {
    assert.throws(
      () => messageDbSource({ ...base, ...options } as never),
      (e) => e instanceof InvalidArgumentError && e.field === field,
      field,
    );
  }
});
