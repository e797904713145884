// The README's distributed word counter (examples/word_counter.ts) as three real processes at
// once (two under Deno, one under Bun where it is installed) sharing one stream, on Azurite and on
// local files: each is fed its own lines on stdin and counts them with a builder; then the stream
// holds every count exactly (each ValueUpdated is the previous value + 1: decided on the state
// with every event before it), and a fourth process started afterwards reads the same counts.
// Also checks that the README shows exactly this file.
import assert from "node:assert/strict";
import { BlobServiceClient } from "@azure/storage-blob";
import { fileStorage } from "../../eventstream/mod.ts";
import { blobStorage } from "../../eventstream/blob.ts";
import type { EventStorage } from "../../eventstream/mod.ts";
import { readmeForm, readmeShows } from "../support/readme.ts";
import { bun } from "../support/example_process.ts";
import { uniqueContainer } from "../eventstream/azurite.ts";

const root = new URL("../..", import.meta.url).pathname;
const CONNECTION = "UseDevelopmentStorage=true";
const VOCABULARY = ["the", "cat", "saw", "other", "dog", "sat"];
const LINES = 25;

Deno.test("README: the word counter is examples/word_counter.ts with the package's names", async () => {
  assert.ok(await readmeShows(await readmeForm("examples/word_counter.ts")));
});

/**
 * Runs one copy with `lines` on stdin (from a file, through `sh`, so that the Bun run's Deno shim,
 * which has no piped stdin, runs it too); its stdout lines once it has ended.
 */
async function counter(runtime: "deno" | "bun", args: string[], lines: string[]) {
  const file = `${root}examples/word_counter.ts`;
  const feed = await Deno.makeTempFile({ prefix: "impel-words-feed-" });
  await Deno.writeTextFile(feed, lines.map((l) => `${l}\n`).join(""));
  const command = runtime === "deno"
    ? [Deno.execPath(), "run", "-A", "--quiet", file, ...args]
    : [bun!, "run", file, ...args];
  const { code, stdout, stderr } = await new Deno.Command("sh", {
    args: ["-c", 'exec "$@" < "$0"', feed, ...command],
    cwd: root,
    env: { AZURE_STORAGE_CONNECTION_STRING: CONNECTION, NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  await Deno.remove(feed);
  const out = new TextDecoder().decode(stdout);
  assert.equal(code, 0, `${runtime} ${args}: ${new TextDecoder().decode(stderr)}\n${out}`);
  return out.trim().split("\n");
}

async function shared(args: string[], open: () => Promise<EventStorage>) {
  // Each copy's lines: 1 to 3 words of a small vocabulary, so that they contend for the same keys.
  const feeds = [0, 1, 2].map((p) =>
    Array.from(
      { length: LINES },
      (_, i) =>
        Array.from({ length: 1 + ((i + p) % 3) }, (_, j) => VOCABULARY[(i * 7 + j * 3 + p) % 6])
          .join(" "),
    )
  );
  const expected: Record<string, number> = {};
  for (const word of feeds.flat().join(" ").split(" ")) expected[word] = (expected[word] ?? 0) + 1;
  const runtimes = ["deno", "deno", bun ? "bun" : "deno"] as const;
  const outs = await Promise.all(feeds.map((lines, p) => counter(runtimes[p], args, lines)));
  for (const [p, out] of outs.entries()) {
    assert.equal(out.length, LINES + 1, out.join("\n"));
    // Each line's answer names its words with counts; its last line, the counts it then read.
    assert.match(out[0], new RegExp(`^${feeds[p][0].split(" ")[0]}=\\d+`));
    const final = JSON.parse(out.at(-1)!) as Record<string, number>;
    for (const [word, n] of Object.entries(final)) assert.ok(n <= expected[word], word);
  }
  // The stream: every count exactly, each ValueUpdated one more than the last of its word.
  const storage = await open();
  const events: { type: string; key: string; value: number }[] = [];
  for (let after = 0;;) {
    const page = await storage.read(after, 1000);
    if (page.length === 0) break;
    for (const e of page) events.push(e.event as (typeof events)[number]);
    after = page.at(-1)!.seq;
  }
  await storage.close();
  const seen: Record<string, number> = {};
  for (const [i, e] of events.entries()) {
    assert.equal(e.type, "ValueUpdated");
    assert.equal(
      e.value,
      (seen[e.key] ?? 0) + 1,
      `event ${i + 1} (${e.key}) was decided on stale state`,
    );
    seen[e.key] = e.value;
  }
  assert.equal(events.length, Object.values(expected).reduce((a, b) => a + b, 0));
  assert.deepEqual(seen, expected);
  // A copy started now reads the same counts (from the snapshot the others saved, and the tail).
  const late = await counter("deno", args, [""]);
  assert.deepEqual(JSON.parse(late[0]), expected);
}

Deno.test("examples/word_counter.ts: three processes share one stream on local files", async () => {
  const dir = await Deno.makeTempDir({ prefix: "impel-words-" });
  await shared(["files", dir], () => fileStorage(dir, { readOnly: true }));
  await Deno.remove(dir, { recursive: true });
});

Deno.test("examples/word_counter.ts: three processes share one stream on Azurite", async () => {
  const name = uniqueContainer("words");
  const container = BlobServiceClient.fromConnectionString(CONNECTION).getContainerClient(name);
  await shared(["azurite", name], () => blobStorage({ container, readOnly: true }));
  await container.delete();
});
