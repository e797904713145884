// Two running pipelines over one memory store, a producer appending to them, and the HTTP
// handler over both: "billing" retries Payment-bad forever ("card declined"), "shipping" parks
// Parcel-lost after two attempts ("address unknown"). Not a test file itself.
import { memoryCheckpoints } from "../../checkpoints/memory.ts";
import { run, streamsSink } from "../../core/sink.ts";
import { createHttpHandler, type HttpHandler } from "../../observability/http.ts";
import { createMetrics, type ImpelMetrics } from "../../observability/metrics.ts";
import { memoryParkStore } from "../../parked/memory.ts";
import type { ParkStore } from "../../core/park.ts";
import { createMemoryStore, memorySource, type MemoryStore } from "../../sources/memory.ts";

export const TOKEN = "status-page-token-0123456789";

export interface StatusWorld {
  readonly handler: HttpHandler;
  readonly metrics: ImpelMetrics;
  readonly store: MemoryStore;
  readonly parked: ParkStore;
  /** Events appended by the producer so far. */
  appended(): number;
  /** Stops the producer and both pipelines. */
  stop(): Promise<void>;
}

export interface StatusWorldOptions {
  readonly token?: string;
  readonly protectReads?: boolean;
  readonly intervalMs?: number;
  readonly historyIntervalMs?: number;
  readonly dropAfterMs?: number;
  readonly maxClients?: number;
  /** Events the producer appends per tick of 20 ms (default 5; 0: none after the first). */
  readonly perTick?: number;
  /** A handler call's duration, ms (default 0). */
  readonly handlerMs?: number;
}

export async function statusWorld(options: StatusWorldOptions = {}): Promise<StatusWorld> {
  const store = createMemoryStore();
  const metrics = createMetrics({
    defaultMetrics: false,
    history: { intervalMs: options.historyIntervalMs ?? 200 },
  });
  const checkpoints = memoryCheckpoints();
  const parked = memoryParkStore();
  const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
  const handlerMs = options.handlerMs ?? 0;
  const billing = streamsSink({
    group: "billing",
    statsIntervalMs: 0,
    // Payment-bad holds its batch's completion: without room to read ahead, billing would stop
    // handling new events after 16 batches (shown as read-ahead 16/16 and a growing lag).
    maxReadAhead: 100_000,
    commitIntervalMs: 20,
    retry: { initialDelayMs: 20, maxDelayMs: 100 },
    handler: async (stream) => {
      if (handlerMs > 0) await pause(handlerMs);
      if (stream === "Payment-bad") throw new Error("card declined by the test gateway");
    },
  });
  const shipping = streamsSink({
    group: "shipping",
    statsIntervalMs: 0,
    commitIntervalMs: 20,
    retry: { initialDelayMs: 5, maxDelayMs: 5 },
    failure: { kind: "park", maxAttempts: 2, store: parked, pollMs: 20 },
    handler: async (stream) => {
      if (handlerMs > 0) await pause(handlerMs);
      if (stream === "Parcel-lost") throw new Error("address unknown");
    },
  });
  const head = { head: () => Promise.resolve(BigInt(store.head)) };
  const ac = new AbortController();
  const runs = (["billing", "shipping"] as const).map((group) => {
    const sink = group === "billing" ? billing : shipping;
    const pipeline = metrics.addPipeline({
      group,
      source: "memory",
      sink,
      checkpoints,
      positions: head,
      headCacheMs: 100,
    });
    const category = group === "billing" ? "Payment" : "Parcel";
    const source = memorySource({ store, checkpoints, group, categories: [category] });
    return run(pipeline.observe(source), sink, { signal: ac.signal });
  });
  await store.append("Payment-bad", [{ type: "Charged", data: { amount: 12 } }], 0);
  await store.append("Parcel-lost", [{ type: "Sent", data: {} }], 0);
  let appended = 2;
  const perTick = options.perTick ?? 5;
  const versions = new Map<string, number>();
  const producing = (async () => {
    let i = 0;
    while (!ac.signal.aborted) {
      for (let k = 0; k < perTick; k++, i++) {
        const stream = i % 2 === 0 ? `Payment-${i % 40}` : `Parcel-${i % 30}`;
        const v = versions.get(stream) ?? 0;
        await store.append(stream, [{ type: "Happened", data: { i } }], v);
        versions.set(stream, v + 1);
        appended++;
      }
      await pause(20);
    }
  })();
  const handler = createHttpHandler({
    metrics,
    token: options.token,
    protectReads: options.protectReads,
    status: {
      intervalMs: options.intervalMs ?? 200,
      dropAfterMs: options.dropAfterMs,
      maxClients: options.maxClients,
    },
  });
  return {
    handler,
    metrics,
    store,
    parked,
    appended: () => appended,
    async stop() {
      ac.abort();
      await producing;
      await Promise.allSettled(runs);
    },
  };
}

/** Serves `handler` on 127.0.0.1 with the runtime's own server (Bun.serve under Bun). */
export function serve(
  handler: (request: Request) => Response | Promise<Response>,
): { url: string; close(): Promise<void> } {
  const bun = (globalThis as {
    Bun?: {
      serve(o: unknown): { port: number; stop(force?: boolean): Promise<void> | void };
    };
  }).Bun;
  if (bun) {
    // idleTimeout 0: an event stream may be quiet for longer than Bun's default 10 s.
    const server = bun.serve({ hostname: "127.0.0.1", port: 0, fetch: handler, idleTimeout: 0 });
    return {
      url: `http://127.0.0.1:${server.port}`,
      close: async () => void await server.stop(true),
    };
  }
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, handler);
  return { url: `http://127.0.0.1:${server.addr.port}`, close: () => server.shutdown() };
}

/** Reads Server-Sent Events from a response body: each event's name and parsed data. */
export async function* sseEvents(
  body: ReadableStream<Uint8Array>,
): AsyncGenerator<{ event: string; id?: string; data: unknown }> {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      buffer += value;
      let at;
      while ((at = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, at);
        buffer = buffer.slice(at + 2);
        let event = "message", id: string | undefined;
        const data: string[] = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) event = line.slice(6).trim();
          else if (line.startsWith("id:")) id = line.slice(3).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (data.length > 0) yield { event, id, data: JSON.parse(data.join("\n")) };
      }
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
}
