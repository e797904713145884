// Delivery under load: a producer appends 10k events while 50 clients in 5 processes and one
// browser (EventSource) subscribe; every server-side connection is cut halfway, and each client
// must still get every event once and in order. Then a server in its own process with a client
// that stops reading: its RSS must stay bounded while much more than the bound is appended.
import assert from "node:assert/strict";
import { createMemoryStore } from "../../sources/memory.ts";
import { createDeliveryHandler, memoryFeed } from "../../delivery/server.ts";
import { subscribe } from "../../delivery/client.ts";
import { messageDbStore } from "../../stores/messagedb.ts";
import { poolFixture, unique, url as pgUrl } from "../support/postgres.ts";
import { serve } from "./serve.ts";

const TOKEN = "reader-token-0123456789";
const EVENTS = 10_000;
const PROCESSES = 5;
const PER_PROCESS = 10;
const isBun = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined";
// Children run on the test's runtime.
const runtimeArgs = (file: string) =>
  isBun
    ? {
      cmd: (globalThis as unknown as { process: { execPath: string } }).process.execPath,
      args: ["run", file],
    }
    : { cmd: Deno.execPath(), args: ["run", "-A", file] };

const CHROMIUM = Deno.env.get("IMPEL_CHROMIUM") ?? "/usr/bin/chromium";
async function browserProblem(): Promise<string | undefined> {
  try {
    await Deno.stat(CHROMIUM);
  } catch {
    return `${CHROMIUM} is missing (apt-get install chromium)`;
  }
  try {
    await import("playwright-core");
  } catch (error) {
    return `playwright-core does not load: ${(error as Error).message.split("\n")[0]}`;
  }
  return undefined;
}
const browserMissing = await browserProblem();
if (browserMissing) console.warn(`delivery browser client ignored: ${browserMissing}`);

const PAGE = `<!doctype html><meta charset="utf-8"><title>delivery</title><script>
window.got = []; window.bad = null; window.errors = 0;
const es = new EventSource("/streams/Order?format=sse&token=${TOKEN}");
es.onmessage = (m) => {
  const n = JSON.parse(m.data).data.n;
  if (n !== window.got.length) window.bad = "expected " + window.got.length + ", got " + n;
  window.got.push(n);
  if (window.got.length === ${EVENTS}) es.close();
};
es.onerror = () => { window.errors++; };
</script>`;

Deno.test("delivery load: 10k events to 50 clients in 5 processes and a browser, across a forced disconnect", async () => {
  const store = createMemoryStore();
  const handler = createDeliveryHandler({
    feed: memoryFeed(store),
    tokens: { [TOKEN]: ["read:Order"] },
    retryMs: 50,
  });
  const s = serve(
    handler,
    (request) =>
      new URL(request.url).pathname === "/page"
        ? new Response(PAGE, { headers: { "content-type": "text/html" } })
        : undefined,
  );
  const { chromium } = browserMissing ? { chromium: undefined } : await import("playwright-core");
  const browser = await chromium?.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
  });
  try {
    const page = await browser?.newPage();
    await page?.goto(`${s.url}/page`);
    const fixture = new URL("./clients_fixture.ts", import.meta.url).pathname;
    const children = Array.from({ length: PROCESSES }, () => {
      const { cmd, args } = runtimeArgs(fixture);
      return new Deno.Command(cmd, {
        args: [...args, `${s.url}/streams/Order`, TOKEN, String(PER_PROCESS), String(EVENTS)],
        stdout: "piped",
        stderr: "piped",
      }).output();
    });
    const expected = PROCESSES * PER_PROCESS + (browser ? 1 : 0);
    const deadline = Date.now() + 60_000;
    while (s.open < expected && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.equal(s.open, expected, "every client connected");
    let cutAt = 0;
    for (let i = 0; i < EVENTS; i++) {
      await store.append(`Order-${i % 20}`, [{ type: "Placed", data: { n: i } }], "any");
      if (i % 200 === 199) await new Promise((r) => setTimeout(r, 1));
      if (i === EVENTS / 2) {
        cutAt = s.open;
        s.cut();
      }
    }
    assert.equal(cutAt, expected, "every client was connected at the cut");
    const outputs = await Promise.all(children);
    const results = outputs.flatMap((o) => {
      assert.ok(o.success, new TextDecoder().decode(o.stderr));
      return new TextDecoder().decode(o.stdout).trim().split("\n").map((l) => JSON.parse(l));
    });
    assert.equal(results.length, PROCESSES * PER_PROCESS);
    for (const r of results) {
      assert.equal(r.problem, undefined);
      assert.equal(r.received, EVENTS);
      assert.ok(r.reconnects >= 1, `client ${r.client} was cut and reconnected`);
    }
    if (page) {
      await page.waitForFunction(
        `window.got.length >= ${EVENTS} || window.bad !== null`,
        undefined,
        {
          timeout: 120_000,
        },
      );
      const state = await page.evaluate(
        "({ n: window.got.length, bad: window.bad, errors: window.errors })",
      ) as {
        n: number;
        bad: string | null;
        errors: number;
      };
      assert.equal(state.bad, null);
      assert.equal(state.n, EVENTS);
      assert.ok(state.errors >= 1, "the browser saw the cut and reconnected with Last-Event-ID");
    }
  } finally {
    await browser?.close();
    await s.close();
  }
});

Deno.test({
  name: "delivery: a client that stops reading does not grow the server's memory beyond a bound",
  ignore: false,
}, async () => {
  await poolFixture({ max: 4 })(async (pool) => {
    const category = unique("Slow");
    const fixture = new URL("./server_fixture.ts", import.meta.url).pathname;
    const { cmd, args } = runtimeArgs(fixture);
    const child = new Deno.Command(cmd, {
      args: [...args, pgUrl, category, TOKEN],
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let first = "";
    while (!first.includes("\n")) first += (await lines.read()).value ?? "";
    const port = Number(first.trim());
    const rss = async () => {
      const status = await Deno.readTextFile(`/proc/${child.pid}/status`);
      return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) * 1024;
    };
    const base = `http://127.0.0.1:${port}/streams/${category}`;
    try {
      const store = messageDbStore(pool);
      const body = "x".repeat(8_000);
      const append = async (from: number, n: number) => {
        for (let i = from; i < from + n; i += 50) {
          await store.append(
            `${category}-${i % 10}`,
            Array.from({ length: 50 }, (_, k) => ({ type: "Big", data: { n: i + k, body } })),
            "any",
          );
        }
      };
      // Warm the server up on a first page, then measure.
      await append(0, 500);
      const warm = await fetch(`${base}?format=json&limit=500`, {
        headers: { authorization: `Bearer ${TOKEN}` },
      });
      assert.equal((await warm.json()).events.length, 500);
      const before = await rss();
      const slow = await fetch(`${base}?from=start`, {
        headers: { authorization: `Bearer ${TOKEN}` },
      });
      const slowReader = slow.body!.getReader();
      assert.ok((await slowReader.read()).value!.length > 0);
      const EVENTS_BIG = 10_000;
      // A bounded buffer stops growing once filled; one that follows the appends grows with them:
      // the second half of the appends must not grow the server as the first half may have.
      await append(500, EVENTS_BIG / 2 - 500);
      await new Promise((r) => setTimeout(r, 1_500));
      const mid = await rss();
      await append(EVENTS_BIG / 2, EVENTS_BIG / 2);
      await new Promise((r) => setTimeout(r, 1_500));
      const after = await rss();
      const mib = (n: number) => (n / 2 ** 20).toFixed(1);
      console.log(
        `server RSS ${mib(before)} MiB -> ${mib(mid)} MiB (38 MiB appended) -> ${mib(after)} MiB ` +
          `(76 MiB appended) with a stalled client`,
      );
      assert.ok(
        after - mid < 16 * 2 ** 20,
        `RSS grew by ${mib(after - mid)} MiB in the second half`,
      );
      assert.ok(after - before < 64 * 2 ** 20, `RSS grew by ${mib(after - before)} MiB in all`);
      // The events were there to be read: a client that reads gets all of them meanwhile.
      let got = 0;
      for await (const e of subscribe(base, { token: TOKEN })) {
        assert.equal((e.data as { n: number }).n, got);
        if (++got === EVENTS_BIG) break;
      }
      // And the stalled one, once it reads again, resumes where it was, in order.
      let text = "";
      let n = -1;
      while (n < 2_000) {
        const { value, done } = await slowReader.read();
        if (done) break;
        text += new TextDecoder().decode(value);
        const lines = text.split("\n");
        text = lines.pop()!;
        for (const line of lines) {
          const parsed = JSON.parse(line);
          if (parsed.data === undefined) continue;
          assert.ok(parsed.data.n > n);
          n = parsed.data.n;
        }
      }
      await slowReader.cancel();
    } finally {
      child.kill("SIGTERM");
      await child.status;
      await lines.cancel().catch(() => {});
    }
  });
});
