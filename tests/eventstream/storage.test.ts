import { rmSync } from "node:fs";
import { fileStorage, memoryStorage } from "../../eventstream/mod.ts";
import { contract } from "./contract.ts";

contract({
  name: "memory",
  open(events) {
    const storage = memoryStorage({ events });
    // A reopen is a byte-for-byte copy: what a backup of the stream would be.
    return Promise.resolve({
      storage,
      reopen: () => Promise.resolve(memoryStorage({ events: storage.events() })),
    });
  },
});

const dirs: string[] = [];
contract({
  name: "file",
  async open(events) {
    const dir = await Deno.makeTempDir({ prefix: "impel-es-" });
    dirs.push(dir);
    // A small segment limit, so that the suite crosses segment boundaries.
    const options = { segmentBytes: 2048, fsync: "never" as const };
    const storage = await fileStorage(dir, options);
    if (events?.length) await storage.append(0, events);
    return { storage, reopen: () => fileStorage(dir, options) };
  },
});

contract({
  name: "file (shared)",
  async open(events) {
    const dir = await Deno.makeTempDir({ prefix: "impel-es-" });
    dirs.push(dir);
    const options = { segmentBytes: 2048, fsync: "never" as const, shared: true };
    const storage = await fileStorage(dir, options);
    if (events?.length) await storage.append(0, events);
    return { storage, reopen: () => fileStorage(dir, options) };
  },
});

globalThis.addEventListener("unload", () => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
