// The status page in a real browser: Debian's Chromium driven by playwright-core. Two running
// pipelines, one with a stream that keeps failing and one with a parked stream; the page must
// show the failing stream with its error, numbers that move as events flow, refuse an action
// without the token (and do it with the token), and fall back to polling when Server-Sent Events
// are blocked. A screenshot goes to .cache/test-output/ (its path is printed). Without a browser
// that starts, the test is ignored with the reason, never passed.
import assert from "node:assert/strict";
import { type Browser, chromium, type Page } from "playwright-core";
import { serve, statusWorld, TOKEN } from "./status_fixture.ts";

// IMPEL_CHROMIUM names another build (and, naming a missing one, shows the ignored path).
const CHROMIUM = Deno.env.get("IMPEL_CHROMIUM") ?? "/usr/bin/chromium";
const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"];

function launch(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM, args: ARGS, timeout: 60_000 });
}

/** Why the browser cannot be used here, or undefined when it starts. */
async function browserProblem(): Promise<string | undefined> {
  try {
    await Deno.stat(CHROMIUM);
  } catch {
    return `${CHROMIUM} is missing (apt-get install chromium; .ci/run installs it)`;
  }
  try {
    const browser = await launch();
    await browser.close();
    return undefined;
  } catch (error) {
    return `Chromium did not start: ${(error as Error).message.split("\n")[0]}`;
  }
}

const problem = await browserProblem();
if (problem) console.warn(`status page browser test ignored: ${problem}`);

const card = (group: string) => `section.card[data-group="${group}"]`;

async function text(page: Page, selector: string): Promise<string> {
  return (await page.locator(selector).first().textContent()) ?? "";
}

/** Polls the first element's `what` (its text by default) until `ok` holds. */
async function waitFor(
  page: Page,
  selector: string,
  ok: (value: string) => boolean,
  what: string,
  read: (page: Page, selector: string) => Promise<string> = text,
): Promise<string> {
  const deadline = Date.now() + 15_000;
  let value = "";
  while (Date.now() < deadline) {
    if (await page.locator(selector).count() > 0) {
      value = await read(page, selector);
      if (ok(value)) return value;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}; last: ${JSON.stringify(value)}`);
}

/** Waits until the element's text differs from what it is now. */
async function changes(page: Page, selector: string, what: string): Promise<void> {
  const before = await waitFor(page, selector, () => true, what);
  await waitFor(page, selector, (now) => now !== before, `${what} to change from ${before}`);
}

const points = async (page: Page, selector: string) =>
  (await page.locator(selector).first().getAttribute("points")) ?? "";

Deno.test({
  name: problem === undefined
    ? "status page in Chromium: a failing stream with its error, moving numbers, actions need the token, polling fallback"
    : `status page in Chromium (ignored: ${problem})`,
  ignore: problem !== undefined,
  // playwright-core keeps its own connection and timers until the browser closes.
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const world = await statusWorld({ token: TOKEN, intervalMs: 250, handlerMs: 1 });
    const server = serve(world.handler);
    const browser = await launch();
    const errors: string[] = [];
    try {
      const page = await browser.newPage({ viewport: { width: 1280, height: 1300 } });
      page.on("pageerror", (e) => errors.push(e.message));
      await page.goto(`${server.url}/`);

      // The failing stream appears with its error.
      const failing = page.locator(
        `${card("billing")} tr[data-state="failing"][data-stream="Payment-bad"] td.err`,
      );
      await failing.waitFor({ timeout: 15_000 });
      assert.equal(await failing.textContent(), "Error: card declined by the test gateway");
      assert.equal(await text(page, "#conn"), "live: Server-Sent Events");
      // No escape left as text (Bun's transpiler rewrote non-ASCII characters of the template).
      assert.doesNotMatch(await page.locator("body").innerText(), /\\u[0-9a-f]{4}/);
      assert.equal(await text(page, "#token-button"), "Token\u2026");
      const parked = `${card("shipping")} tr[data-stream="Parcel-lost"]`;
      await page.locator(parked).waitFor({ timeout: 15_000 });
      assert.match(await text(page, `${card("shipping")} [data-field="reasons"]`), /parked/);
      assert.equal(
        await text(page, `${card("shipping")} [data-field="pipeline-health"]`),
        "degraded",
      );

      // Numbers move as events flow: totals, and the chart gets points.
      const handled = `${card("shipping")} [data-field="handled"]`;
      await changes(page, handled, "shipping's handled count");
      const lag = `${card("billing")} tr[data-tranche="all"] td:nth-child(6)`;
      await changes(page, lag, "billing's lag");
      await waitFor(
        page,
        `${card("shipping")} svg polyline`,
        (p) => p.split(" ").length >= 3,
        "a throughput line of 3 points",
        points,
      );

      const dir = new URL("../../.cache/test-output/", import.meta.url).pathname;
      await Deno.mkdir(dir, { recursive: true });
      const shot = `${dir}status-page.png`;
      await page.screenshot({ path: shot, fullPage: true });
      const size = (await Deno.stat(shot)).size;
      console.log(`status page screenshot: ${shot} (${size} bytes)`);
      assert.ok(size > 10_000);

      // An action without the token: confirmed in the page, refused by the server.
      const dialogs: string[] = [];
      page.on("dialog", (d) => {
        dialogs.push(d.message());
        void d.accept();
      });
      await page.locator(`${parked} button`).click();
      await waitFor(page, "#notice", (t) => /refused \(401 MissingToken\)/.test(t), "the refusal");
      assert.match(dialogs[0], /^Release Parcel-lost of shipping\?/);
      assert.equal(await page.locator("#token-form").isVisible(), true);
      assert.equal((await world.parked.get("shipping", "Parcel-lost"))?.request, undefined);

      // With the token (kept in the page's memory), the same action is accepted.
      await page.locator("#token-input").fill(TOKEN);
      await page.locator("#token-entry button[type=submit]").click();
      await page.locator(`${parked} button`).click();
      await waitFor(page, "#notice", (t) => /Release of Parcel-lost: done \(202\)/.test(t), "202");
      assert.equal(dialogs.length, 2);

      // Server-Sent Events blocked: the page polls, and its numbers still move.
      const polling = await browser.newPage();
      polling.on("pageerror", (e) => errors.push(e.message));
      await polling.route("**/status/events", (route) => route.abort());
      await polling.goto(`${server.url}/`);
      await waitFor(polling, "#conn", (t) => /^polling every 0.25 s/.test(t), "polling");
      await changes(polling, handled, "the polling page's count");
      assert.deepEqual(errors, []);
    } finally {
      await browser.close();
      await server.close();
      await world.stop();
    }
  },
});
