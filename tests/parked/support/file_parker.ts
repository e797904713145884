// A child process for tests/parked/file.test.ts: opens the file park store in the directory
// given as the argument and parks one stream after another, printing each stream's number only
// once its park call has resolved, until it is killed.
import process from "node:process";
import { fileParkStore } from "../../../parked/file.ts";

const store = await fileParkStore(process.argv[process.argv.length - 1]);
for (let i = 0;; i++) {
  await store.park("g", [{
    stream: `S-${i}`,
    events: [{
      index: 0,
      type: "T",
      data: { i },
      meta: null,
      id: `e${i}`,
      time: new Date(),
      size: 1,
    }],
    failure: { error: "Error: poison", attempts: 3, firstFailedAt: 0, lastFailedAt: 1 },
  }]);
  process.stdout.write(`${i}\n`);
}
