// End-to-end hotel scenarios, run by hotel_memory.test.ts (in process, no sleeps) and
// hotel_messagedb.test.ts (a real PostgreSQL server). Every id is fresh, so scenarios can share a
// database with earlier runs.
import assert from "node:assert/strict";
import type { ObservableSource } from "../../core/batch.ts";
import { createDecider, createStateCache } from "../../core/decider.ts";
import type { StreamEvent } from "../../core/event.ts";
import { run, type StreamsSink, streamsSink } from "../../core/sink.ts";
import type { EventStore } from "../../core/store.ts";
import {
  type GroupCheckoutService,
  groupCheckoutService,
  groupStream,
} from "../../examples/hotel/groupCheckout.ts";
import {
  foldStay,
  guestStayCodec,
  type GuestStayEvent,
  type GuestStayService,
  guestStayService,
  initialStay,
  stayStream,
} from "../../examples/hotel/guestStay.ts";
import { groupCheckoutHandler, REACTOR_GROUP } from "../../examples/hotel/reactor.ts";
import type { HotelBackend } from "../../examples/hotel/wiring.ts";

const T = "2026-03-01T12:00:00Z";
export const newId = (): string => crypto.randomUUID().replaceAll("-", "").slice(0, 16);

/** What a scenario works with: the services, the store, and a wait for the reactor. */
export interface HotelEnv {
  readonly stays: GuestStayService;
  readonly groups: GroupCheckoutService;
  readonly store: EventStore;
  /** Resolves once the reactor has handled everything written so far. */
  settle(): Promise<void>;
  /** Every (stream, event types) the reactor's handler was called with. */
  readonly calls: Array<{ stream: string; types: string[] }>;
  readonly sink: StreamsSink;
}

/**
 * Runs the reactor over `backend` around `scenario`: starts it, waits until its feed is
 * positioned, runs the scenario, then stops it cleanly.
 */
export async function withReactor(
  backend: HotelBackend,
  scenario: (env: HotelEnv) => Promise<void>,
): Promise<void> {
  const cache = createStateCache();
  const stays = guestStayService(backend.store, { cache });
  const groups = groupCheckoutService(backend.store, { cache });
  const calls: HotelEnv["calls"] = [];
  const handler = groupCheckoutHandler({ stays, groups, now: () => T });
  const controller = new AbortController();
  const source = backend.source(controller.signal);
  const sink = streamsSink({
    group: (source as ObservableSource).group ?? REACTOR_GROUP,
    maxConcurrentStreams: 8,
    statsIntervalMs: 0,
    handler: (stream: string, events: readonly StreamEvent[], ctx) => {
      calls.push({ stream, types: events.map((e) => e.type) });
      return handler(stream, events, ctx);
    },
  });
  const running = run(source, sink, { signal: controller.signal });
  try {
    await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 30_000 });
    await scenario({
      stays,
      groups,
      store: backend.store,
      settle: () => backend.settle(sink),
      calls,
      sink,
    });
  } finally {
    controller.abort();
    await running;
  }
}

async function openStay(stays: GuestStayService, charged: number, paid = 0): Promise<string> {
  const id = newId();
  await stays.checkIn(id, T);
  if (charged > 0) assert.deepEqual(await stays.charge(id, "room", charged, T), { ok: true });
  if (paid > 0) assert.deepEqual(await stays.pay(id, "deposit", paid, T), { ok: true });
  return id;
}

/** A group of several stays merges; it confirms only once paid. */
export async function groupMergesAndConfirms(env: HotelEnv): Promise<void> {
  const { stays, groups } = env;
  const s1 = await openStay(stays, 10_000);
  const s2 = await openStay(stays, 5_000, 5_000);
  const s3 = await openStay(stays, 2_500);
  const s4 = await openStay(stays, 7_000, 2_000);
  const g = newId();
  assert.deepEqual(await groups.select(g, [s1, s2, s3], T), { ok: true });
  await env.settle();
  let { state } = await groups.read(g);
  assert.deepEqual(state.pending, []);
  assert.deepEqual(
    [...state.merged].sort((a, b) => a.stayId.localeCompare(b.stayId)),
    [{ stayId: s1, residual: 10_000 }, { stayId: s2, residual: 0 }, { stayId: s3, residual: 2_500 }]
      .sort((a, b) => a.stayId.localeCompare(b.stayId)),
  );

  // A later selection is taken on as well.
  assert.deepEqual(await groups.select(g, [s4], T), { ok: true });
  await env.settle();
  ({ state } = await groups.read(g));
  assert.deepEqual([state.pending, state.merged.length, state.failed, state.balance], [
    [],
    4,
    [],
    17_500,
  ]);
  for (const id of [s1, s2, s3, s4]) {
    const s = await stays.read(id);
    assert.deepEqual([s.status, s.groupId], ["transferred", g]);
  }

  assert.deepEqual(await groups.confirm(g, T), {
    ok: false,
    reason: "balanceDue",
    balance: 17_500,
  });
  assert.deepEqual(await groups.pay(g, "card-1", 17_500, T), { ok: true });
  assert.deepEqual(await groups.confirm(g, T), { ok: true });
  await env.settle();
  ({ state } = await groups.read(g));
  assert.equal(state.confirmedAt, T);
  assert.deepEqual(await groups.select(g, [newId()], T), { ok: false, reason: "confirmed" });

  // The group's stream holds exactly the clerk's and the reactor's decisions, nothing twice.
  const types = (await env.store.readStream(groupStream(g))).map((e) => e.type);
  assert.deepEqual(types, [
    "StaysSelected",
    "StaysMerged",
    "StaysSelected",
    "StaysMerged",
    "Paid",
    "Confirmed",
  ]);
}

/** Stays already checked out, taken by another group, or never checked in fail cleanly. */
export async function closedStaysFailCleanly(env: HotelEnv): Promise<void> {
  const { stays, groups } = env;
  const open = await openStay(stays, 3_000);
  const out = await openStay(stays, 1_000, 1_000);
  assert.deepEqual(await stays.checkOut(out, T), { ok: true });
  const elsewhere = await openStay(stays, 400);
  const other = newId();
  await groups.select(other, [elsewhere], T);
  await env.settle();
  const never = newId();

  const g = newId();
  await groups.select(g, [open, out, elsewhere, never], T);
  await env.settle();
  const { state } = await groups.read(g);
  assert.deepEqual(state.pending, []);
  assert.deepEqual(state.merged, [{ stayId: open, residual: 3_000 }]);
  assert.deepEqual(
    new Map(state.failed.map((f) => [f.stayId, f.reason])),
    new Map([[out, "checkedOut"], [elsewhere, "transferredElsewhere"], [never, "notCheckedIn"]]),
  );
  assert.deepEqual((await groups.read(other)).state.merged, [{ stayId: elsewhere, residual: 400 }]);
  assert.deepEqual((await stays.read(elsewhere)).groupId, other);
  assert.equal((await stays.read(out)).status, "checkedOut");
  assert.equal((await stays.read(never)).status, "absent");
  // A failed transfer writes nothing to the stay.
  assert.deepEqual((await env.store.readStream(stayStream(out))).map((e) => e.type), [
    "CheckedIn",
    "Charged",
    "Paid",
    "CheckedOut",
  ]);
  assert.deepEqual(await env.store.readStream(stayStream(never)), []);

  assert.deepEqual(await groups.pay(g, "cash", 3_000, T), { ok: true });
  assert.deepEqual(await groups.confirm(g, T), { ok: true });
}

/** Two groups select the same stays at once: each stay ends up in exactly one of them. */
export async function concurrentSelections(env: HotelEnv): Promise<void> {
  const { stays, groups } = env;
  const shared = await Promise.all(
    Array.from({ length: 6 }, (_, i) => openStay(stays, 100 * (i + 1))),
  );
  const onlyA = await openStay(stays, 50);
  const onlyB = await openStay(stays, 70);
  const a = newId(), b = newId();
  await Promise.all([
    groups.select(a, [onlyA, ...shared], T),
    groups.select(b, [...shared].reverse().concat(onlyB), T),
  ]);
  await env.settle();
  const [ga, gb] = [(await groups.read(a)).state, (await groups.read(b)).state];
  assert.deepEqual([ga.pending, gb.pending], [[], []]);
  assert.ok(ga.merged.some((m) => m.stayId === onlyA));
  assert.ok(gb.merged.some((m) => m.stayId === onlyB));
  for (const id of shared) {
    const inA = ga.merged.some((m) => m.stayId === id);
    const inB = gb.merged.some((m) => m.stayId === id);
    assert.equal(
      Number(inA) + Number(inB),
      1,
      `stay ${id} merged into ${Number(inA) + Number(inB)} groups`,
    );
    const loser = inA ? gb : ga;
    assert.deepEqual(loser.failed.find((f) => f.stayId === id)?.reason, "transferredElsewhere");
    assert.equal((await stays.read(id)).groupId, inA ? a : b);
    const transfers = (await env.store.readStream(stayStream(id))).filter((e) =>
      e.type === "TransferredToGroup"
    );
    assert.equal(transfers.length, 1);
  }
  // Each group owes exactly the residuals it took over.
  const owed = (g: typeof ga) => g.merged.reduce((sum, m) => sum + m.residual, 0);
  assert.equal(owed(ga) + owed(gb), 50 + 70 + 100 * (1 + 2 + 3 + 4 + 5 + 6));
  assert.deepEqual([ga.balance, gb.balance], [owed(ga), owed(gb)]);
}

/**
 * Two deciders read a stay at the same version and both append a charge: one conflicts and
 * decides again on the event it missed, so the second charge sees the first.
 */
export async function conflictingChargesRedecide(store: EventStore): Promise<void> {
  const stays = guestStayService(store);
  const id = newId();
  await stays.checkIn(id, "t");
  // Two store objects stand for two processes: within one, transacts on a stream take turns.
  const decider = (store: EventStore) =>
    createDecider<GuestStayEvent, typeof initialStay>({
      store,
      codec: guestStayCodec,
      initial: initialStay,
      fold: foldStay,
    });
  let arrived = 0;
  let release!: () => void;
  const both = new Promise<void>((resolve) => (release = resolve));
  const charge = (chargeId: string) => async (s: typeof initialStay, ctx: { attempt: number }) => {
    if (ctx.attempt === 1 && ++arrived === 2) release();
    if (ctx.attempt === 1) await both;
    return [{ type: "Charged" as const, data: { chargeId, amount: s.seen.length + 1, at: "t" } }];
  };
  const outcomes = await Promise.all([
    decider(store).transactEx(stayStream(id), charge("a")),
    decider({ ...store }).transactEx(stayStream(id), charge("b")),
  ]);
  assert.deepEqual(outcomes.map((o) => o.attempts).sort(), [1, 2]);
  const events = await store.readStream(stayStream(id));
  assert.deepEqual(events.map((e) => [e.index, e.type]), [[0, "CheckedIn"], [1, "Charged"], [
    2,
    "Charged",
  ]]);
  assert.deepEqual(events.map((e) => (e.data as { amount?: number }).amount), [undefined, 1, 2]);
  assert.equal((await stays.read(id)).balance, 3);
}
