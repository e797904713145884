// What the README shows of an example file: its code without the leading comment lines, with the
// repository's relative imports spelled as the package's names (deno.json `exports`).
const root = new URL("../..", import.meta.url).pathname;

/** The example at `path` (from the repository root) as the README must show it. */
export async function readmeForm(path: string): Promise<string> {
  const exports: Record<string, string> = JSON.parse(
    await Deno.readTextFile(`${root}deno.json`),
  ).exports;
  const byFile = new Map(Object.entries(exports).map(([name, p]) => [p.slice(2), name]));
  return (await Deno.readTextFile(`${root}${path}`))
    .split("\n").filter((l) => !l.startsWith("//")).join("\n").trim()
    .replace(/"\.\.\/([^"]+)"/g, (_, p) => `"@impel/impel${byFile.get(p)!.slice(1)}"`);
}

/** Whether README.md shows `code` as one `ts` block. */
export async function readmeShows(code: string): Promise<boolean> {
  return (await Deno.readTextFile(`${root}README.md`)).includes("```ts\n" + code + "\n```");
}
