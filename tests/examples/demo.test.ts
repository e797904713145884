// The demo as the README runs it: a real process, its exit code and its summary, on the
// embedded default and on DynamoDB Local (`tools/dynamodb.sh start`).
import assert from "node:assert/strict";
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
