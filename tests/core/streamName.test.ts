import assert from "node:assert/strict";
import fc from "fast-check";
import {
  categoryOf,
  checkCategory,
  checkStreamName,
  idOf,
  idParts,
  ImpelError,
  InvalidStreamNameError,
  parseStreamName,
  streamName,
} from "../../mod.ts";
import { test } from "../support/core.ts";

/** Asserts that `fn` throws an InvalidStreamNameError for `input` whose message mentions `reason`. */
function assertInvalid(fn: () => unknown, input: string, reason: RegExp) {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof InvalidStreamNameError, `expected InvalidStreamNameError, got ${e}`);
    assert.ok(e instanceof ImpelError);
    assert.equal(e.code, "InvalidStreamName");
    assert.equal(e.input, input);
    assert.match(e.message, reason);
    return true;
  });
}

test("parseStreamName splits on the first '-'", () => {
  assert.deepEqual(parseStreamName("GroupCheckout-9f3a"), {
    category: "GroupCheckout",
    id: "9f3a",
  });
  assert.deepEqual(parseStreamName("GuestStay-a-b"), { category: "GuestStay", id: "a-b" });
  assert.deepEqual(parseStreamName("A-_"), { category: "A", id: "_" });
  assert.deepEqual(parseStreamName("A--"), { category: "A", id: "-" });
});

test("parseStreamName rejects names that break the rules with a typed error", () => {
  assertInvalid(() => parseStreamName("nodash"), "nodash", /missing '-'/);
  assertInvalid(() => parseStreamName("-abc"), "-abc", /empty category/);
  assertInvalid(() => parseStreamName("abc-"), "abc-", /empty id/);
  assertInvalid(() => parseStreamName(""), "", /missing '-'/);
  assertInvalid(() => parseStreamName("-"), "-", /empty category/);
  // A JavaScript caller can pass anything; it must still get the typed error.
  assertInvalid(() => parseStreamName(42 as unknown as string), "42", /not a string/);
  assertInvalid(() => parseStreamName(undefined as unknown as string), "undefined", /not a string/);
});

test("checkStreamName returns a valid name unchanged and throws on an invalid one", () => {
  assert.equal(checkStreamName("Order-1"), "Order-1");
  assertInvalid(() => checkStreamName("Order"), "Order", /missing '-'/);
});

test("streamName composes a category and id parts joined with '_'", () => {
  assert.equal(streamName("Seat", "flight1", "12A"), "Seat-flight1_12A");
  assert.equal(streamName("Order", "1"), "Order-1");
  // '-' is allowed inside ids: only the first '-' separates the category.
  assert.equal(streamName("Order", "a-b"), "Order-a-b");
});

test("streamName rejects bad categories and id parts", () => {
  assertInvalid(() => streamName("", "1"), "", /empty category/);
  assertInvalid(() => streamName("Guest-Stay", "1"), "Guest-Stay", /category contains '-'/);
  assertInvalid(() => streamName("Seat"), "Seat", /no id parts/);
  assertInvalid(() => streamName("Seat", "a", ""), "Seat-a_", /empty id part/);
  assertInvalid(() => streamName("Seat", "a_b"), "Seat-a_b", /contains '_'/);
  assertInvalid(() => streamName("Seat", 7 as unknown as string), "Seat-7", /empty id part/);
});

test("checkCategory, categoryOf, idOf and idParts", () => {
  assert.equal(checkCategory("GuestStay"), "GuestStay");
  assertInvalid(() => checkCategory("a-b"), "a-b", /contains '-'/);
  assertInvalid(() => checkCategory(""), "", /empty category/);
  assert.equal(categoryOf("GuestStay-42"), "GuestStay");
  assert.equal(idOf("GuestStay-42-x"), "42-x");
  assert.deepEqual(idParts("Seat-flight1_12A"), ["flight1", "12A"]);
  assert.deepEqual(idParts("Seat-x"), ["x"]);
  assertInvalid(() => categoryOf("bad"), "bad", /missing '-'/);
  assertInvalid(() => idParts("-x"), "-x", /empty category/);
});

test("streamName round-trips through categoryOf and idParts (property)", () => {
  const category = fc.string({ minLength: 1, maxLength: 8 }).filter((s) => !s.includes("-"));
  const part = fc.string({ minLength: 1, maxLength: 6 }).filter((s) => !s.includes("_"));
  fc.assert(
    fc.property(category, fc.array(part, { minLength: 1, maxLength: 4 }), (c, parts) => {
      const name = streamName(c, ...parts);
      assert.equal(checkStreamName(name), name);
      assert.equal(categoryOf(name), c);
      assert.deepEqual(idParts(name), parts);
    }),
    { numRuns: 1000 },
  );
});

// PostgreSQL stores a lone surrogate as U+FFFD, so "X-a\ud800" read the events of "X-a\ufffd";
// U+0000 is refused by the server with a raw driver error.
Deno.test("stream names and categories with a lone surrogate or U+0000 are refused", () => {
  for (const bad of ["X-a\ud800", "X-\udc00b", "X\ud800-a", "X-a\u0000", "X\u0000-a"]) {
    assert.throws(() => checkStreamName(bad), InvalidStreamNameError, JSON.stringify(bad));
  }
  for (const bad of ["X\ud800", "X\u0000"]) {
    assert.throws(() => checkCategory(bad), InvalidStreamNameError, JSON.stringify(bad));
  }
  assert.equal(
    checkStreamName("X-a\ufffd\u{1f600}"),
    "X-a\ufffd\u{1f600}",
    "well-formed text is a name",
  );
});
