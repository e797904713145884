/**
 * Preloaded by `bun test` (bunfig.toml): the suite's test files, written for `deno test`, see
 * `Deno` as the shim of `./deno.ts`. The shim is imported into each test file that names `Deno`
 * (prepended on the file's first line, so line numbers stay right) rather than set on
 * `globalThis`, because the library detects Deno by `globalThis.Deno` and must take its Bun
 * paths here.
 */
type OnLoad = (args: { path: string }) => Promise<{ contents: string; loader: "ts" }>;
type Build = { onLoad(o: { filter: RegExp }, fn: OnLoad): void };
const { Bun } = globalThis as unknown as {
  Bun: { plugin(p: { name: string; setup(b: Build): void }): void; file(p: string): Blob };
};

const shim = new URL("./deno.ts", import.meta.url).pathname;
const tests = new URL("..", import.meta.url).pathname;
// Only files under tests/ are looked at: library modules load untouched.
const under = new RegExp(`^${tests.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}.*\\.ts$`);

Bun.plugin({
  name: "deno-test-shim",
  setup(build) {
    build.onLoad({ filter: under }, async ({ path }) => {
      const source = await Bun.file(path).text();
      const wanted = path !== shim && /\bDeno\./.test(source);
      return {
        contents: wanted ? `import { Deno } from "${shim}";${source}` : source,
        loader: "ts",
      };
    });
  },
});
