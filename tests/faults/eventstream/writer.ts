// A writer killed by tests/faults/eventstream.fault.ts: appends through the service to the file
// store at IMPEL_ES_DIR, batches of 1–5 events decided on the state (each event carries the
// sequence number it will get and the count the builder saw), and after each acknowledged append
// writes `ack <last>` as one unbuffered line, so that the parent knows what was acknowledged
// before the SIGKILL.
import { eventStream, fileStorage } from "../../../eventstream/mod.ts";
import { lineWriter } from "../support/process.ts";

const dir = Deno.env.get("IMPEL_ES_DIR")!;
const fsync = Deno.env.get("IMPEL_ES_FSYNC") === "never" ? "never" : "always";
const acks = lineWriter(Deno.env.get("IMPEL_ES_ACKS")!);
const run = Number(Deno.env.get("IMPEL_ES_RUN"));
// Small segments so that kills land around segment changes too.
// With IMPEL_ES_SHARED=1 one of several writers of the store at once (`shared: true`).
const shared = Deno.env.get("IMPEL_ES_SHARED") === "1";
const storage = await fileStorage(dir, { fsync, segmentBytes: 16 * 1024, shared });
const service = eventStream<{ run: number; seq: number; saw: number }, { count: number }>({
  storage,
  projections: { count: { name: "Count-1", initial: 0, apply: (n) => n + 1 } },
  maxAttempts: 1000,
});
await service.ready;
acks.write(`ready ${service.sequence}`);
let size = 1;
for (;;) {
  const { last } = await service.append((state, seq) => {
    const events = Array.from({ length: size }, (_, i) => ({
      run,
      seq: seq + 1 + i,
      saw: state.count,
      pad: "x".repeat((seq * 7) % 200),
    }));
    return events;
  });
  acks.write(`ack ${last}`);
  size = size % 5 + 1;
}
