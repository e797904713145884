// Two writer processes appending 5,000 times each to one event stream on Azurite
// (tools/azurite.sh): every event exactly once, in one order both see, each decided on the full
// state before it. The default suite runs the same with 300 (tests/eventstream/blob.test.ts).
//
//   deno task faults tests/faults/eventstream_writers.fault.ts
import { twoWriters } from "../eventstream/writers.ts";

Deno.test("event stream blobs: two writer processes, 5,000 appends each", () => twoWriters(5000));
