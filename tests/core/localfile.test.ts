// The lock file of the file backends (core/localfile.ts) after a crash: a stale lock is taken
// over, a live one is not.
import assert from "node:assert/strict";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { hostname, tmpdir } from "node:os";
import process from "node:process";
import { fileParkStore, ParkStoreLockedError } from "../../parked/file.ts";

const temp = () => mkdtemp(`${tmpdir()}/impel-rev12-`);

// A container restarted after a SIGKILL keeps its hostname and often gets the same pid (pid 1,
// or the same small pid): the dead process's lock then names this process, which kill(pid, 0)
// finds alive, so the store can never be opened again without deleting LOCK by hand.
Deno.test("lock: a stale lock naming this process's pid (pid reuse after a restart) is taken over", async () => {
  const dir = await temp();
  try {
    await writeFile(
      `${dir}/LOCK`,
      JSON.stringify({ pid: process.pid, host: hostname(), since: new Date(0) }),
    );
    const store = await fileParkStore(dir);
    await store.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

// takeLock creates LOCK with flag "wx" and then writes its content: a crash (or power loss,
// the write is not fsynced) between the two leaves an empty LOCK, read as "held, by whom we
// cannot tell", for good.
Deno.test("lock: an empty LOCK left by a crash between create and write is not held for good", async () => {
  const dir = await temp();
  try {
    await writeFile(`${dir}/LOCK`, "");
    const store = await fileParkStore(dir);
    await store.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

// After a reboot (the data directory kept, pids counted from 1 again) the dead process's pid is
// likely some other live process's: kill(pid, 0) succeeds, so the lock records the boot. pid 1
// stands for it here; a lock without a boot or start naming a live pid stays held.
Deno.test("lock: a stale lock naming a pid reused by another live process is taken over", async () => {
  const dir = await temp();
  try {
    await writeFile(
      `${dir}/LOCK`,
      JSON.stringify({ pid: 1, host: hostname(), since: new Date(0) }),
    );
    await assert.rejects(fileParkStore(dir), ParkStoreLockedError);
    await writeFile(
      `${dir}/LOCK`,
      JSON.stringify({ pid: 1, host: hostname(), boot: "an-earlier-boot", since: new Date(0) }),
    );
    const store = await fileParkStore(dir);
    await store.close();
    // The same pid alive but started at another time: a reused pid.
    await writeFile(
      `${dir}/LOCK`,
      JSON.stringify({ pid: 1, host: hostname(), start: "-1", since: new Date(0) }),
    );
    await (await fileParkStore(dir)).close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

// A stale lock is removed only under LOCK.takeover, so that no process removes a lock another
// took over meanwhile. pid 1 with start "-1" stands for a dead process; pid 1 without a start for
// a live one (its liveness cannot be told apart from a running process's).
Deno.test("lock: a stale lock is taken over under the takeover claim; a dead taker's claim too", async () => {
  const dir = await temp();
  const stale = JSON.stringify({ pid: 1, host: hostname(), start: "-1", since: new Date(0) });
  const live = JSON.stringify({ pid: 1, host: hostname(), since: new Date(0) });
  try {
    await writeFile(`${dir}/LOCK`, stale);
    await writeFile(`${dir}/LOCK.takeover`, live);
    await assert.rejects(fileParkStore(dir), ParkStoreLockedError, "another process takes over");
    assert.equal(await readFile(`${dir}/LOCK`, "utf8"), stale, "the stale lock is left to it");
    await writeFile(`${dir}/LOCK.takeover`, stale);
    const store = await fileParkStore(dir);
    await store.close();
    assert.deepEqual(
      (await readdir(dir)).filter((n) => n.startsWith("LOCK")),
      [],
      "no claim left behind",
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

Deno.test("lock: a store open in this process holds its lock against a second open", async () => {
  const dir = await temp();
  try {
    const store = await fileParkStore(dir);
    await assert.rejects(fileParkStore(dir), ParkStoreLockedError);
    await store.close();
    await (await fileParkStore(dir)).close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
