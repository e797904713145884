// The README's Workflows example (examples/workflow_readme.ts): the README shows exactly this
// file with the package's import names, documents every runner member it uses, and the file
// runs as a real process under Deno and Bun with the outcomes it promises.
import assert from "node:assert/strict";

const root = new URL("../..", import.meta.url).pathname;
const file = `${root}examples/workflow_readme.ts`;
const bun = await Deno.stat(`${root}node_modules/.bin/bun`).then(
  () => `${root}node_modules/.bin/bun`,
  () => undefined,
);

/** The README's Workflows section, up to the next `## ` heading. */
async function workflowsSection(): Promise<string> {
  const readme = await Deno.readTextFile(`${root}README.md`);
  const start = readme.indexOf("\n## Workflows\n");
  assert.ok(start >= 0, "README has a Workflows section");
  const end = readme.indexOf("\n## ", start + 1);
  return readme.slice(start, end < 0 ? undefined : end);
}

Deno.test("README: the Workflows example is examples/workflow_readme.ts with the package's names", async () => {
  const section = await workflowsSection();
  const exports: Record<string, string> = JSON.parse(
    await Deno.readTextFile(`${root}deno.json`),
  ).exports;
  const byFile = new Map(Object.entries(exports).map(([name, path]) => [path.slice(2), name]));
  const code = (await Deno.readTextFile(file))
    .split("\n").filter((l) => !l.startsWith("//")).join("\n").trim()
    .replace(/"\.\.\/([^"]+)"/g, (_, path) => {
      const name = byFile.get(path);
      assert.ok(name !== undefined, `${path} is an entry point of the package`);
      return `"@impel/impel${name.slice(1)}"`;
    });
  assert.ok(section.includes("```ts\n" + code + "\n```"), "the README shows the example as it is");
});

Deno.test("README: every runner member the example uses is documented in the Workflows section", async () => {
  const section = await workflowsSection();
  const used = new Set(
    [...(await Deno.readTextFile(file)).matchAll(/\brunner\.(\w+)/g)].map((m) => m[1]),
  );
  assert.ok(used.size >= 4, `the example uses the runner: ${[...used]}`);
  const members = [
    "handle",
    "read",
    "streamOf",
    "awaitIdle",
    "stop",
    "stats",
    "sink",
    "timers",
    "running",
  ];
  for (const member of new Set([...used, ...members])) {
    assert.match(
      section,
      new RegExp(`\`runner\\.${member}\\b[^\`]*\``),
      `runner.${member} is documented`,
    );
  }
});

for (const runtime of ["deno", "bun"] as const) {
  Deno.test({
    name: `examples/workflow_readme.ts under ${runtime}: completes, compensates, times out`,
    ignore: runtime === "bun" && bun === undefined,
    fn: async () => {
      const { code, stdout, stderr } = await new Deno.Command(
        runtime === "deno" ? Deno.execPath() : bun!,
        {
          args: runtime === "deno" ? ["run", "-A", file] : ["run", file],
          cwd: root,
          env: { NO_COLOR: "1" },
          stdout: "piped",
          stderr: "piped",
        },
      ).output();
      const out = new TextDecoder().decode(stdout);
      assert.equal(code, 0, `${out}\n${new TextDecoder().decode(stderr)}`);
      assert.deepEqual(out.trim().split("\n"), [
        "o1: completed; 0 sends, 0 timers left",
        "o2: compensated (pay: card declined); 0 sends, 0 timers left",
        "o3: compensated (pay: no outcome within 900000 ms); 0 sends, 0 timers left",
        "Stock-tea: 1 reserved",
      ]);
    },
  });
}

Deno.test("examples/workflow_readme.ts: Reserve and Release are idempotent by the stock's state", async () => {
  // The example's own code, with an order cancelled before any runner delivered its Reserve
  // (withdrawn, never delivered): the Release still comes, as the step's outcome is unknown to
  // the saga, and must change nothing.
  const source = (await Deno.readTextFile(file)).replaceAll('"../', `"file://${root}`);
  const at = (text: string) => source.indexOf(text);
  const script = `import { workflowClient } from "file://${root}core/workflow.ts";
${source.slice(0, at("const clock = manualClock"))}
const client = workflowClient(fulfilment, { store });
await client.handle("o9", { type: "Start", data: { orderId: "o9", sku: "tea", amount: 10 } });
await client.handle("o9", { type: "Cancel", data: { reason: "changed mind" } });
${source.slice(at("const clock = manualClock"), at("const orders: Order[]"))}
await runner.awaitIdle();
const types = (await store.readStream("Stock-tea")).map((e) => e.type);
console.log((await runner.read("o9")).state.status, types.join(",") || "none");
console.log(JSON.stringify(await stock.query("Stock-tea", (held) => held)));
await runner.stop();
`;
  const path = await Deno.makeTempFile({ suffix: ".ts" });
  try {
    await Deno.writeTextFile(path, script);
    const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--config", `${root}deno.json`, path],
      cwd: root,
      env: { NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const out = new TextDecoder().decode(stdout);
    assert.equal(code, 0, `${out}\n${new TextDecoder().decode(stderr)}`);
    assert.deepEqual(out.trim().split("\n"), ["compensated none", "[]"]);
  } finally {
    await Deno.remove(path);
  }
});
