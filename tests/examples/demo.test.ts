// The demo as the README runs it: a real process, its exit code and its summary, on the
// embedded default and on DynamoDB Local (`tools/dynamodb.sh start`).
import assert from "node:assert/strict";
import type { StatusSnapshot } from "../../observability/http.ts";
import { sseEvents } from "../observability/status_fixture.ts";
import { endpoint } from "../support/dynamo.ts";

const demo = new URL("../../examples/demo.ts", import.meta.url).pathname;
const demoTask: string = JSON.parse(
  await Deno.readTextFile(new URL("../../deno.json", import.meta.url)),
).tasks.demo;
const demoPermissions = demoTask.split(" ").filter((a) => a.startsWith("--allow-"));

async function runDemo(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    // The permissions of `deno task demo`, so that a missing one fails here too.
    args: ["run", ...demoPermissions, demo, ...args],
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code, out: dec.decode(stdout), err: dec.decode(stderr) };
}

Deno.test("demo: the memory store confirms every group and reports no problem", async () => {
  const r = await runDemo("--groups", "200");
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /^summary \(memory\):/m);
  assert.match(r.out, /groups {6}200 of 200 confirmed/);
  assert.doesNotMatch(r.err, /PROBLEM/);
});

Deno.test("demo: --store dynamo runs the reactor through the indexer on DynamoDB Local", async () => {
  const r = await runDemo("--store", "dynamo", "--endpoint", endpoint, "--groups", "4");
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /^summary \(dynamo \(http:\/\/127\.0\.0\.1:\d+, tables hotel-\*\)\):/m);
  assert.match(r.out, /groups {6}4 of 4 confirmed/);
});

Deno.test("demo: bad options exit 2 with the usage", async () => {
  const r = await runDemo("--store", "cosmos");
  assert.equal(r.code, 2);
  assert.match(r.err, /--store must be memory, pglite, messagedb or dynamo, got cosmos/);
  assert.match(
    (await runDemo("--endpoint", "http://x")).err,
    /--endpoint applies to --store dynamo/,
  );
});

Deno.test("demo: --serve keeps the status page up while the workload runs, then stops cleanly", async () => {
  const child = new Deno.Command(Deno.execPath(), {
    // --linger: a loaded machine may finish the workload before this side connects.
    args: [
      "run",
      ...demoPermissions,
      demo,
      ...["--groups", "300", "--serve", "127.0.0.1:0", "--linger", "3"],
    ],
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const errText = new Response(child.stderr).text();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  let url: string | undefined;
  while (url === undefined) {
    const { done, value } = await lines.read();
    if (done) break;
    out += value;
    url = /^status page: (http:\/\/127\.0\.0\.1:\d+\/)/m.exec(out)?.[1];
  }
  assert.ok(url, `no status page line in ${out}`);
  // Open while the workload runs: the page, and the reactor's live status.
  const page = await fetch(url);
  assert.equal(page.status, 200);
  assert.match(await page.text(), /<title>impel status<\/title>/);
  const events = await fetch(`${url}status/events`);
  const feed = sseEvents(events.body!);
  const data = (await feed.next()).value!.data as StatusSnapshot;
  assert.deepEqual(data.pipelines.map((p) => p.group), ["GroupCheckoutReactor"]);
  assert.equal(data.pipelines[0].state, "running");
  assert.equal(data.actions, true);
  // The page stays connected: the demo's shutdown ends its stream rather than waiting on it.
  for (;;) {
    const { done, value } = await lines.read();
    if (done) break;
    out += value;
  }
  const { code } = await child.status;
  assert.equal(code, 0, await errText);
  assert.match(out, /groups {6}300 of 300 confirmed/);
  assert.match(out, /serving the status page for 3 s more/);
  // Ended by the demo's shutdown, not by this side.
  for (let e = await feed.next(); !e.done; e = await feed.next()) {
    assert.equal(e.value.event, "snapshot");
  }
});

Deno.test("demo: bad --serve and --linger exit 2 naming the option", async () => {
  assert.match(
    (await runDemo("--serve", "9464")).err,
    /--serve must be HOST:PORT, e\.g\. 127\.0\.0\.1:9464, got 9464/,
  );
  assert.match((await runDemo("--linger", "5")).err, /--linger applies to --serve/);
  const r = await runDemo("--serve", "127.0.0.1:0", "--linger=-1");
  assert.equal(r.code, 2);
  assert.match(r.err, /--linger must be a number of seconds >= 0, got -1/);
});
