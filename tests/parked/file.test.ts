// The file park store: the shared contract, what survives a close and reopen and a SIGKILL of a
// real process, the lock, and a corrupt or unreadable file.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import process from "node:process";
import {
  CorruptParkFileError,
  fileParkStore,
  ParkStoreClosedError,
  ParkStoreLockedError,
} from "../../parked/file.ts";
import { event, failure, parkStoreContract } from "./contract.ts";

const temp = () => mkdtemp(`${tmpdir()}/impel-parked-file-`);

parkStoreContract("file park store", async () => {
  const dir = await temp();
  const store = await fileParkStore(dir);
  return {
    store,
    [Symbol.asyncDispose]: async () => {
      await store.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
});

Deno.test("file park store: what was parked, requested and resolved is there after a reopen", async () => {
  const dir = await temp();
  try {
    const first = await fileParkStore(dir);
    await first.park("g", [
      { stream: "A-1", events: [event(0), event(1)], failure: failure() },
      { stream: "B-1", events: [event(4)], failure: failure(2) },
    ]);
    await first.request("g", "A-1", { action: "skip", by: "alice", reason: "refunded" });
    const b = (await first.get("g", "B-1"))!;
    await first.request("g", "B-1", { action: "release", by: "bob" });
    const claimed = (await first.claim("g", "B-1", b.episode, {
      by: "sink-1",
      until: Date.now() + 60_000,
    }))!;
    await first.resolve("g", "B-1", b.episode, { by: "sink-1", token: claimed.claim!.token });
    const before = await first.list(undefined, { resolved: true });
    await first.close();
    await assert.rejects(first.list(), ParkStoreClosedError);

    await using again = await fileParkStore(dir);
    assert.deepEqual(await again.list(undefined, { resolved: true }), before);
    const a = (await again.get("g", "A-1"))!;
    assert.equal(a.request?.action, "skip");
    assert.equal(a.request?.reason, "refunded");
    assert.deepEqual(await again.events("g", "A-1", a.episode, 0, 10), [event(0), event(1)]);
    assert.equal((await again.get("g", "B-1"))?.state, "released");
    // Episode ids stay unique across the reopen.
    await again.park("g", [{ stream: "B-1", events: [event(9)], failure: failure() }]);
    const ids = (await again.list(undefined, { resolved: true })).map((e) => e.episode);
    assert.equal(new Set(ids).size, ids.length);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

Deno.test("file park store: a second opener gets a typed error naming the lock; close frees it", async () => {
  const dir = await temp();
  try {
    const first = await fileParkStore(dir);
    const error = await fileParkStore(dir).then(() => undefined, (e) => e);
    assert.ok(error instanceof ParkStoreLockedError, String(error));
    assert.equal(error.path, `${dir}/LOCK`);
    assert.equal(error.pid, process.pid);
    assert.match(error.message, /LOCK is held by process \d+/);
    await first.close();
    const second = await fileParkStore(dir);
    await second.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

Deno.test("file park store: a corrupt file is a typed error naming it, never an empty store", async () => {
  const dir = await temp();
  try {
    const path = `${dir}/parked.json`;
    const cases: Array<[string, RegExp]> = [
      ["{ not json", /not JSON/],
      ["[]", /unknown version/],
      [JSON.stringify({ version: 1, episodes: 0 }), /no streams array/],
      [JSON.stringify({ version: 1, episodes: 1, streams: [{ group: "g" }] }), /bad stream/],
      [
        JSON.stringify({
          version: 1,
          episodes: 1,
          streams: [{
            group: "g",
            stream: "A-1",
            episodes: [{ entry: { group: "h" }, events: [] }],
          }],
        }),
        /bad episode of "g"\/"A-1"/,
      ],
    ];
    for (const [text, problem] of cases) {
      await writeFile(path, text);
      const error = await fileParkStore(dir).then(() => undefined, (e) => e);
      assert.ok(error instanceof CorruptParkFileError, `${text}: ${error}`);
      assert.equal(error.path, path);
      assert.match(error.message, problem);
      assert.ok(error.message.includes(path));
    }
    // The failed opens left no lock behind.
    await rm(path);
    const store = await fileParkStore(dir);
    await store.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

Deno.test("file park store: an unreadable file is a typed error naming it", async () => {
  const dir = await temp();
  try {
    // A directory where the file should be: unreadable as a file, even for root.
    const path = `${dir}/parked.json`;
    await mkdir(path);
    const error = await fileParkStore(dir).then(() => undefined, (e) => e);
    assert.ok(error instanceof CorruptParkFileError, String(error));
    assert.equal(error.path, path);
    assert.match(error.message, /unreadable/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

Deno.test("file park store: a change that cannot be saved is refused and undone", async () => {
  const dir = await temp();
  try {
    await using store = await fileParkStore(dir);
    await store.park("g", [{ stream: "A-1", events: [event(0)], failure: failure() }]);
    // A non-empty directory in the file's place: the rename over it fails.
    const path = `${dir}/parked.json`;
    await rm(path);
    await mkdir(`${path}/in-the-way`, { recursive: true });
    await assert.rejects(
      store.park("g", [{ stream: "B-1", events: [event(0)], failure: failure() }]),
    );
    await assert.rejects(store.park("g", [{ stream: "A-1", events: [event(1)] }]));
    assert.equal(await store.get("g", "B-1"), undefined, "not acknowledged, not kept");
    assert.equal((await store.get("g", "A-1"))?.events, 1);
    await rm(path, { recursive: true });
    await store.park("g", [{ stream: "A-1", events: [event(1)] }]);
    assert.equal((await store.get("g", "A-1"))?.events, 2);
    const saved = JSON.parse(await readFile(path, "utf8"));
    assert.deepEqual(saved.streams.map((s: { stream: string }) => s.stream), ["A-1"]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

Deno.test("file park store: what a killed process had acknowledged is there on reopen", async () => {
  const dir = await temp();
  try {
    const script = new URL("./support/file_parker.ts", import.meta.url).pathname;
    const isBun = "Bun" in globalThis;
    const child = spawn(
      process.execPath,
      isBun ? [script, dir] : ["run", "-A", "--quiet", script, dir],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    const acked: number[] = [];
    let pending = "";
    const exited = new Promise<void>((resolve) => child.on("exit", () => resolve()));
    await new Promise<void>((resolve, reject) => {
      child.on("exit", () => reject(new Error(`child exited early after ${acked.length}`)));
      child.stdout!.on("data", (chunk: Uint8Array) => {
        pending += new TextDecoder().decode(chunk);
        const lines = pending.split("\n");
        pending = lines.pop()!;
        for (const line of lines) acked.push(Number(line));
        if (acked.length >= 20) {
          child.kill("SIGKILL"); // while it is parking the next streams
          resolve();
        }
      });
    });
    await exited;
    assert.equal(child.signalCode, "SIGKILL");
    // The dead process's lock is taken over; every acknowledged park is there.
    await using store = await fileParkStore(dir);
    const parked = new Set((await store.list("g")).map((e) => e.stream));
    for (const i of acked) assert.ok(parked.has(`S-${i}`), `S-${i} was acknowledged`);
    assert.ok(parked.size >= acked.length);
    JSON.parse(await readFile(`${dir}/parked.json`, "utf8")); // whole, not half written
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
