/**
 * The check task: formatting, lint, type checks, doc lint on every entry point, and a publish
 * dry run. Entry points come from deno.json `exports`, so a new backend is checked as soon as it
 * is exported. Exits non-zero on the first failure.
 */
const config = JSON.parse(await Deno.readTextFile(new URL("../deno.json", import.meta.url)));
const entries: string[] = Object.values(config.exports as Record<string, string>);
// Every published module, so that JSDoc examples of internal modules are type-checked too.
const published: string[] = [];
for (const path of config.publish.include as string[]) {
  if (path.endsWith(".ts")) published.push(path);
  else if (path.endsWith("/")) {
    for await (const entry of Deno.readDir(new URL(`../${path}`, import.meta.url))) {
      if (entry.isFile && entry.name.endsWith(".ts")) published.push(`${path}${entry.name}`);
    }
  }
}
const steps: string[][] = [
  ["fmt", "--check"],
  ["lint"],
  ["check", "--doc", ...published],
  ["check", "tests/", "bench/", "examples/", "tools/"],
  ["doc", "--lint", ...entries],
  ["publish", "--dry-run", "--allow-dirty"],
];
for (const args of steps) {
  console.error(`$ deno ${args.join(" ")}`);
  const { code } = await new Deno.Command(Deno.execPath(), {
    args,
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  if (code !== 0) {
    console.error(`check failed: deno ${args[0]} exited with ${code}`);
    Deno.exit(code);
  }
}
console.error("check: all passed");
