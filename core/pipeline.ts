/**
 * A pipeline: one name, and the one place that wires its source, sink, checkpoints and metrics,
 * so that the consumer group of the checkpoints, the parked streams, the logs, the metrics and
 * the management API cannot disagree.
 *
 * @module
 */
import type { ObservableSource } from "./batch.ts";
import type { CheckpointStore } from "./checkpoints.ts";
import type { TypedEvent } from "./codec.ts";
import { InvalidArgumentError } from "./errors.ts";
import { checkLeasedSource } from "./lease.ts";
import {
  run,
  type RunOptions,
  type StreamsSink,
  streamsSink,
  type StreamsSinkOptions,
  type TypedStreamsSinkOptions,
} from "./sink.ts";

/**
 * What a pipeline's source is made from: its consumer group (the pipeline's name) and the run's
 * signal.
 *
 * @example
 * ```ts
 * import type { SourceContext } from "@impel/impel";
 * const label = (c: SourceContext) => `${c.group} (stopping: ${c.signal.aborted})`;
 * ```
 *
 * @category Pipeline
 */
export interface SourceContext {
  /** The consumer group: the pipeline's name. */
  readonly group: string;
  /** Aborted when the run stops. */
  readonly signal: AbortSignal;
}

/**
 * Where a pipeline registers for metrics, health and the management API: what
 * `createMetrics()` of `@impel/impel/metrics` returns.
 *
 * @example
 * ```ts
 * import type { PipelineRegistry } from "@impel/impel";
 * import { createMetrics } from "@impel/impel/metrics";
 * const registry: PipelineRegistry = createMetrics({ defaultMetrics: false });
 * ```
 *
 * @category Pipeline
 */
export interface PipelineRegistry {
  /** Registers one pipeline; `observe` wraps its source, `remove` forgets it. */
  addPipeline(registration: {
    readonly group: string;
    readonly source: string;
    readonly sink: StreamsSink;
    readonly checkpoints?: CheckpointStore;
  }): {
    observe(source: ObservableSource): ObservableSource;
    remove(): void;
  };
}

/**
 * The wiring of a pipeline, besides its sink's options.
 *
 * @example
 * ```ts
 * import type { PipelineWiring } from "@impel/impel";
 * import { createMemoryStore, memorySource } from "@impel/impel/sources/memory";
 * const store = createMemoryStore();
 * const wiring: PipelineWiring = {
 *   name: "greeter",
 *   source: ({ group }) => memorySource({ store, group }),
 * };
 * ```
 *
 * @category Pipeline
 */
export interface PipelineWiring {
  /**
   * The pipeline's name: the consumer group of its checkpoints and parked streams, and its name
   * in logs, stats, metrics, health and the management API.
   */
  readonly name: string;
  /**
   * Makes the source when the pipeline runs. Give it the context's `group`: a source that says
   * it reads as another group (its `group`) is refused.
   */
  readonly source: (context: SourceContext) => ObservableSource;
  /** The source's checkpoints, for lag before anything completes and for resets over HTTP. */
  readonly checkpoints?: CheckpointStore;
  /** Registers the pipeline there (metrics, `/health`, `/pipelines`) when it runs. */
  readonly metrics?: PipelineRegistry;
  /**
   * The source's label in metrics and the management API: its checkpoint keys' `source`
   * (default: the source's own `sourceName`; needed with `metrics` when it has none).
   */
  readonly sourceName?: string;
}

/**
 * A wired pipeline: its sink (stats, monitor) exists at once; `run` makes the source and runs.
 *
 * @example
 * ```ts
 * import type { Pipeline } from "@impel/impel";
 * const busy = (p: Pipeline) => p.sink.stats().busy.length;
 * ```
 *
 * @category Pipeline
 */
export interface Pipeline {
  /** Its name (the consumer group). */
  readonly name: string;
  /** Its sink: stats, monitor, stop. */
  readonly sink: StreamsSink;
  /** Makes the source and runs until the signal aborts or the source ends (once per pipeline). */
  run(options?: RunOptions): Promise<void>;
}

/**
 * Wires a pipeline under one name. Options are the sink's (`handler`, or `codec` and a typed
 * handler, concurrency, failure policy, ...) and its {@linkcode PipelineWiring}.
 *
 * @example
 * ```ts
 * import { pipeline } from "@impel/impel";
 * import { createMemoryStore, memorySource } from "@impel/impel/sources/memory";
 * import { memoryCheckpoints } from "@impel/impel/checkpoints/memory";
 *
 * const store = createMemoryStore();
 * const checkpoints = memoryCheckpoints();
 * const greeter = pipeline({
 *   name: "greeter",
 *   source: ({ group }) => memorySource({ store, checkpoints, group }),
 *   handler: (stream, events) => console.log(stream, events.length),
 *   statsIntervalMs: 0,
 * });
 * const stop = new AbortController();
 * const running = greeter.run({ signal: stop.signal });
 * await store.append("Guest-ana", [{ type: "CheckedIn", data: {} }], 0);
 * await greeter.sink.monitor.awaitCompletion({ tail: true });
 * stop.abort();
 * await running;
 * ```
 *
 * @category Pipeline
 */
export function pipeline<E extends TypedEvent>(
  options: PipelineWiring & Omit<TypedStreamsSinkOptions<E>, "group">,
): Pipeline;
/**
 * Wires a pipeline whose handler gets the stored events as they are.
 *
 * @example
 * ```ts
 * import { pipeline } from "@impel/impel";
 * import { createMemoryStore, memorySource } from "@impel/impel/sources/memory";
 * const store = createMemoryStore();
 * const p = pipeline({ name: "g", source: ({ group }) => memorySource({ store, group }), handler: () => {} });
 * await p.sink.stop();
 * ```
 *
 * @category Pipeline
 */
export function pipeline(options: PipelineWiring & Omit<StreamsSinkOptions, "group">): Pipeline;
export function pipeline(
  options: PipelineWiring & Omit<StreamsSinkOptions | TypedStreamsSinkOptions<TypedEvent>, "group">,
): Pipeline {
  if (options === null || typeof options !== "object") {
    throw new InvalidArgumentError("options", "must be an object with a name, source and handler");
  }
  const { name, source, checkpoints, metrics, sourceName, ...sinkOptions } = options;
  if (typeof name !== "string" || name.length === 0) {
    throw new InvalidArgumentError("name", "must be a non-empty string (the consumer group)");
  }
  if ("group" in options) {
    throw new InvalidArgumentError("group", `is the pipeline's name ("${name}"): leave it out`);
  }
  if (typeof source !== "function") {
    throw new InvalidArgumentError("source", "must be a function of { group, signal }");
  }
  if (metrics !== undefined && typeof metrics?.addPipeline !== "function") {
    throw new InvalidArgumentError("metrics", "must be createMetrics() of @impel/impel/metrics");
  }
  const sink = streamsSink({ ...sinkOptions, group: name } as StreamsSinkOptions);
  let started = false;
  return {
    name,
    sink,
    async run(runOptions = {}) {
      if (started) {
        throw new InvalidArgumentError("run", `pipeline "${name}" has run already: make another`);
      }
      started = true;
      const stop = new AbortController();
      const signal = runOptions.signal === undefined
        ? stop.signal
        : AbortSignal.any([runOptions.signal, stop.signal]);
      let made: ObservableSource | undefined;
      try {
        made = source({ group: name, signal });
        const said = (made as { readonly group?: unknown }).group;
        if (said !== undefined && said !== name) {
          throw new InvalidArgumentError(
            "source",
            `reads as group "${String(said)}", but the pipeline is "${name}": ` +
              "give it the group of its context",
          );
        }
        // A leased source checks its hand-over against the stop timeout it was told; this is the
        // sink's real one.
        checkLeasedSource(made, sink.stopTimeoutMs);
      } catch (error) {
        await made?.cancel().catch(() => {});
        await sink.stop();
        throw error;
      }
      const label = sourceName ??
        (made as { readonly sourceName?: unknown }).sourceName;
      let observed = made;
      if (metrics !== undefined) {
        if (typeof label !== "string" || label.length === 0) {
          stop.abort();
          await made.cancel().catch(() => {});
          await sink.stop();
          throw new InvalidArgumentError(
            "sourceName",
            "is needed with metrics: the source does not name itself",
          );
        }
        // It stays registered after the run: /health shows a stopped or faulted pipeline.
        observed = metrics.addPipeline({ group: name, source: label, sink, checkpoints })
          .observe(made);
      }
      try {
        await run(observed, sink, { signal });
      } finally {
        stop.abort();
      }
    },
  };
}
