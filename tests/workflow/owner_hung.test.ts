// A runner whose lease heartbeat hangs (a partitioned database, no statement timeout) must notice
// its lease lapsed and stop: it kept dispatching while a second runner took the category over,
// both delivering the same send (each heartbeat is now bounded by the lease's lapse).
import assert from "node:assert/strict";
import {
  defineWorkflow,
  startWorkflow,
  workflowCategories,
  workflowClient,
} from "../../core/workflow.ts";
import { createCodec } from "../../core/codec.ts";
import { memoryLeases } from "../../leases/memory.ts";
import { createMemoryStore, memorySource } from "../../sources/memory.ts";

type Noted = { type: "Noted"; data: null };
type Note = { type: "Note"; data: null };
type Ping = { type: "Ping"; data: null };
const wf = defineWorkflow<Noted, number, Note, Ping>({
  category: "Hung",
  codec: createCodec<Noted>({ Noted: {} }),
  initial: 0,
  fold: (n, es) => n + es.length,
  decide: () => ({
    events: [{ type: "Noted", data: null }],
    sends: [{ to: "Pinged-1", type: "Ping", data: null }],
  }),
});

Deno.test({
  name: "a hung heartbeat: the runner stops dispatching once its lease lapsed",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const store = createMemoryStore();
    const leases = memoryLeases();
    let hang = false;
    const hung = new Proxy(leases, {
      get(t, p) {
        const v = Reflect.get(t, p);
        if (p === "heartbeat") {
          return (...a: unknown[]) =>
            hang ? new Promise(() => {}) : (v as (...a: unknown[]) => unknown).apply(t, a);
        }
        return typeof v === "function" ? v.bind(t) : v;
      },
    });
    const delivered: string[] = [];
    // b stands for another process: another store object over the same events.
    const other = new Proxy(store, {
      get: (t, p) => {
        const v = Reflect.get(t, p);
        return typeof v === "function" ? v.bind(t) : v;
      },
    });
    const start = (name: string, l: typeof leases) =>
      startWorkflow(wf, {
        store: name === "a" ? store : other,
        source: memorySource({ store, categories: workflowCategories(wf) }),
        handlers: {
          Ping: (s) => {
            delivered.push(`${name} ${s.id}`);
          },
        },
        owner: { leases: l, member: name, durationMs: 300, waitMs: 2_000 },
      });
    const client = workflowClient(wf, { store });
    const a = start("a", hung);
    let aEnded = "running";
    a.running.then(() => aEnded = "stopped", (e) => aEnded = `failed ${e.code}`);
    await client.handle("i1", { type: "Note", data: null }, { id: "n1" });
    await a.awaitIdle();
    hang = true;
    await new Promise((r) => setTimeout(r, 700)); // a's lease lapses (its heartbeats hang)
    const b = start("b", leases);
    await new Promise((r) => setTimeout(r, 700)); // b takes it over
    await client.handle("i2", { type: "Note", data: null }, { id: "n2" });
    await new Promise((r) => setTimeout(r, 500));
    const aRunning = aEnded;
    await b.stop().catch(() => {});
    await Promise.race([a.stop().catch(() => {}), new Promise((r) => setTimeout(r, 500))]);
    assert.ok(
      !delivered.includes("a Hung-i2#0"),
      `a delivered after its lease lapsed: ${delivered}`,
    );
    assert.notEqual(aRunning, "running");
  },
});
