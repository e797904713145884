// Lokad's distributed word counter: every running copy of this program shares one dictionary of
// words and their counts, kept as one event stream on Azure blobs (Azurite) or in local files.
// Each line typed is split into words and counted; a line starting with `--` removes its words.
// An empty line prints the counts, which follow the other copies' appends in the background.
//   deno run -A examples/word_counter.ts files /tmp/words      # or: bun examples/word_counter.ts ...
//   deno run -A examples/word_counter.ts azurite words          # a container on Azurite
// (The README shows this file with the package's import names; tests/examples/word_counter.test.ts
// runs three copies at once on each backend and checks the counts.)
import { createInterface } from "node:readline";
import { BlobServiceClient } from "@azure/storage-blob";
import { eventStream, fileStorage, type Projection } from "../eventstream/mod.ts";
import { blobStorage } from "../eventstream/blob.ts";

type Event =
  | { type: "ValueUpdated"; key: string; value: number }
  | { type: "ValueDeleted"; key: string };
type Counts = Readonly<Record<string, number>>;

const counts: Projection<Event, Counts> = {
  name: "Counts-1",
  initial: {},
  apply: (state, e) => {
    if (e.type === "ValueUpdated") return { ...state, [e.key]: e.value };
    const { [e.key]: _, ...rest } = state;
    return rest;
  },
  save: (state) => state,
  load: (json) => json as Counts,
};

const [backend, where] = process.argv.slice(2);
const storage = backend === "files"
  ? await fileStorage(where, { shared: true }) // several processes on this host take turns
  : await blobStorage({
    container: BlobServiceClient.fromConnectionString(
      process.env.AZURE_STORAGE_CONNECTION_STRING ?? "UseDevelopmentStorage=true", // Azurite
    ).getContainerClient(where),
  });
const service = eventStream({
  storage,
  projections: { counts },
  snapshots: "storage", // beside the stream: a start reads only what came after
  refreshMs: 200, // follow the other copies' appends
  maxAttempts: 100, // copies fed from files append back to back: many conflicts in a row
});
await service.ready;

for await (const line of createInterface({ input: process.stdin })) {
  const remove = line.startsWith("--");
  const words = (remove ? line.slice(2) : line).split(/\W+/).filter((w) => w !== "");
  if (words.length === 0) {
    console.log(JSON.stringify(service.localState.counts));
    continue;
  }
  // Decided on the current state: called again on a newer one if another copy appended first.
  const { result } = await service.append((state) => {
    const next: Record<string, number> = { ...state.counts };
    const events: Event[] = [];
    for (const key of words) {
      if (remove) {
        if (!(key in next)) continue;
        delete next[key];
        events.push({ type: "ValueDeleted", key });
      } else {
        next[key] = (next[key] ?? 0) + 1;
        events.push({ type: "ValueUpdated", key, value: next[key] });
      }
    }
    return { events, result: words.map((w) => `${w}=${next[w] ?? 0}`).join(" ") };
  });
  console.log(result);
}
console.log(JSON.stringify((await service.currentState()).counts)); // input ended: as they are now
await service.saveSnapshots();
await service.close();
