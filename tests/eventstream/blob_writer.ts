// One of the two writer processes of blob.test.ts: appends APPENDS times through the service to
// the stream in container CONTAINER, each append decided on the state (the event carries the
// writer, its own counter, and the sequence number and total count its builder saw), then
// prints its builder calls and the sequence numbers of its own events as JSON.
import { blobStorage } from "../../eventstream/blob.ts";
import { eventStream } from "../../eventstream/mod.ts";
import { service } from "./azurite.ts";

const [containerName, writer, appends, maxBlocks, barrier] = Deno.args;
const storage = await blobStorage({
  container: service.getContainerClient(containerName),
  maxBlocks: Number(maxBlocks),
});
type Event = { writer: string; n: number; sawSeq: number; sawCount: number };
const stream = eventStream<Event, { count: number }>({
  storage,
  projections: { count: { name: "Count-1", initial: 0, apply: (c) => c + 1 } },
  maxAttempts: 1000,
});
await stream.ready;
// Both writers start appending together (each waits for the other's mark), so that they conflict.
await Deno.writeTextFile(`${barrier}/${writer}`, "");
while ([...Deno.readDirSync(barrier)].length < 2) await new Promise((r) => setTimeout(r, 5));
const mine: number[] = [];
let attempts = 0;
for (let n = 0; n < Number(appends); n++) {
  const done = await stream.append((
    state,
    seq,
  ) => [{ writer, n, sawSeq: seq, sawCount: state.count }]);
  attempts += done.attempts;
  mine.push(done.first!);
  // A pause like an application's between decisions; without one, the writer whose appends need
  // no catch-up wins every race and the other waits until it has finished.
  await new Promise((r) => setTimeout(r, Math.random() * 3));
}
console.log(JSON.stringify({ writer, attempts, mine }));
