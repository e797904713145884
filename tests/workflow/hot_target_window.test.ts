// mayRepeat misses a key when the stream's last snapshot was written by a decider with a smaller
// idempotency window than the reader's: the snapshot's key list was full (older keys trimmed),
// but the reader's window is larger, so keys.length < window and the search is skipped.
import assert from "node:assert/strict";
import { createCodec } from "../../core/codec.ts";
import { createDecider } from "../../core/decider.ts";
import { createMemoryStore } from "../../sources/memory.ts";

type E = { type: "Incremented"; data: { n: number } } | { type: "Total"; data: { n: number } };
const codec = createCodec<E>({ Incremented: {}, Total: {} });
const deciderOf = (store: ReturnType<typeof createMemoryStore>, window: number) =>
  createDecider<E, number>({
    store,
    codec,
    initial: 0,
    fold: (t, es) => es.reduce((s, e) => e.type === "Total" ? e.data.n : s + e.data.n, t),
    idempotencyWindow: window,
    snapshot: {
      every: 3,
      isOrigin: (e) => e.type === "Total",
      toSnapshot: (n) => ({ type: "Total", data: { n } }),
    },
  });

Deno.test("mayRepeat: a key trimmed by a smaller-window snapshot is still found", async () => {
  const store = createMemoryStore();
  const small = deciderOf(store, 2);
  const add = () => [{ type: "Incremented" as const, data: { n: 1 } }];
  await small.transact("C-1", add, { idempotencyKey: "mine" });
  for (let i = 0; i < 6; i++) await small.transact("C-1", add, { idempotencyKey: `o-${i}` });
  const large = deciderOf(store, 100); // e.g. after a deploy that raised the window
  const again = await large.transactEx("C-1", add, { idempotencyKey: "mine", mayRepeat: true });
  assert.equal(again.duplicate, true, "re-send applied twice");
  assert.equal(await large.query("C-1", (t) => t), 7);
});
