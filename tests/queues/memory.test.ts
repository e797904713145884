// The queue-store contract against the memory store (the reference implementation), and the
// consumer against it.
import { memoryQueues } from "../../queues/memory.ts";
import { queueStoreContract } from "./contract.ts";
import { consumerContract } from "./consumer_contract.ts";

const fresh = (options: { maxDeliveries?: number; maxMessageBytes?: number }) =>
  Promise.resolve({
    store: memoryQueues(options),
    [Symbol.asyncDispose]: () => Promise.resolve(),
  });

queueStoreContract("memory queues", fresh);
consumerContract("memory queues", fresh);
