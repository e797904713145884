// The store's chain rule and stranded tips (issue 15 review), against the local Cosmos server,
// whose transactional batches are not atomic: a batch can write the tip and refuse its document.
import assert from "node:assert/strict";
import type { Container } from "@azure/cosmos";
import { CosmosAppendError, type CosmosContainer, cosmosStore } from "../../stores/cosmos.ts";
import { freshContainer, opts } from "../support/cosmos.ts";
import { storeWriter } from "../../sinks/store-writer.ts";
import { createMemoryStore } from "../../sources/memory.ts";
import { cosmosSource } from "../../sources/cosmos.ts";
import { postgresCheckpoints } from "../../checkpoints/postgres.ts";
import { run, streamsSink } from "../../core/sink.ts";
import { memoryCheckpoints } from "../../checkpoints/memory.ts";

// A container whose batches return only when `release` is called: the window between a batch
// that wrote the tip (its batch document refused) and the store's putting the tip back.
function gated(real: Container) {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let batched!: () => void;
  const reached = new Promise<void>((r) => (batched = r));
  const items = new Proxy(real.items, {
    get(target, prop, receiver) {
      if (prop === "batch") {
        return async (...args: unknown[]) => {
          // deno-lint-ignore no-explicit-any
          const result = await (target.batch as any)(...args);
          batched();
          await gate;
          return result;
        };
      }
      const v = Reflect.get(target, prop, receiver);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
  const container = {
    id: real.id,
    database: real.database,
    item: (id: string, pk: string) => real.item(id, pk),
    items,
  } as unknown as CosmosContainer;
  return { container, release, reached };
}

Deno.test({
  name: "cosmos store: put-back window: a second writer repairs the stranded tip, never extends it",
  ...opts,
  fn: async () => {
    await using t = await freshContainer("chain");
    const S = "Order-1";
    const b = cosmosStore(t.container);
    await b.append(S, [{ type: "E0", data: 0 }], 0);
    // A document the store did not write at id "1" (no i: readers ignore it).
    await t.container.items.create({ id: "1", p: S, note: "stray" });
    const g = gated(t.container);
    const a = cosmosStore(g.container);
    const failing = a.append(S, [{ type: "E1", data: 1 }], 1).then(
      () => undefined,
      (e) => e,
    );
    await g.reached; // the tip now says 2, no batch document 1 exists
    const seen = await b.version(S);
    // B's read of the tip repaired it (1), so B meets the stray document at id 1, loudly.
    assert.equal(seen, 1, "a reader sees the repaired tip, not the stranded one");
    const bErr = await b.append(S, [{ type: "E2", data: 2 }], seen).catch((e) => e);
    assert.equal(bErr?.code, "CosmosStrayDocument");
    g.release();
    const err = await failing;
    assert.ok(err instanceof CosmosAppendError);
    const version = await b.version(S);
    const events = await b.readStream(S);
    const back = await b.readBackwards(S);
    assert.deepEqual(back.map((e) => e.index), events.map((e) => e.index).reverse());
    assert.equal(version, events.length, "the version counts events that exist");
  },
});

Deno.test({
  name: "cosmos store: a foreign batch document inside another: no read returns it",
  ...opts,
  fn: async () => {
    await using t = await freshContainer("chain");
    const S = "Order-2";
    const store = cosmosStore(t.container);
    await store.append(
      S,
      [{ type: "A", data: 1 }, { type: "B", data: 2 }, { type: "C", data: 3 }],
      0,
    );
    await t.container.items.create({
      id: "x",
      p: S,
      i: 1,
      n: 2,
      ts: 0,
      ty: ["Evil"],
      e: [{ c: "Evil", id: "e", s: 0 }],
    });
    const fwd = (await store.readStream(S)).map((e) => `${e.index}:${e.type}`);
    const back = (await store.readBackwards(S)).map((e) => `${e.index}:${e.type}`);
    const last = await store.readLastEvent(S);
    const lastEvil = await store.readLastEvent(S, "Evil");
    assert.deepEqual(back, [...fwd].reverse(), "backwards is forwards reversed");
    assert.deepEqual(fwd, ["0:A", "1:B", "2:C"]);
    assert.equal(last?.type, "C");
    assert.equal(lastEvil, undefined, "the foreign document's type is no event of the stream");
    assert.deepEqual(
      (await store.readFromLast(S, "Evil")).map((e) => `${e.index}:${e.type}`),
      ["0:A", "1:B", "2:C"],
      "no event of the type: the whole stream, without the foreign one",
    );
  },
});

Deno.test({
  name: "cosmos store: store writer into Cosmos: written, duplicate, partial, behind under replay",
  ...opts,
  fn: async () => {
    await using t = await freshContainer("chain");
    const src = createMemoryStore();
    await src.append("Order-9", [0, 1, 2, 3, 4].map((k) => ({ type: `E${k}`, data: k })), 0);
    const all = await src.readStream("Order-9");
    const target = cosmosStore(t.container);
    const w1 = storeWriter({ target });
    const kinds = [];
    kinds.push((await w1.write("Order-9", all.slice(0, 2))).kind);
    kinds.push((await w1.write("Order-9", all.slice(0, 2))).kind); // replay, cached
    const w2 = storeWriter({ target }); // a restarted writer, no cache
    kinds.push((await w2.write("Order-9", all.slice(0, 2))).kind);
    kinds.push((await w2.write("Order-9", all.slice(1, 4))).kind);
    const w3 = storeWriter({ target });
    kinds.push((await w3.write("Order-9", all.slice(4, 5))).kind);
    const behind = await w3.write("Order-8", all.slice(2, 3)).then((o) => o.kind, (e) => e.code);
    kinds.push(behind);
    kinds.push((await w3.write("Order-9", all.slice(0, 5))).kind);
    const copied = await target.readStream("Order-9");
    assert.deepEqual(
      copied.map((e) => [e.index, e.type, e.id]),
      all.map((e) => [e.index, e.type, e.id]),
    );
    assert.deepEqual(kinds, [
      "written",
      "duplicate",
      "duplicate",
      "partial",
      "written",
      "behind",
      "duplicate",
    ]);
  },
});

Deno.test({
  name: "cosmos store: cosmos source given a token-less checkpoint store",
  ...opts,
  fn: async () => {
    await using t = await freshContainer("chain");
    const err = (() => {
      try {
        cosmosSource({
          container: t.container,
          group: "g",
          // deno-lint-ignore no-explicit-any
          checkpoints: postgresCheckpoints({} as any),
        });
      } catch (e) {
        return e as Error;
      }
    })();
    assert.equal((err as { code?: string })?.code, "InvalidArgument");
    assert.match(err!.message, /checkpoints must keep continuation tokens/);
  },
});

Deno.test({
  name: "cosmos store: odd stream names, empty appends, huge and odd data",
  ...opts,
  fn: async () => {
    await using t = await freshContainer("chain");
    const store = cosmosStore(t.container);
    const names = [
      "Order-a/b",
      "Order-a#b",
      "Order-a?b",
      "Order-a\\b",
      "Order-'x\"",
      "Order-ü€😀",
      "Order- spaced ",
      `Order-${"x".repeat(2000)}`,
      "Order-%2F",
      "Order--1",
    ];
    const results: string[] = [];
    for (const s of names) {
      try {
        await store.append(s, [{ type: "T", data: { s } }], 0);
        await store.append(s, [{ type: "U", data: 1 }], 1);
        const evs = await store.readStream(s);
        const back = await store.readBackwards(s);
        results.push(
          `${s.slice(0, 14)}: v=${await store.version(
            s,
          )} fwd=${evs.length} back=${back.length} ok=${
            evs[0]?.data && (evs[0].data as { s: string }).s === s
          }`,
        );
      } catch (e) {
        results.push(
          `${s.slice(0, 14)}: ${(e as Error).name} ${(e as Error).message.slice(0, 120)}`,
        );
      }
    }
    const empty = await store.append("Order-none", [], 0).then((r) => r.nextIndex, (e) => e.name);
    const emptyWrong = await store.append("Order-none", [], 3).then(
      (r) => r.nextIndex,
      (e) => e.name,
    );
    const big = await store.append("Order-big", [{ type: "Big", data: "x".repeat(1_999_000) }], 0)
      .then((r) => r.nextIndex, (e) => `${e.name}: ${e.message.slice(0, 100)}`);
    const tooBig = await store.append(
      "Order-big2",
      [{ type: "Big", data: "x".repeat(2_000_100) }],
      0,
    ).then((r) => r.nextIndex, (e) => `${e.name}: ${e.message.slice(0, 100)}`);
    const multi = await store.append("Order-big3", [{ type: "Big", data: "€".repeat(700_000) }], 0)
      .then((r) => r.nextIndex, (e) => `${e.name}: ${e.message.slice(0, 100)}`);
    const surrogate = await store.append("Order-sur", [{ type: "S", data: "\ud800" }], 0).then(
      (r) => r.nextIndex,
      (e) => `${e.name}: ${e.message.slice(0, 100)}`,
    );
    const bigint = await store.append("Order-bi", [{ type: "S", data: { n: 1n } }], 0).then(
      (r) => r.nextIndex,
      (e) => `${e.name}: ${e.message.slice(0, 100)}`,
    );
    const badType = await store.append("Order-bt", [{ type: "", data: 1 }], 0).then(
      (r) => r.nextIndex,
      (e) => `${e.name}: ${e.message.slice(0, 100)}`,
    );
    const negFrom = await store.readBackwards("Order-big", { fromIndex: -1 }).then(
      (r) => r.length,
      (e) => e.name,
    );
    const past = await store.readBackwards("Order-big", { fromIndex: 99 }).then(
      (r) => r.length,
      (e) => e.name,
    );
    const fromMid = await store.readStream("Order-a/b", { fromIndex: 1, maxCount: 1 }).then(
      (r) => r.map((e) => e.index),
      (e) => e.name,
    );
    const fromPast = await store.readStream("Order-a/b", { fromIndex: 5 }).then(
      (r) => r.length,
      (e) => e.name,
    );
    for (const r of results) assert.match(r, /v=2 fwd=2 back=2 ok=true$/, r);
    assert.deepEqual({
      empty,
      emptyWrong,
      big,
      surrogate,
      badType,
      negFrom,
      past,
      fromMid,
      fromPast,
    }, {
      empty: 0,
      emptyWrong: "WrongExpectedVersionError",
      big: 1,
      surrogate: 1,
      badType: "InvalidArgumentError: events[0].type must be a non-empty string",
      negFrom: "InvalidArgumentError",
      past: 1,
      fromMid: [1],
      fromPast: 0,
    });
    for (const refused of [tooBig, multi, bigint]) {
      assert.match(String(refused), /^InvalidArgumentError: events\[0\]/);
    }
  },
});

Deno.test({
  name:
    "cosmos store: a stranded tip downstream: the feed's spans and a store writer never see a duplicate",
  ...opts,
  fn: async () => {
    await using t = await freshContainer("chain");
    const S = "Order-1";
    const b = cosmosStore(t.container);
    await b.append(S, [{ type: "E0", data: 0 }], 0);
    await t.container.items.create({ id: "1", p: S, note: "stray" });
    const g = gated(t.container);
    const failing = cosmosStore(g.container).append(S, [{ type: "E1", data: 1 }], 1).catch((e) =>
      e
    );
    await g.reached;
    await b.append(S, [{ type: "E2", data: 2 }], await b.version(S)).catch((e) => e);
    g.release();
    await failing;
    // Downstream 1: the change feed into a recording sink.
    const seen: number[] = [];
    const sink = streamsSink({
      group: "g",
      statsIntervalMs: 0,
      commitIntervalMs: 50,
      handler: (_s, events) => {
        for (const e of events) seen.push(e.index);
      },
    });
    const ac = new AbortController();
    const running = run(
      cosmosSource({
        container: t.container,
        group: "g",
        checkpoints: memoryCheckpoints(),
        pageSize: 1000,
        signal: ac.signal,
      }),
      sink,
      { signal: ac.signal },
    );
    const done = await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 5_000 }).then(
      () => "complete",
      (e) => `not complete: ${e.message.slice(0, 100)}`,
    );
    ac.abort();
    await running.catch(() => {});
    // Downstream 2: the store writer with this stream as its target, given the source's [0, 2).
    const src = createMemoryStore();
    await src.append(S, [{ type: "E0", data: 0 }, { type: "E1", data: 1 }], 0);
    const outcome = await storeWriter({ target: b }).write(S, await src.readStream(S)).then(
      (o) => o,
      (e) => ({ kind: e.code }),
    );
    assert.notEqual(outcome.kind, "duplicate", "index 1 is not in the target");
    // The target's reads repaired its tip (1), so the writer meets the stray document at 1: the
    // store makes "duplicate" over missing events impossible, and the refusal is typed.
    assert.equal(outcome.kind, "CosmosStrayDocument");
    assert.deepEqual(seen, [0], "the feed has only the event that exists");
    assert.equal(done, "complete");
  },
});

Deno.test({
  name:
    "cosmos store: the put-back keeps failing: the append rejects CosmosTipStranded, the next read repairs",
  ...opts,
  fn: async () => {
    await using t = await freshContainer("chain");
    const S = "Order-1";
    const b = cosmosStore(t.container);
    await b.append(S, [{ type: "E0", data: 0 }], 0);
    await t.container.items.create({ id: "1", p: S, note: "stray" });
    const real = t.container;
    // Only the tip's replace outside a batch (the put-back) fails, once, as a 503 would.
    const flaky = {
      id: real.id,
      database: real.database,
      items: real.items,
      item: (id: string, pk: string) => {
        const item = real.item(id, pk);
        if (id !== "-1") return item;
        return new Proxy(item, {
          get(target, prop, receiver) {
            if (prop === "replace") {
              return () =>
                Promise.reject(Object.assign(new Error("service unavailable"), { code: 503 }));
            }
            const v = Reflect.get(target, prop, receiver);
            return typeof v === "function" ? v.bind(target) : v;
          },
        });
      },
    } as unknown as CosmosContainer;
    const err = await cosmosStore(flaky).append(S, [{ type: "E1", data: 1 }], 1).catch((e) => e);
    assert.ok(err instanceof CosmosAppendError);
    assert.equal(err.code, "CosmosTipStranded", "a put-back that cannot be done is loud");
    const version = await b.version(S);
    const events = await b.readStream(S);
    assert.equal(version, events.length);
  },
});

Deno.test({
  name:
    "cosmos store: a foreign document at the same first index as a real one: the chain keeps the store's",
  ...opts,
  fn: async () => {
    await using t = await freshContainer("chain");
    const S = "Order-3";
    const store = cosmosStore(t.container);
    // The foreign document is there first (imported, restored, written by another tool).
    await t.container.items.create({
      id: "imported",
      p: S,
      i: 0,
      n: 1,
      ts: 0,
      ty: ["Evil"],
      e: [{ c: "Evil", id: "e", s: 0 }],
    });
    await store.append(
      S,
      [{ type: "A", data: 1 }, { type: "B", data: 2 }, { type: "C", data: 3 }],
      0,
    );
    await store.append(S, [{ type: "D", data: 4 }], 3);
    const skipped: string[] = [];
    const fwd = (await store.readStream(S, {
      onInvalid: (e) => skipped.push(`${e.index}:${e.type}`),
    })).map((e) => `${e.index}:${e.type}`);
    assert.deepEqual(fwd, ["0:A", "1:B", "2:C", "3:D"]);
  },
});

Deno.test({
  name: "cosmos store: foreign documents with an index: the change feed skips them as the reads do",
  ...opts,
  fn: async () => {
    await using t = await freshContainer("chain");
    const S = "Order-4";
    const store = cosmosStore(t.container);
    await t.container.items.create({
      id: "imported",
      p: S,
      i: 0,
      n: 1,
      ts: 0,
      ty: ["Evil"],
      e: [{ c: "Evil", id: "e", s: 0 }],
    });
    await store.append(
      S,
      [{ type: "A", data: 1 }, { type: "B", data: 2 }, { type: "C", data: 3 }],
      0,
    );
    await t.container.items.create({
      id: "x",
      p: S,
      i: 1,
      n: 2,
      ts: 0,
      ty: ["Evil2"],
      e: [{ c: "Evil2", id: "e2", s: 0 }],
    });
    await store.append(S, [{ type: "D", data: 4 }], 3);
    const seen: string[] = [];
    const sink = streamsSink({
      group: "g",
      statsIntervalMs: 0,
      commitIntervalMs: 50,
      handler: (_s, events) => {
        for (const e of events) seen.push(`${e.index}:${e.type}`);
      },
    });
    const ac = new AbortController();
    const running = run(
      cosmosSource({
        container: t.container,
        group: "g",
        checkpoints: memoryCheckpoints(),
        pageSize: 1000,
        signal: ac.signal,
      }),
      sink,
      { signal: ac.signal },
    );
    const done = await sink.monitor.awaitCompletion({ tail: true, timeoutMs: 5_000 }).then(
      () => "complete",
      (e) => `not complete: ${e.message.slice(0, 160)}`,
    );
    ac.abort();
    await running.catch(() => {});
    const stored = (await store.readStream(S)).map((e) => `${e.index}:${e.type}`);
    assert.equal(done, "complete");
    assert.deepEqual(seen, stored, "the feed and the reads agree");
  },
});

Deno.test({
  name: "cosmos store: the put-back fails once (503): it is retried and the tip is put back",
  ...opts,
  fn: async () => {
    await using t = await freshContainer("chain");
    const S = "Order-1";
    const b = cosmosStore(t.container);
    await b.append(S, [{ type: "E0", data: 0 }], 0);
    await t.container.items.create({ id: "1", p: S, note: "stray" });
    const real = t.container;
    let failures = 0;
    const flaky = {
      id: real.id,
      database: real.database,
      items: real.items,
      item: (id: string, pk: string) => {
        const item = real.item(id, pk);
        if (id !== "-1") return item;
        return new Proxy(item, {
          get(target, prop, receiver) {
            if (prop === "replace" && failures === 0) {
              return () => {
                failures++;
                return Promise.reject(
                  Object.assign(new Error("service unavailable"), { code: 503 }),
                );
              };
            }
            const v = Reflect.get(target, prop, receiver);
            return typeof v === "function" ? v.bind(target) : v;
          },
        });
      },
    } as unknown as CosmosContainer;
    const err = await cosmosStore(flaky).append(S, [{ type: "E1", data: 1 }], 1).catch((e) => e);
    assert.equal(failures, 1);
    assert.equal(err?.code, "CosmosStrayDocument", "the put-back succeeded on its retry");
    const { resource } = await real.item("-1", S).read<{ n: number }>();
    assert.equal(resource?.n, 1, "the tip itself was put back, not repaired by a reader");
    assert.equal(await b.version(S), 1);
  },
});

Deno.test({
  name:
    "cosmos store: a tip left ahead of its events (a crashed put-back): reads repair it, a store writer completes the span",
  ...opts,
  fn: async () => {
    await using t = await freshContainer("chain");
    const S = "Order-5";
    const store = cosmosStore(t.container);
    await store.append(S, [{ type: "E0", data: 0 }], 0);
    // What a process that died between its batch and its put-back leaves: the tip says 3, with a
    // last batch at 1 that does not exist.
    await t.container.item("-1", S).replace({ id: "-1", p: S, i: -1, n: 3, l: 1, ts: 0 });
    const src = createMemoryStore();
    await src.append(S, [0, 1, 2].map((k) => ({ type: `E${k}`, data: k })), 0);
    const outcome = await storeWriter({ target: cosmosStore(t.container) }).write(
      S,
      await src.readStream(S),
    );
    // The store makes "duplicate" over missing events impossible: the writer's read of the
    // target's version checked the tip and put it back at 1.
    assert.equal(outcome.kind, "partial");
    assert.deepEqual((await store.readStream(S)).map((e) => e.type), ["E0", "E1", "E2"]);
    assert.equal(await store.version(S), 3);
  },
});
