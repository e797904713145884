// Event stream benchmark (issue 16): append throughput through the service (one event per append
// and 100 per append, fsync "always" and "never") and catch-up events/s with a projection on the
// file backend, against the floors of a bare read of the same segment files (bytes only) and of
// decoding them (checksums, JSON) without a projection; a restart from a snapshot against a full
// replay; optionally the same appends and catch-up on Azurite (--azurite, tools/azurite.sh).
// Catch-up and its floors run in alternating rounds; the table reports medians.
//
//   deno run -A bench/eventstream.ts [--events 1000000] [--rounds 3] [--seconds 2] [--azurite]
import { readdir, readFile } from "node:fs/promises";
import {
  decodeFrames,
  type EventStorage,
  eventStream,
  fileSnapshots,
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
const ROUNDS = Number(args.get("rounds") ?? 3);
const SECONDS = Number(args.get("seconds") ?? 2);
const AZURITE = args.has("azurite");

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
const event = (i: number): Event => ({ type: "Counted", word: `w${i % 1000}`, count: i });
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const fmt = (n: number) => n.toLocaleString("en-US", { maximumFractionDigits: 0 });
const rows: string[][] = [];
const row = (...cells: string[]) => {
  rows.push(cells);
  console.error(cells.join(" | "));
};

async function appends(
  label: string,
  open: () => Promise<EventStorage>,
  perAppend: number,
): Promise<void> {
  const storage = await open();
  const service = eventStream<Event, { words: Words }>({ storage, projections: { words } });
  await service.ready;
  let n = 0;
  const started = performance.now();
  while (performance.now() - started < SECONDS * 1000) {
    await service.append(() => Array.from({ length: perAppend }, () => event(n++)));
  }
  const s = (performance.now() - started) / 1000;
  await service.close();
  row(
    `append, ${label}, ${perAppend} per append`,
    `${fmt(n / s)} events/s`,
    `${fmt(n / perAppend / s)} appends/s`,
  );
}

const temp = await Deno.makeTempDir({ prefix: "impel-bench-es-" });
try {
  for (const fsync of ["never", "always"] as const) {
    for (const per of [1, 100]) {
      await appends(
        `files fsync ${fsync}`,
        () => fileStorage(`${temp}/append-${fsync}-${per}`, { fsync }),
        per,
      );
    }
  }

  // The stream to catch up on: EVENTS events in appends of 1000.
  const dir = `${temp}/stream`;
  {
    const storage = await fileStorage(dir, { fsync: "never" });
    let last = 0;
    const t = performance.now();
    while (last < EVENTS) {
      last = await storage.append(
        last,
        Array.from({ length: Math.min(1000, EVENTS - last) }, (_, i) => event(last + i)),
      );
    }
    await storage.close();
    console.error(
      `wrote ${fmt(EVENTS)} events in ${((performance.now() - t) / 1000).toFixed(1)} s`,
    );
  }
  const segments = (await readdir(dir)).filter((n) => n.endsWith(".seg")).sort();
  let bytes = 0;

  const catchUp = async () => {
    const service = eventStream<Event, { words: Words }>({
      storage: await fileStorage(dir, { readOnly: true }),
      projections: { words: { ...words, initial: new Map() } },
    });
    await service.ready;
    if (service.sequence !== EVENTS) throw new Error(`caught up to ${service.sequence}`);
    await service.close();
  };
  const bareRead = async () => {
    bytes = 0;
    for (const s of segments) bytes += (await readFile(`${dir}/${s}`)).length;
  };
  // Decoded a page of 1000 at a time, as the service reads, so that the floor does not hold 1M
  // decoded events at once.
  const decodeOnly = async () => {
    let seq = 1;
    for (const s of segments) {
      const bytes = await readFile(`${dir}/${s}`);
      for (let at = 0; at < bytes.length;) {
        const d = decodeFrames(bytes.subarray(at), { where: s, expectedSeq: seq, maxCount: 1000 });
        seq += d.events.length;
        at += d.end;
      }
    }
    if (seq !== EVENTS + 1) throw new Error(`decoded ${seq - 1}`);
  };
  const times: Record<string, number[]> = { catchUp: [], bareRead: [], decodeOnly: [] };
  for (let r = 0; r < ROUNDS; r++) {
    for (
      const [name, fn] of [["bareRead", bareRead], ["decodeOnly", decodeOnly], [
        "catchUp",
        catchUp,
      ]] as const
    ) {
      const t = performance.now();
      await fn();
      times[name].push((performance.now() - t) / 1000);
    }
  }
  const rate = (k: string) => `${fmt(EVENTS / median(times[k]))} events/s`;
  row(
    `catch-up, files, projection, ${fmt(EVENTS)} events`,
    rate("catchUp"),
    `${median(times.catchUp).toFixed(2)} s`,
  );
  row(
    `floor: decode the same files (checksums, JSON), no projection`,
    rate("decodeOnly"),
    `${median(times.decodeOnly).toFixed(2)} s`,
  );
  row(
    `floor: bare read of the same files (${fmt(bytes / 1e6)} MB)`,
    rate("bareRead"),
    `${median(times.bareRead).toFixed(2)} s`,
  );

  // Restart from a snapshot taken at the end against a full replay.
  const snapshots = fileSnapshots(`${temp}/snapshots`);
  {
    const service = eventStream<Event, { words: Words }>({
      storage: await fileStorage(dir),
      projections: { words: { ...words, initial: new Map() } },
      snapshots,
    });
    await service.ready;
    await service.saveSnapshots();
    await service.close();
  }
  const restart: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const t = performance.now();
    const service = eventStream<Event, { words: Words }>({
      storage: await fileStorage(dir, { readOnly: true }),
      projections: { words: { ...words, initial: new Map() } },
      snapshots,
    });
    await service.ready;
    if (service.applied !== 0) throw new Error(`the restart replayed ${service.applied} events`);
    restart.push((performance.now() - t) / 1000);
    await service.close();
  }
  row(
    `restart from a snapshot at ${fmt(EVENTS)} (full replay: ${
      median(times.catchUp).toFixed(2)
    } s)`,
    `${(median(restart) * 1000).toFixed(0)} ms`,
    "",
  );

  if (AZURITE) {
    const { service: blobs, uniqueContainer } = await import("../tests/eventstream/azurite.ts");
    for (const per of [1, 100]) {
      await appends(
        "Azurite",
        () => blobStorage({ container: blobs.getContainerClient(uniqueContainer("bench")) }),
        per,
      );
    }
    const container = blobs.getContainerClient(uniqueContainer("bench-catchup"));
    const n = Math.min(EVENTS, 100_000);
    const storage = await blobStorage({ container });
    let last = 0;
    while (last < n) {
      last = await storage.append(
        last,
        Array.from({ length: 1000 }, (_, i) => event(last + i)),
      );
    }
    const ts: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const t = performance.now();
      const service = eventStream<Event, { words: Words }>({
        storage: await blobStorage({ container, readOnly: true }),
        projections: { words: { ...words, initial: new Map() } },
      });
      await service.ready;
      ts.push((performance.now() - t) / 1000);
    }
    row(
      `catch-up, Azurite, projection, ${fmt(n)} events`,
      `${fmt(n / median(ts))} events/s`,
      `${median(ts).toFixed(2)} s`,
    );
  }
} finally {
  await Deno.remove(temp, { recursive: true });
}
console.log("| measurement | rate | |\n| --- | ---: | ---: |");
for (const r of rows) console.log(`| ${r.join(" | ")} |`);
