// The file checkpoint store (checkpoints/file.ts): the CheckpointStore semantics, kept in a file.
import assert from "node:assert/strict";
import { CorruptCheckpointFileError, fileCheckpoints } from "../../checkpoints/file.ts";
import { ImpelError, InvalidArgumentError } from "../../core/errors.ts";

const key = (tranche = "all", group = "g", source = "eventstream:x") => ({
  source,
  tranche,
  group,
});

Deno.test("file checkpoints: load, commit never backwards, reset, list; kept across instances", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/sub/checkpoints.json`;
  const store = fileCheckpoints(path);
  assert.equal(await store.load(key()), undefined);
  await store.commit(key(), 0n);
  assert.equal(await store.load(key()), 0n);
  await store.commit(key(), 10n);
  await store.commit(key(), 5n);
  assert.equal(await fileCheckpoints(path).load(key()), 10n);
  await store.commit(key(), 2n ** 63n + 1n);
  assert.equal(await fileCheckpoints(path).load(key()), 2n ** 63n + 1n);
  await store.reset(key(), 3n);
  assert.equal(await store.load(key()), 3n);
  await store.commit(key("all", "other"), 7n);
  await store.commit(key("all", "g", "another"), 9n);
  assert.deepEqual(
    (await fileCheckpoints(path).list("eventstream:x")).map((c) => [c.group, c.position]).sort(),
    [["g", 3n], ["other", 7n]],
  );
  assert.deepEqual((await store.list("eventstream:x", "other")).length, 1);
  await store.reset(key(), undefined);
  assert.equal(await store.load(key()), undefined);
  // Only the store file is left: every temporary file was renamed over it.
  assert.deepEqual((await Array.fromAsync(Deno.readDir(`${dir}/sub`))).map((e) => e.name), [
    "checkpoints.json",
  ]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("file checkpoints: concurrent commits keep the highest", async () => {
  const dir = await Deno.makeTempDir();
  const store = fileCheckpoints(`${dir}/c.json`);
  await Promise.all([5n, 1n, 9n, 3n, 7n].map((p) => store.commit(key(), p)));
  assert.equal(await store.load(key()), 9n);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("file checkpoints: bad input and a damaged file are typed errors", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/c.json`;
  const store = fileCheckpoints(path);
  await assert.rejects(
    store.commit(key(), -1n),
    (e: unknown) => e instanceof ImpelError && e.code === "InvalidPosition",
  );
  await assert.rejects(
    store.commit({ ...key(), group: "" }, 1n),
    (e: unknown) => e instanceof ImpelError && e.code === "InvalidCheckpointKey",
  );
  await assert.rejects(
    store.commit(key(), 1n, { scope: "s", unit: "u", owner: "o", generation: 1n }),
    InvalidArgumentError,
  );
  assert.throws(() => fileCheckpoints(""), InvalidArgumentError);
  await Deno.writeTextFile(path, "{ half");
  await assert.rejects(
    store.load(key()),
    (e: unknown) => e instanceof CorruptCheckpointFileError && e.path === path,
  );
  await Deno.writeTextFile(path, JSON.stringify({ checkpoints: [{ source: "x", position: "1" }] }));
  await assert.rejects(store.commit(key(), 2n), CorruptCheckpointFileError);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("file checkpoints: two stores over one path in one process keep both commits", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/checkpoints.json`;
  const [a, b] = [fileCheckpoints(path), fileCheckpoints(path)];
  await Promise.all([a.commit(key("all", "a"), 5n), b.commit(key("all", "b"), 7n)]);
  assert.deepEqual(
    [await fileCheckpoints(path).load(key("all", "a")), await b.load(key("all", "b"))],
    [5n, 7n],
  );
  await Deno.remove(dir, { recursive: true });
});
