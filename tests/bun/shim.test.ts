// The Deno shim (tests/bun/deno.ts) reports what `deno test` would: runs tests/bun/fixtures/
// deno_cases.ts under `bun test` and compares each case's outcome with the one its name expects.
import { expect, test } from "bun:test";

const root = new URL("../..", import.meta.url).pathname;
type Spawn = (cmd: string[], o: object) => {
  stdout: ReadableStream;
  stderr: ReadableStream;
  exited: Promise<number>;
};
const { Bun } = globalThis as unknown as { Bun: { spawn: Spawn } };

test("the shim passes, fails and skips the cases as Deno would", async () => {
  const proc = Bun.spawn([process.execPath, "test", "./tests/bun/fixtures/deno_cases.ts"], {
    cwd: root,
    env: { ...process.env, NO_COLOR: "1" },
    stdout: "pipe",
    stderr: "pipe",
  });
  const out = (await new Response(proc.stdout).text()) + (await new Response(proc.stderr).text());
  const code = await proc.exited;
  const outcomes = [
    ...out.matchAll(/^\((pass|fail|skip)\) (pass|fail|skip): (.*?)(?: \[[\d.]+m?s\])?$/gm),
  ];
  expect(outcomes.length).toBe(17);
  for (const [line, got, expected] of outcomes) {
    expect(`${got} ${line}`).toBe(`${expected} ${line}`);
  }
  expect(code).toBe(1);
});
