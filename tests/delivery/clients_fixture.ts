// A process running several subscribe() clients of one subscription; each checks that it gets
// the events numbered 0..count-1 once and in order, then the process prints one JSON line per
// client. Arguments: url token clients count.
import { subscribe } from "../../delivery/client.ts";

const runtime = globalThis as unknown as {
  Deno?: { args: string[] };
  process?: { argv: string[] };
};
const [url, token, clientsText, countText] = runtime.Deno?.args ??
  runtime.process!.argv.slice(2);
const count = Number(countText);

async function client(k: number) {
  let reconnects = 0;
  let next = 0;
  let problem: string | undefined;
  const started = Date.now();
  const events = subscribe(url, {
    token,
    retry: { initialDelayMs: 20, maxDelayMs: 500 },
    onReconnect: () => void reconnects++,
  });
  for await (const event of events) {
    const n = (event.data as { n: number }).n;
    if (n !== next) {
      problem = `client ${k}: expected event ${next}, got ${n}`;
      break;
    }
    if (++next === count) break;
  }
  return { client: k, received: next, reconnects, problem, ms: Date.now() - started };
}

const results = await Promise.all(
  Array.from({ length: Number(clientsText) }, (_, k) => client(k)),
);
for (const r of results) console.log(JSON.stringify(r));
