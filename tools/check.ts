/**
 * The check task: formatting, lint, type checks (Deno's, and tsc with Bun's types), doc lint
 * on every entry point, and a publish dry run. Entry points come from deno.json `exports`, so a new backend is checked as soon as it
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
  // The README's code blocks type-check as a reader would paste them (fragments say `ignore`).
  ["check", "--doc-only", "README.md"],
  ["doc", "--lint", ...entries],
  ["publish", "--dry-run", "--allow-dirty"],
];
for (const args of steps) await run(Deno.execPath(), args);

// A Bun user type-checks their reactor with tsc and @types/bun, which lack some DOM names that
// Deno's types have: every entry point must type-check there too.
const tsc = new URL("../.cache/tsc/", import.meta.url);
const tscBin = new URL("node_modules/typescript/bin/tsc", tsc);
if (!(await exists(tscBin)) || !(await exists(new URL("node_modules/@types/bun/", tsc)))) {
  await Deno.mkdir(tsc, { recursive: true });
  await run("npm", [
    "install",
    "--prefix",
    tsc.pathname,
    "--no-save",
    "--no-audit",
    "--no-fund",
    "--loglevel=error",
    "typescript@5",
    "@types/bun@1",
  ]);
}
await Deno.writeTextFile(
  new URL("tsconfig.json", tsc),
  JSON.stringify({
    compilerOptions: {
      target: "ES2022",
      module: "ESNext",
      moduleResolution: "bundler",
      allowImportingTsExtensions: true,
      noEmit: true,
      strict: true,
      skipLibCheck: true,
      lib: ["ESNext"],
      types: ["bun"],
      typeRoots: ["./node_modules/@types"],
    },
    files: entries.map((e) => new URL(`../${e}`, import.meta.url).pathname),
  }),
);
await run("node", [tscBin.pathname, "-p", new URL("tsconfig.json", tsc).pathname]);
console.error("check: all passed");

async function exists(url: URL): Promise<boolean> {
  try {
    await Deno.stat(url);
    return true;
  } catch {
    return false;
  }
}

async function run(cmd: string, args: string[]): Promise<void> {
  console.error(`$ ${cmd === Deno.execPath() ? "deno" : cmd} ${args.join(" ")}`);
  const { code } = await new Deno.Command(cmd, { args, stdout: "inherit", stderr: "inherit" })
    .output();
  if (code !== 0) {
    console.error(`check failed: ${cmd === Deno.execPath() ? "deno" : cmd} exited with ${code}`);
    Deno.exit(code);
  }
}
