/**
 * A self-contained event stream with projections, after Lokad.AzureEventStore: one
 * application-wide stream of JSON events in append-only storage with checksummed frames
 * (memory, local files), in-memory projections kept up to date, snapshots of their state, and
 * appends decided on the current state and retried on conflict.
 *
 * @example
 * ```ts
 * import { eventStream, memoryStorage } from "@impel/impel/eventstream";
 * const storage = memoryStorage();
 * const service = eventStream({
 *   storage,
 *   projections: { count: { name: "Count-1", initial: 0, apply: (n: number) => n + 1 } },
 * });
 * await service.ready;
 * await service.append(() => [{ word: "hello" }]);
 * console.log(service.localState.count); // 1
 * await service.close();
 * ```
 *
 * @module
 */
export * from "./frame.ts";
export * from "./storage.ts";
export * from "./memory.ts";
export * from "./file.ts";
export * from "./snapshots.ts";
export * from "./service.ts";
export * from "./source.ts";
