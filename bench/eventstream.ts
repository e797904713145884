// Event stream benchmark (issue 16), on local files and on Azurite (tools/azurite.sh):
// - append throughput of one writer through the service, one event per append against 100 per
//   append (files with fsync "never" and "always", Azurite), in alternating rounds;
// - catch-up events/s of a fresh service with a projection, against the floors of a bare read of
//   the same bytes (segment files; the stream's blobs) and, on files, of decoding them without a
//   projection, in alternating rounds;
// - a restart from snapshots kept in the stream's own storage (`snapshots: "storage"`) against the
//   full replay, for a stream of --events events (1M) on files and --azurite-events on Azurite.
// Every row is a median of --rounds rounds and carries the load average (`/proc/loadavg`) when it
// was measured: the machine is shared.
//
//   deno run -A bench/eventstream.ts [--events 1000000] [--azurite-events 1000000] [--rounds 3]
//     [--seconds 2] [--no-azurite]
import { readdir, readFile } from "node:fs/promises";
import {
  decodeFrames,
  type EventStorage,
  eventStream,
  fileStorage,
  type Projection,
} from "../eventstream/mod.ts";
import { blobStorage } from "../eventstream/blob.ts";

const args = new Map<string, string>();
for (let k = 0; k < Deno.args.length; k++) {
  const a = Deno.args[k].replace(/^--/, "");
  if (Deno.args[k + 1] === undefined || Deno.args[k + 1].startsWith("--")) args.set(a, "true");
  else args.set(a, Deno.args[++k]);
}
const EVENTS = Number(args.get("events") ?? 1_000_000);
const AZ_EVENTS = Number(args.get("azurite-events") ?? EVENTS);
const ROUNDS = Number(args.get("rounds") ?? 3);
const SECONDS = Number(args.get("seconds") ?? 2);
const AZURITE = !args.has("no-azurite");

type Event = { type: "Counted"; word: string; count: number };
type Words = ReadonlyMap<string, number>;
// A projection of realistic cost: a map of 1,000 words, updated in place for speed but handed
// out as the same object (the benchmark never shares states across threads).
const words: Projection<Event, Words> = {
  name: "Words-1",
  initial: new Map(),
  apply: (state, e) => (state as Map<string, number>).set(e.word, e.count),
  save: (state) => [...state],
  load: (json) => new Map(json as [string, number][]),
};
const fresh = () => ({ words: { ...words, initial: new Map() } });
const event = (i: number): Event => ({ type: "Counted", word: `w${i % 1000}`, count: i });
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const fmt = (n: number) => n.toLocaleString("en-US", { maximumFractionDigits: 0 });
const load = () => Deno.readTextFileSync("/proc/loadavg").split(" ")[0];
const rows: string[][] = [];
const row = (...cells: string[]) => {
  rows.push(cells);
  console.error(cells.join(" | "));
};

/** Runs each of `cases` once per round, in the same order each round; medians per case. */
async function alternate<T extends string>(
  cases: readonly (readonly [T, () => Promise<number>])[],
): Promise<Record<T, { median: number; all: number[]; loads: string[] }>> {
  const out = {} as Record<T, { median: number; all: number[]; loads: string[] }>;
  for (const [name] of cases) out[name] = { median: 0, all: [], loads: [] };
  for (let r = 0; r < ROUNDS; r++) {
    for (const [name, fn] of cases) {
      out[name].all.push(await fn());
      out[name].loads.push(load());
    }
  }
  for (const [name] of cases) out[name].median = median(out[name].all);
  return out;
}
const loads = (r: { loads: string[] }) => r.loads.join("/");

/** Events per second of appends of `perAppend` events through the service for SECONDS. */
async function appends(open: () => Promise<EventStorage>, perAppend: number): Promise<number> {
  const storage = await open();
  const service = eventStream<Event, { words: Words }>({ storage, projections: fresh() });
  await service.ready;
  let n = 0;
  const started = performance.now();
  while (performance.now() - started < SECONDS * 1000) {
    await service.append(() => Array.from({ length: perAppend }, () => event(n++)));
  }
  const s = (performance.now() - started) / 1000;
  await service.close();
  return n / s;
}

/** Writes `n` events in appends of 1000; seconds taken. */
async function fill(storage: EventStorage, n: number): Promise<number> {
  let last = 0;
  const t = performance.now();
  while (last < n) {
    last = await storage.append(
      last,
      Array.from({ length: Math.min(1000, n - last) }, (_, i) => event(last + i)),
    );
  }
  await storage.close();
  return (performance.now() - t) / 1000;
}

/**
 * Seconds for a fresh service to be ready (snapshots or not), opening the storage included (it
 * checks the stream's end), checking what it replayed.
 */
async function ready(
  open: () => Promise<EventStorage>,
  n: number,
  snapshots: boolean,
): Promise<number> {
  const t = performance.now();
  const service = eventStream<Event, { words: Words }>({
    storage: await open(),
    projections: fresh(),
    ...(snapshots ? { snapshots: "storage" as const } : {}),
  });
  await service.ready;
  const s = (performance.now() - t) / 1000;
  if (service.sequence !== n) throw new Error(`caught up to ${service.sequence} of ${n}`);
  if (service.applied !== (snapshots ? 0 : n)) throw new Error(`applied ${service.applied}`);
  if (service.localState.words.get("w999") !== n - 1001 + 1000) throw new Error("wrong state");
  await service.close();
  return s;
}

/** Saves snapshots at the end of the stream (through a writer service on `storage`). */
async function snapshot(storage: EventStorage): Promise<void> {
  const service = eventStream<Event, { words: Words }>({
    storage,
    projections: fresh(),
    snapshots: "storage",
  });
  await service.ready;
  await service.saveSnapshots();
  await service.close();
}

const time = async (fn: () => Promise<unknown>) => {
  const t = performance.now();
  await fn();
  return (performance.now() - t) / 1000;
};

const temp = await Deno.makeTempDir({ prefix: "impel-bench-es-" });
const azurite = AZURITE ? await import("../tests/eventstream/azurite.ts") : undefined;
const containers: string[] = [];
const container = (what: string) => {
  const name = azurite!.uniqueContainer(what);
  containers.push(name);
  return azurite!.service.getContainerClient(name);
};
try {
  // Appends: each configuration once per round, a fresh stream each time.
  let k = 0;
  const cases: [string, () => Promise<number>][] = [];
  for (const per of [1, 100]) {
    for (const fsync of ["never", "always"] as const) {
      cases.push([
        `append, files, \`fsync: "${fsync}"\`, ${per} per append`,
        () => appends(() => fileStorage(`${temp}/append-${k++}`, { fsync }), per),
      ]);
    }
    if (AZURITE) {
      cases.push([
        `append, Azurite, ${per} per append`,
        () => appends(() => blobStorage({ container: container("bench-append") }), per),
      ]);
    }
  }
  const appended = await alternate(cases);
  for (const [name] of cases) {
    const r = appended[name];
    const per = name.includes(" 100 per") ? 100 : 1;
    row(name, `${fmt(r.median)} events/s`, `${fmt(r.median / per)} appends/s`, loads(r));
  }

  // Files: EVENTS events; catch-up against its floors; restart from snapshots against replay.
  const dir = `${temp}/stream`;
  const wrote = await fill(await fileStorage(dir, { fsync: "never" }), EVENTS);
  console.error(`wrote ${fmt(EVENTS)} events to files in ${wrote.toFixed(1)} s`);
  const segments = (await readdir(dir)).filter((n) => n.endsWith(".seg")).sort();
  let bytes = 0;
  const bareRead = () =>
    time(async () => {
      bytes = 0;
      for (const s of segments) bytes += (await readFile(`${dir}/${s}`)).length;
    });
  // Decoded a page of 1000 at a time, as the service reads, so that the floor does not hold 1M
  // decoded events at once.
  const decodeOnly = () =>
    time(async () => {
      let seq = 1;
      for (const s of segments) {
        const bytes = await readFile(`${dir}/${s}`);
        for (let at = 0; at < bytes.length;) {
          const d = decodeFrames(bytes.subarray(at), {
            where: s,
            expectedSeq: seq,
            maxCount: 1000,
          });
          seq += d.events.length;
          at += d.end;
        }
      }
      if (seq !== EVENTS + 1) throw new Error(`decoded ${seq - 1}`);
    });
  await snapshot(await fileStorage(dir));
  const files = await alternate(
    [
      ["bare", bareRead],
      ["decode", decodeOnly],
      ["replay", () => ready(() => fileStorage(dir, { readOnly: true }), EVENTS, false)],
      ["snapshot", () => ready(() => fileStorage(dir, { readOnly: true }), EVENTS, true)],
    ] as const,
  );
  const rate = (n: number, r: { median: number }) => `${fmt(n / r.median)} events/s`;
  const secs = (r: { median: number }) => `${r.median.toFixed(2)} s`;
  row(
    `catch-up, files, projection, ${fmt(EVENTS)} events`,
    rate(EVENTS, files.replay),
    secs(files.replay),
    loads(files.replay),
  );
  row(
    `floor: decode the same files (checksums, JSON), no projection`,
    rate(EVENTS, files.decode),
    secs(files.decode),
    loads(files.decode),
  );
  row(
    `floor: bare read of the same files (${fmt(bytes / 1e6)} MB)`,
    rate(EVENTS, files.bare),
    secs(files.bare),
    loads(files.bare),
  );
  row(
    `restart from snapshots in the files at ${fmt(EVENTS)} (vs the replay above)`,
    "",
    `${(files.snapshot.median * 1000).toFixed(0)} ms`,
    loads(files.snapshot),
  );

  if (AZURITE) {
    const blobs = container("bench-catchup");
    const wrote = await fill(await blobStorage({ container: blobs }), AZ_EVENTS);
    console.error(`wrote ${fmt(AZ_EVENTS)} events to Azurite in ${wrote.toFixed(1)} s`);
    await snapshot(await blobStorage({ container: blobs }));
    let blobBytes = 0;
    const bare = () =>
      time(async () => {
        blobBytes = 0;
        for await (const item of blobs.listBlobsFlat({ prefix: "events." })) {
          blobBytes += (await blobs.getBlobClient(item.name).downloadToBuffer()).length;
        }
      });
    const az = await alternate(
      [
        ["bare", bare],
        [
          "replay",
          () => ready(() => blobStorage({ container: blobs, readOnly: true }), AZ_EVENTS, false),
        ],
        [
          "snapshot",
          () => ready(() => blobStorage({ container: blobs, readOnly: true }), AZ_EVENTS, true),
        ],
      ] as const,
    );
    row(
      `catch-up, Azurite, projection, ${fmt(AZ_EVENTS)} events`,
      rate(AZ_EVENTS, az.replay),
      secs(az.replay),
      loads(az.replay),
    );
    row(
      `floor: bare download of the same blobs (${fmt(blobBytes / 1e6)} MB)`,
      rate(AZ_EVENTS, az.bare),
      secs(az.bare),
      loads(az.bare),
    );
    row(
      `restart from snapshots in the blobs at ${fmt(AZ_EVENTS)} (vs the replay above)`,
      "",
      `${(az.snapshot.median * 1000).toFixed(0)} ms`,
      loads(az.snapshot),
    );
  }
} finally {
  await Deno.remove(temp, { recursive: true });
  for (const name of containers) {
    await azurite!.service.getContainerClient(name).delete().catch(() => {});
  }
}
console.log(
  "| measurement | rate | per append or total | load (each round) |\n| --- | ---: | ---: | ---: |",
);
for (const r of rows) console.log(`| ${r.join(" | ")} |`);
