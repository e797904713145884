// The given/when/then helpers of @impel/impel/testing, on the hotel sample's deciders and
// reactor, and on specs that must fail (a helper that never fails proves nothing).
import assert from "node:assert/strict";
import { createCodec } from "../core/codec.ts";
import type { EventStore } from "../core/store.ts";
import { deciderSpec, reactorSpec } from "../testing.ts";
import {
  charge,
  checkOut,
  foldStay,
  guestStayCodec,
  guestStayService,
  initialStay,
} from "../examples/hotel/guestStay.ts";
import { groupCheckoutService } from "../examples/hotel/groupCheckout.ts";
import { groupCheckoutHandler } from "../examples/hotel/reactor.ts";

const stay = deciderSpec({ codec: guestStayCodec, initial: initialStay, fold: foldStay });
const checkedIn = { type: "CheckedIn" as const, data: { at: "t0" } };

Deno.test("deciderSpec: then, thenResult, thenNothing on the GuestStay decisions", async () => {
  await stay.given([checkedIn]).when(charge("c1", 500, "t1")).then([
    { type: "Charged", data: { chargeId: "c1", amount: 500, at: "t1" } },
  ]);
  await stay.given([]).when(charge("c1", 500, "t1")).thenResult(
    { ok: false, reason: "notOpen" },
    [],
  );
  await stay
    .given([checkedIn, { type: "Charged", data: { chargeId: "c1", amount: 500, at: "t1" } }])
    .when(charge("c1", 500, "t2"))
    .thenNothing();
  await stay
    .given([checkedIn, { type: "Charged", data: { chargeId: "c1", amount: 500, at: "t1" } }])
    .when(checkOut("t2"))
    .thenResult({ ok: false, reason: "balanceDue", balance: 500 });
});

Deno.test("deciderSpec: a spec that does not hold rejects with the difference", async () => {
  await assert.rejects(
    stay.given([checkedIn]).when(charge("c1", 500, "t1")).then([]),
    assert.AssertionError,
  );
  await assert.rejects(
    stay.given([checkedIn]).when(charge("c1", 500, "t1")).thenNothing(),
    assert.AssertionError,
  );
  await assert.rejects(
    stay.given([]).when(charge("c1", 500, "t1")).thenThrows(Error),
    /the decision succeeded/,
  );
  const boom = () => {
    throw new RangeError("too much");
  };
  await stay.given([]).when(boom).thenThrows(RangeError);
  await stay.given([]).when(boom).thenThrows(/too much/);
  await assert.rejects(stay.given([]).when(boom).thenThrows(TypeError), /expected a TypeError/);
  await assert.rejects(stay.given([]).when(boom).thenNothing(), /the decision threw RangeError/);
});

Deno.test("deciderSpec: an event the codec cannot read back fails the spec", async () => {
  type E = { type: "Noted"; data: { n: number } };
  const strict = createCodec<E>({
    Noted: {
      parse: (d) => {
        const n = (d as { n?: unknown })?.n;
        if (typeof n !== "number") throw new TypeError("n must be a number");
        return { n };
      },
    },
  });
  const spec = deciderSpec<E, number>({ codec: strict, initial: 0, fold: (s) => s });
  // NaN is a number here but JSON stores null: the decider refuses to append what it cannot
  // read back, and the spec reports it as a throw.
  await spec.given([]).when(() => [{ type: "Noted", data: { n: NaN } }]).thenThrows(Error);
});

const reactor = reactorSpec({
  handler: (store: EventStore) =>
    groupCheckoutHandler({
      stays: guestStayService(store),
      groups: groupCheckoutService(store),
      now: () => "t9",
    }),
});

Deno.test("reactorSpec: the GroupCheckout reactor transfers selected stays and records merges", async () => {
  await reactor
    .given({
      "GuestStay-a": [checkedIn, {
        type: "Charged",
        data: { chargeId: "c", amount: 70, at: "t1" },
      }],
      "GuestStay-b": [checkedIn, { type: "CheckedOut", data: { at: "t2" } }],
    })
    .when({
      "GroupCheckout-g": [{ type: "StaysSelected", data: { stayIds: ["a", "b"], at: "t3" } }],
    })
    .then({
      "GuestStay-a": [{
        type: "TransferredToGroup",
        data: { groupId: "g", residual: 70, at: "t9" },
      }],
      "GroupCheckout-g": [
        { type: "StaysMerged", data: { stays: [{ stayId: "a", residual: 70 }] } },
        { type: "MergesFailed", data: { stays: [{ stayId: "b", reason: "checkedOut" }] } },
      ],
    });
});

Deno.test("reactorSpec: thenNothing, thenStore, thenFails, and a spec that does not hold", async () => {
  const quiet = reactorSpec({ handler: () => () => {} });
  await quiet.given({}).when({ "Order-1": [{ type: "Placed", data: {} }] }).thenNothing();
  await quiet.given({ "Order-1": [{ type: "Placed", data: {} }] })
    .when({ "Order-1": [{ type: "Paid", data: {} }] })
    .thenStore(async (store) => {
      assert.deepEqual((await store.readStream("Order-1")).map((e) => e.type), ["Placed", "Paid"]);
    });
  await assert.rejects(
    quiet.given({}).when({ "Order-1": [{ type: "Placed", data: {} }] }).then({
      "Invoice-1": [{ type: "Raised", data: {} }],
    }),
    assert.AssertionError,
  );
  const failing = reactorSpec({
    handler: () => () => {
      throw new Error("no such customer");
    },
  });
  const when = failing.given({}).when({ "Order-1": [{ type: "Placed", data: {} }] });
  await when.thenFails("Order-1", /no such customer/);
  await assert.rejects(
    when.thenNothing(),
    /the handler kept failing on Order-1: Error: no such customer/,
  );
});

Deno.test("reactorSpec: a script that runs a spec exits when it is done (nothing left polling)", async () => {
  const root = new URL("..", import.meta.url).pathname;
  const script = `${root}.spec_exit_${crypto.randomUUID().slice(0, 8)}.ts`;
  try {
    await Deno.writeTextFile(
      script,
      `import { reactorSpec } from "./testing.ts";
await reactorSpec({ handler: () => () => {} }).given({}).when({ "Order-1": [{ type: "Placed", data: {} }] }).thenNothing();
console.log("done");
`,
    );
    const started = performance.now();
    const { code, stdout } = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", script],
      cwd: root,
      stdout: "piped",
      stderr: "inherit",
      signal: AbortSignal.timeout(30_000),
    }).output();
    assert.equal(code, 0);
    assert.equal(new TextDecoder().decode(stdout), "done\n");
    assert.ok(performance.now() - started < 25_000, "it exited by itself");
  } finally {
    await Deno.remove(script);
  }
});
