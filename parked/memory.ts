/**
 * An in-process park store, for tests and single-process runs that need no persistence. It is
 * the reference for the contract every park store follows; events are kept in their stored
 * (JSON) form, so that what comes back is what a durable store would give. (Its logic is in
 * `parked/state.ts`, shared with the file store.)
 *
 * @module
 */
import type { ParkStore } from "../core/park.ts";
import { asyncParkStore, emptyParkState, parkStateStore } from "./state.ts";

/**
 * Options of {@linkcode memoryParkStore}.
 *
 * @example
 * ```ts
 * import { memoryParkStore, type MemoryParkStoreOptions } from "@impel/impel/parked/memory";
 * let fail = true;
 * const options: MemoryParkStoreOptions = {
 *   // A store that is down until the test says otherwise.
 *   beforeWrite: () => {
 *     if (fail) throw new Error("park store unavailable");
 *   },
 * };
 * const store = memoryParkStore(options);
 * await store.park("g", []).catch((e) => console.log(String(e))); // Error: park store unavailable
 * fail = false;
 * ```
 *
 * @category Parked streams
 */
export interface MemoryParkStoreOptions {
  /** Called before each `park` call; a throw fails the call (a deliberate fault, for tests). */
  readonly beforeWrite?: () => void;
}

/**
 * Creates an in-memory {@linkcode ParkStore}.
 *
 * @example
 * ```ts
 * import { memoryParkStore } from "@impel/impel/parked/memory";
 * const store = memoryParkStore();
 * await store.park("billing", [{
 *   stream: "Payment-1",
 *   events: [{ index: 0, type: "Paid", data: {}, meta: null, id: "e0", time: new Date(), size: 2 }],
 *   failure: { error: "Error: declined", attempts: 3, firstFailedAt: 0, lastFailedAt: 1 },
 * }]);
 * const [parked] = await store.list("billing");
 * console.log(parked.stream, parked.events, parked.error); // "Payment-1" 1 "Error: declined"
 * ```
 *
 * @category Parked streams
 */
export function memoryParkStore(options: MemoryParkStoreOptions = {}): ParkStore {
  return asyncParkStore(parkStateStore(emptyParkState()), (method, call) => {
    if (method === "park") options.beforeWrite?.();
    return call();
  });
}
