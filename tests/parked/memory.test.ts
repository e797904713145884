// The park-store contract against the memory store (the reference implementation).
import { memoryParkStore } from "../../parked/memory.ts";
import { parkStoreContract } from "./contract.ts";

parkStoreContract(
  "memory park store",
  () =>
    Promise.resolve({ store: memoryParkStore(), [Symbol.asyncDispose]: () => Promise.resolve() }),
);
