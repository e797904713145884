// stopOnSignals in real processes under Deno and Bun: the first SIGTERM or SIGINT drains the
// pipeline and commits; a second one while a handler hangs exits at once with 128 + signal.
import assert from "node:assert/strict";
import { InvalidArgumentError } from "../../core/errors.ts";
import { stopOnSignals, type StopSignal } from "../../core/shutdown.ts";

const root = new URL("../..", import.meta.url).pathname;
const script = `${root}tests/support/stop_reactor.ts`;
const bun = await Deno.stat(`${root}node_modules/.bin/bun`).then(
  () => `${root}node_modules/.bin/bun`,
  () => undefined,
);

async function reactor(
  runtime: "deno" | "bun",
  mode: string[],
  signals: Deno.Signal[],
): Promise<{ code: number; out: string }> {
  const child = new Deno.Command(runtime === "deno" ? Deno.execPath() : bun!, {
    args: runtime === "deno" ? ["run", "-A", script, ...mode] : ["run", script, ...mode],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  let out = "";
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const reading = (async () => {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      out += value;
    }
  })();
  while (!out.includes("ready")) await new Promise((r) => setTimeout(r, 10));
  for (const signal of signals) {
    child.kill(signal);
    await new Promise((r) => setTimeout(r, 200));
  }
  const { code } = await child.status;
  await reading;
  return { code, out };
}

for (const runtime of ["deno", "bun"] as const) {
  Deno.test({
    name: `stopOnSignals under ${runtime}: SIGTERM drains in-flight calls and commits`,
    ignore: runtime === "bun" && bun === undefined,
    fn: async () => {
      const { code, out } = await reactor(runtime, [], ["SIGTERM"]);
      assert.equal(code, 0, out);
      assert.match(out, /got SIGTERM/);
      const [, handled, committed] = out.match(/stopped (\d+) (\d+|undefined)/)!;
      assert.ok(Number(handled) >= 1, out);
      assert.notEqual(committed, "undefined", "the final commit ran");
    },
  });
  Deno.test({
    name: `stopOnSignals under ${runtime}: a second SIGINT ends a hung stop with exit 130`,
    ignore: runtime === "bun" && bun === undefined,
    fn: async () => {
      const { code, out } = await reactor(runtime, ["hang"], ["SIGINT", "SIGINT"]);
      assert.equal(code, 130, out);
      assert.match(out, /got SIGINT/);
      assert.doesNotMatch(out, /stopped/);
    },
  });
}

Deno.test("stopOnSignals: bad signal names are refused; dispose removes the listeners", () => {
  assert.throws(
    () => stopOnSignals({ signals: ["SIGKILL" as StopSignal] }),
    (e) => e instanceof InvalidArgumentError && /signals must list SIGINT/.test(e.message),
  );
  const stop = stopOnSignals({ signals: ["SIGHUP"] });
  stop.dispose();
  stop.dispose(); // idempotent
  assert.equal(stop.signal.aborted, false);
});
