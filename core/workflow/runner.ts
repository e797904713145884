/**
 * Running a workflow: one streams sink over the instances' category and the routes' that
 * delivers outboxes, turns routed events into inputs and fires timers; see
 * {@linkcode startWorkflow}.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { Batch, ObservableSource } from "../batch.ts";
import type { TypedEvent } from "../codec.ts";
import {
  checkInteger,
  checkNumber,
  describe,
  ImpelError,
  InvalidArgumentError,
} from "../errors.ts";
import type { StreamEvent } from "../event.ts";
import type { EventStore } from "../store.ts";
import { errorText } from "../failure.ts";
import type { HandlerContext } from "../scheduler.ts";
import { run, type StreamsSink, streamsSink, type StreamsSinkOptions } from "../sink.ts";
import { categoryOf, type StreamName } from "../streamName.ts";
import { TimeoutError, withTimeout } from "../timeout.ts";
import { type DurableTimers, durableTimers } from "../timers.ts";
import { createRuntime, type WorkflowClient, type WorkflowClientOptions } from "./client.ts";
import { tracing } from "./decision.ts";
import type { Delivery, SendHandler, SendHandlers } from "./delivery.ts";
import { checkFunction, checkInput, type WorkflowDefinition } from "./definition.ts";
import {
  AwaitIdleTimeoutError,
  DuplicateWorkflowRunnerError,
  MissingSendHandlerError,
} from "./errors.ts";
import type { PendingSend, Stored } from "./instance.ts";
import {
  holdRunnerLease,
  type RunnerLease,
  type WorkflowOwnerOptions,
  WorkflowRunnerConflictError,
} from "./ownership.ts";

/** How often a dispatch with sends in flight reads its stream again for timers found due. */
const DUE_POLL_MS = 1_000;

/** The default bound of one handler call: a hung call must not hold its stream for good. */
const SEND_TIMEOUT_MS = 60_000;

/** Withdrawn sends an instance lists before the runner records those not running settled. */
const WITHDRAWN_KEPT = 8;

/** Instance streams whose first-read outbox index a runner keeps (see `firstSeen`). */
const FIRST_SEEN_KEPT = 100_000;

/** The longest delay a timer can be set for (setTimeout's limit); longer would fire at once. */
const MAX_TIMEOUT_MS = 2_147_483_647;

/**
 * The runners running in this process, by store, then category: whether each reads a leased
 * consumer group's share. A second runner of a category over the same store is refused unless
 * both are leased members.
 */
const runnersOf = new WeakMap<EventStore, Map<string, Set<{ readonly leased: boolean }>>>();

/** Whether `source` reads a leased consumer group's share (its streams move between members). */
function readsLeasedGroup(source: unknown): boolean {
  const leases = (source as { leases?: unknown }).leases;
  // A member of a leased group holds a stream only once its previous holder's calls ended.
  return typeof leases === "function" && leases.call(source) !== undefined;
}

/**
 * Records a runner of `category` over `store` in this process, or refuses it; returns what
 * takes it off again.
 */
function register(store: EventStore, category: string, source: unknown): () => void {
  const leased = readsLeasedGroup(source);
  let byCategory = runnersOf.get(store);
  if (byCategory === undefined) runnersOf.set(store, byCategory = new Map());
  const running = byCategory.get(category) ?? new Set();
  if ([...running].some((r) => !r.leased || !leased)) {
    throw new DuplicateWorkflowRunnerError(category);
  }
  const entry = { leased };
  byCategory.set(category, running.add(entry));
  return () => {
    running.delete(entry);
    if (running.size === 0 && byCategory.get(category) === running) byCategory.delete(category);
  };
}

/**
 * Options of {@linkcode startWorkflow}.
 *
 * @example
 * ```ts
 * import { createStateCache } from "@impel/impel";
 * import { manualClock, type WorkflowRunnerOptions } from "@impel/impel/workflow";
 * import { createMemoryStore, memorySource } from "@impel/impel/sources/memory";
 * type Message = { type: "Email"; data: { to: string } };
 * const store = createMemoryStore();
 * const options: WorkflowRunnerOptions<never, Message> = {
 *   store,
 *   source: memorySource({ store, categories: ["Signup"] }),
 *   handlers: { Email: (send) => console.log("email", send.data.to) },
 *   clock: manualClock(),
 *   cache: createStateCache(),
 *   maxConcurrentSends: 4,
 *   timers: { category: "SignupTimers", shards: 4 },
 *   sink: { maxConcurrentStreams: 32, statsIntervalMs: 0 },
 * };
 * await options.source.cancel();
 * ```
 *
 * @category Workflows
 */
export interface WorkflowRunnerOptions<I extends TypedEvent, M extends TypedEvent>
  extends WorkflowClientOptions {
  /**
   * Batches of the workflow's categories ({@linkcode workflowCategories}) from `store`, with the
   * runner's checkpoints; streams of other categories are ignored.
   */
  readonly source: ReadableStream<Batch>;
  /** The handler of each message type the workflow sends. */
  readonly handlers: SendHandlers<I, M>;
  /** Sends in flight at once per instance (default 8; one at a time per target). */
  readonly maxConcurrentSends?: number;
  /**
   * How long one handler call may take (default 60 000 ms; `Infinity`: no limit). Past it the
   * call's signal is aborted and the delivery fails with a `TimeoutError`, retried by the sink's
   * failure policy: a hung action then no longer holds back its compensation, nor (once the
   * sink's read-ahead fills behind its stream) the runner's other instances, for good (a handler
   * that ignores its signal still runs on, unawaited). Size it above the slowest legitimate
   * call: a call that always takes longer is retried for ever.
   */
  readonly sendTimeoutMs?: number;
  /** Where and how timers are kept (default category `{category}Timers`, 16 shards). */
  readonly timers?: {
    /** The shard streams' category. */
    readonly category?: string;
    /** Shard streams (fixed for the life of the category). */
    readonly shards?: number;
    /** Timers fired at once. */
    readonly maxConcurrentFires?: number;
    /**
     * How often the shards are read again for timers other runners scheduled (default 5 000 ms
     * of real time; 0: only at start). See {@linkcode DurableTimersOptions.reloadIntervalMs}.
     */
    readonly reloadIntervalMs?: number;
  };
  /**
   * The sink's settings (the handler is the runner's; the default group is the source's group,
   * else the category).
   */
  readonly sink?: Omit<StreamsSinkOptions, "handler">;
  /** Aborting it stops the runner (as {@linkcode WorkflowRunner.stop} does). */
  readonly signal?: AbortSignal;
  /**
   * One runner of the category across processes: the runner takes the lease `runner` of scope
   * `workflow/{category}` in `owner.leases` before it dispatches anything or fires a timer, and
   * keeps it by heartbeat; if another runner holds it (or this one loses it), `running` rejects
   * with {@linkcode WorkflowRunnerConflictError} and the runner stops. A stop releases it; a
   * runner killed without one holds it until it lapses (`owner.durationMs`, default 15 s).
   * Without it, one runner per category across processes is the deployment's business.
   */
  readonly owner?: WorkflowOwnerOptions;
}

/**
 * A running workflow: the client, the pipeline's sink, the timers.
 *
 * @example
 * ```ts
 * import { defineSaga, startWorkflow, stepSucceeded, workflowCategories } from "@impel/impel/workflow";
 * import { createMemoryStore, memorySource } from "@impel/impel/sources/memory";
 *
 * type Order = { orderId: string };
 * type Message = { type: "Ship"; data: Order };
 * const delivery = defineSaga<Order, Message>({
 *   category: "Delivery",
 *   steps: [{ name: "ship", action: (o) => ({ to: `Shipment-${o.orderId}`, type: "Ship", data: o }) }],
 * });
 * const store = createMemoryStore();
 * const runner = startWorkflow(delivery, {
 *   store,
 *   source: memorySource({ store, categories: workflowCategories(delivery) }),
 *   handlers: { Ship: (send) => stepSucceeded("ship", { trackingId: `T-${send.data.orderId}` }) },
 * });
 * await runner.handle("o1", { type: "Start", data: { orderId: "o1" } });
 * await runner.awaitIdle();
 * console.log((await runner.read("o1")).state.status); // "completed"
 * await runner.stop();
 * ```
 *
 * @category Workflows
 */
export interface WorkflowRunner<S, I extends TypedEvent> extends WorkflowClient<S, I> {
  /** The pipeline's sink: monitor, stats. */
  readonly sink: StreamsSink;
  /** The durable timers. */
  readonly timers: DurableTimers;
  /** Resolves once stopped; rejects if the pipeline faulted. */
  readonly running: Promise<void>;
  /**
   * For in-process sources (memory), where an append reaches the source at once: resolves once
   * every event read so far is handled, the source is at its tail and no timer is due or firing
   * on the clock now, with nothing new arriving meanwhile. Rejects at once with the runner's
   * failure if `running` rejects, and after `timeoutMs` (default 30 s) with an
   * {@linkcode AwaitIdleTimeoutError} naming the streams failing (attempts, last error) and busy.
   * A polling source needs its own check that it has read the store's head.
   */
  awaitIdle(options?: { readonly timeoutMs?: number }): Promise<void>;
  /** What this runner counted since it started (the sink's and the timers' have their own). */
  stats(): WorkflowRunnerStats;
  /** Stops the pipeline (drain, commit) and the timers. */
  stop(): Promise<void>;
}

/**
 * What {@linkcode WorkflowRunner.stats} reports.
 *
 * @example
 * ```ts
 * import type { WorkflowRunnerStats } from "@impel/impel/workflow";
 * const stats: WorkflowRunnerStats = { ignoredInputs: 0 };
 * ```
 *
 * @category Workflows
 */
export interface WorkflowRunnerStats {
  /**
   * Inputs ignored with notice: a decision that said why ({@linkcode WorkflowDecision.ignored},
   * e.g. a saga's compensation confirmed after its deadline), or a reply to a send withdrawn
   * while its handler ran. Each is also logged at warning level.
   */
  readonly ignoredInputs: number;
}

/**
 * Runs `definition`: one streams sink over `options.source` dispatches the instances' outboxes
 * (streams of the workflow's category) and turns events of the routes' categories into inputs;
 * durable timers fire timeouts. See the module documentation for the guarantees.
 *
 * @example
 * ```ts
 * import { createCodec } from "@impel/impel";
 * import { defineWorkflow, startWorkflow, workflowCategories } from "@impel/impel/workflow";
 * import { createMemoryStore, memorySource } from "@impel/impel/sources/memory";
 *
 * type Event = { type: "Greeted"; data: { name: string } };
 * type Input = { type: "Greet"; data: { name: string } };
 * type Message = { type: "Print"; data: { line: string } };
 * const greeter = defineWorkflow<Event, number, Input, Message>({
 *   category: "Greeter",
 *   codec: createCodec<Event>({ Greeted: {} }),
 *   initial: 0,
 *   fold: (n, events) => n + events.length,
 *   decide: (_, input) => ({
 *     events: [{ type: "Greeted", data: input.data }],
 *     sends: [{ to: "Console-1", type: "Print", data: { line: `hello ${input.data.name}` } }],
 *   }),
 * });
 * const store = createMemoryStore();
 * const lines: string[] = [];
 * const runner = startWorkflow(greeter, {
 *   store,
 *   source: memorySource({ store, categories: workflowCategories(greeter) }),
 *   handlers: { Print: (send) => void lines.push(send.data.line) },
 * });
 * await runner.handle("g1", { type: "Greet", data: { name: "Ann" } });
 * await runner.awaitIdle();
 * console.log(lines); // ["hello Ann"]
 * await runner.stop();
 * ```
 *
 * @category Workflows
 */
export function startWorkflow<E extends TypedEvent, S, I extends TypedEvent, M extends TypedEvent>(
  definition: WorkflowDefinition<E, S, I, M>,
  options: WorkflowRunnerOptions<I, M>,
): WorkflowRunner<S, I> {
  if (options === null || typeof options !== "object") {
    throw new InvalidArgumentError("options", "must be an object with store, source and handlers");
  }
  const { handlers, source } = options;
  if (handlers === null || typeof handlers !== "object") {
    throw new InvalidArgumentError(
      "handlers",
      `must be an object of send handlers, got ${describe(handlers)}`,
    );
  }
  for (const [type, h] of Object.entries(handlers)) checkFunction(`handlers.${type}`, h);
  if (typeof source?.getReader !== "function") {
    throw new InvalidArgumentError("source", "must be a ReadableStream of batches");
  }
  const maxConcurrentSends = checkInteger("maxConcurrentSends", options.maxConcurrentSends ?? 8, 1);
  const sendTimeoutMs = options.sendTimeoutMs === Infinity
    ? undefined
    : checkNumber("sendTimeoutMs", options.sendTimeoutMs ?? SEND_TIMEOUT_MS, 1);
  if (sendTimeoutMs !== undefined && sendTimeoutMs > MAX_TIMEOUT_MS) {
    throw new InvalidArgumentError(
      "sendTimeoutMs",
      `must be at most ${MAX_TIMEOUT_MS} ms (about 24.8 days), or Infinity for no limit, got ` +
        sendTimeoutMs,
    );
  }
  const sendTypes = new Set(Object.keys(handlers));
  const runtime = createRuntime(definition, options, sendTypes);
  // Declared sends without a handler are a wiring mistake: say so now, not when an instance
  // first reaches one.
  const unhandled = (definition.sends ?? []).filter((type) => !sendTypes.has(type));
  if (unhandled.length > 0) {
    throw new InvalidArgumentError(
      "handlers",
      `has no handler for ${unhandled.map((t) => JSON.stringify(t)).join(", ")}, which ` +
        `${runtime.category} declares in sends (handlers: ${[...sendTypes].join(", ") || "none"})`,
    );
  }
  const { decider, clock, fold, category } = runtime;
  const routes = new Map(runtime.routes.map((r) => [r.category, r]));
  const log = getLogger(["impel", "workflow", category]);
  const timerCategory = options.timers?.category ?? `${category}Timers`;
  if (timerCategory === category || routes.has(timerCategory)) {
    throw new InvalidArgumentError(
      "timers.category",
      `must differ from the workflow's categories, got ${JSON.stringify(timerCategory)}`,
    );
  }
  const timerId = (stream: StreamName, seq: number) => `${stream}#${seq}`;

  /** Records timer `seq` fired, with the decision on its input, unless it is no longer pending. */
  async function fireTimer(stream: StreamName, seq: number, id: string): Promise<void> {
    const timer = await decider.query(stream, (s) => s.timers.find((t) => t.seq === seq));
    if (timer === undefined) {
      log.debug("{stream}: timer {timer} was no longer pending", { stream, timer: id });
      return;
    }
    const arrival = { id, input: timer.input, correlationId: timer.correlationId };
    let ignored: string | undefined;
    const outcome = await decider.transactEx(stream, (s, { version }) => {
      ignored = undefined;
      if (!s.timers.some((t) => t.seq === seq)) return [];
      const fired: Stored<E>[] = [{ type: "WorkflowTimerFired", data: { seq } }];
      const decided = runtime.decideOn(stream, fold(s, fired), version, arrival);
      ignored = decided.ignored;
      return [...fired, ...decided.events];
    }, { idempotencyKey: id, context: tracing(arrival) });
    if (outcome.duplicate && outcome.state.timers.some((t) => t.seq === seq)) {
      // Another input was recorded under the timer's id (a stream written before such ids were
      // refused): the firing can never be recorded, so fail the stream rather than spin on it.
      throw new ImpelError(
        "TimerIdTaken",
        `${stream}: timer ${id} is due, but an input was already recorded under its id`,
      );
    }
    if (ignored !== undefined && !outcome.duplicate) runtime.noteIgnored(stream, arrival, ignored);
    log.debug("{stream}: timer {timer} fired {input}: {outcome}", {
      stream,
      timer: id,
      input: timer.input.type,
      outcome: outcome.appended === 0 ? "already fired" : `recorded ${outcome.appended} events`,
      correlationId: timer.correlationId,
      causationId: id,
    });
  }

  /**
   * What the durable timers do when a timer is due: record it due in the instance's stream (an
   * append that needs no decision), so the dispatcher fires it through the sink, where a firing
   * that fails shows in the sink's stats and meets its failure policy.
   */
  async function markDue(stream: StreamName, seq: number, id: string): Promise<boolean> {
    const timer = await decider.query(stream, (s) => s.timers.find((t) => t.seq === seq));
    if (timer === undefined) {
      log.debug("{stream}: timer {timer} was no longer pending", { stream, timer: id });
      return false; // cancelled or replaced: the timers count it stale, not fired
    }
    const due: Stored<E>[] = [{ type: "WorkflowTimerDue", data: { seq } }];
    await decider.transactEx(
      stream,
      (s) => s.timers.some((t) => t.seq === seq) && !(s.due ?? []).includes(seq) ? due : [],
      { context: { correlationId: timer.correlationId, causationId: id } },
    );
    // A dispatch with sends in flight would see it only once they are done: wake it.
    wakers.get(stream)?.();
    return true;
  }

  /** Delivers `send` and records it delivered, with the decision on the handler's reply. */
  async function deliver(stream: StreamName, send: PendingSend, context: HandlerContext) {
    const handler = (handlers as unknown as Record<string, SendHandler<I, M>>)[send.type];
    if (handler === undefined) throw new MissingSendHandlerError(stream, send.type, [...sendTypes]);
    const id = `${stream}#${send.seq}`;
    // The dispatch's read may predate a withdrawal recorded since (a command, another process's
    // decision): read once more right before the call, so a withdrawn send is not delivered.
    const pending = await decider.query(stream, (s) => s.pending.some((p) => p.seq === send.seq));
    if (!pending) {
      log.debug("{stream}: {sendId} was withdrawn before its handler was called", {
        stream,
        sendId: id,
      });
      return;
    }
    // A send this runner called a handler for, or one recorded before it first read the
    // instance (a runner before it may have called one), may be a re-send.
    // In a leased group a stream can move to another member and back, which may have sent
    // meanwhile what was recorded since: every send of such a runner may be a re-send.
    const redelivery = shared || attempted.has(id) ||
      send.seq < (firstSeen.get(stream) ?? Infinity);
    const delivery = { ...send, id, workflow: stream, redelivery } as unknown as Delivery<M>;
    // The last moment before the send: a runner paused past its lease must not send on resuming.
    lease?.check();
    attempted.add(id);
    const reply = await handler(delivery, context);
    if (reply !== undefined) checkInput(reply, `the reply of handlers.${send.type}`);
    const arrival = reply === undefined ? undefined : {
      id,
      input: reply as TypedEvent,
      correlationId: send.correlationId,
    };
    let ignored: string | undefined;
    const outcome = await decider.transactEx(stream, (s, { version }) => {
      ignored = undefined;
      if (!s.pending.some((p) => p.seq === send.seq)) {
        // Withdrawn while its handler ran (or recorded by another runner): the reply is moot.
        if (arrival !== undefined && (s.withdrawn ?? []).includes(send.seq)) {
          ignored = "its send was withdrawn while the handler ran";
        }
        return [];
      }
      const delivered: Stored<E>[] = [{ type: "WorkflowDelivered", data: { seq: send.seq } }];
      if (arrival === undefined) return delivered;
      const decided = runtime.decideOn(stream, fold(s, delivered), version, arrival);
      ignored = decided.ignored;
      return [...delivered, ...decided.events];
    }, { context: { correlationId: send.correlationId, causationId: id } });
    // Delivered, or no longer pending: it is never sent again.
    attempted.delete(id);
    if (ignored !== undefined && arrival !== undefined) {
      runtime.noteIgnored(stream, arrival, ignored);
    }
    log.debug("{stream}: sent {type} to {to} ({sendId}){reply}", {
      stream,
      type: send.type,
      to: send.to,
      sendId: id,
      reply: arrival === undefined ? "" : `, reply ${arrival.input.type}`,
      recorded: outcome.appended,
      correlationId: send.correlationId,
      causationId: send.causationId,
    });
    return outcome;
  }

  /**
   * Ids of sends whose handler this runner called and whose delivery it has not recorded yet (a
   * handler or its record failed, the call timed out): a retry of one is a possible re-send. As
   * long as the sends failing at once.
   */
  const attempted = new Set<string>();
  /** Ids of sends whose handler call has not settled (an abandoned one's included). */
  const calling = new Set<string>();
  /**
   * Per instance stream this runner dispatched, its outbox's next index when first read: sends
   * below it were recorded before, so a runner before this one may have delivered them. The
   * least recently dispatched go beyond `FIRST_SEEN_KEPT`; a stream forgotten counts all its
   * sends as possible re-sends again (a search on the target, never a double effect).
   */
  const firstSeen = new Map<StreamName, number>();
  const noteSeen = (stream: StreamName, next: number) => {
    const known = firstSeen.get(stream);
    firstSeen.delete(stream);
    firstSeen.set(stream, known ?? next);
    if (firstSeen.size > FIRST_SEEN_KEPT) firstSeen.delete(firstSeen.keys().next().value!);
  };

  /** Wakes the dispatch of a stream (a timer of it found due meanwhile), by stream. */
  const wakers = new Map<StreamName, () => void>();

  /**
   * The handler for an instance stream: fires its due timers, registers its pending timers,
   * delivers its pending sends (several targets at once, one send at a time per target) until
   * none is left, and reports the version it has accounted for. While sends are in flight it
   * keeps firing timers found due, so a deadline is decided even while a handler hangs: a send
   * the decision abandons ({@linkcode WorkflowDecision.abandonSends}) is no longer waited for
   * (its call's signal is aborted); one it withdraws still holds back what was sent after it.
   */
  async function dispatch(
    stream: StreamName,
    events: readonly StreamEvent[],
    context: HandlerContext,
  ): Promise<number> {
    // A timer cancelled or replaced leaves its shard now, not when it would have been due (a
    // re-armed deadline would otherwise hold one timer per re-arm); a removal that fails is
    // tried again in the background, and one that never lands is dropped when it comes due.
    for (const e of events) {
      const seq = (e.data as { seq?: unknown } | null)?.seq;
      if (e.type === "WorkflowTimerCancelled" && Number.isSafeInteger(seq)) {
        timers.cancel({ id: timerId(stream, seq as number), stream }).catch(() => {});
      }
    }
    type Flight = { readonly send: PendingSend; readonly abort: AbortController };
    const flights = new Map<number, Flight>();
    let failure: { error: unknown } | undefined;
    let wake: () => void = () => {};
    let woken = false;
    const notify = () => {
      woken = true;
      wake();
    };
    wakers.set(stream, notify);
    const start = (send: PendingSend) => {
      const sendId = timerId(stream, send.seq);
      calling.add(sendId);
      const abort = new AbortController();
      const onStop = () => abort.abort(context.signal.reason);
      context.signal.addEventListener("abort", onStop, { once: true });
      if (context.signal.aborted) abort.abort(context.signal.reason);
      const flight = { send, abort };
      flights.set(send.seq, flight);
      let delivered = deliver(stream, send, { ...context, signal: abort.signal });
      if (sendTimeoutMs !== undefined) {
        const what = `handlers.${send.type} for ${stream}#${send.seq}`;
        delivered = withTimeout(delivered, sendTimeoutMs, what).catch((error) => {
          if (error instanceof TimeoutError) abort.abort(error);
          throw error;
        });
      }
      delivered.then(
        () => {},
        (error) => {
          // An abandoned call's failure is moot: its send is no longer pending.
          if (flights.get(send.seq) === flight) failure ??= { error };
        },
      ).finally(() => {
        calling.delete(sendId);
        context.signal.removeEventListener("abort", onStop);
        if (flights.get(send.seq) === flight) flights.delete(send.seq);
        notify();
      });
    };
    try {
      for (;;) {
        woken = false;
        const { state: s, version } = await decider.query(stream, (state, { version }) => ({
          state,
          version,
        }));
        noteSeen(stream, s.next);
        // Withdrawn sends whose handler no longer runs (here: one runner per instance stream)
        // can send no reply and hold nothing back: once more than a few are listed, record them
        // settled, so an instance that withdraws every send keeps a short list.
        const withdrawn = s.withdrawn ?? [];
        const settled = withdrawn.length > WITHDRAWN_KEPT
          ? withdrawn.filter((seq) => !calling.has(timerId(stream, seq)))
          : [];
        if (settled.length > 0) {
          await decider.transact(
            stream,
            (now) =>
              settled.filter((seq) => (now.withdrawn ?? []).includes(seq)).map((seq) => ({
                type: "WorkflowWithdrawn" as const,
                data: { seq, settled: true as const },
              })),
            { context: { correlationId: s.correlationId ?? stream } },
          );
          continue;
        }
        const due = s.due ?? [];
        if (due.length > 0) {
          // Timers found due: fire them here, so a firing that fails fails the stream.
          for (const seq of due) await fireTimer(stream, seq, timerId(stream, seq));
          continue;
        }
        await Promise.all(
          s.timers.map((t) => timers.schedule({ id: timerId(stream, t.seq), due: t.due, stream })),
        );
        const pending = new Set(s.pending.map((p) => p.seq));
        // A withdrawn send whose handler runs holds back what was sent after it (a compensation
        // never takes effect before its action); an abandoned one is let go.
        let holdFrom = Infinity;
        for (const [seq, flight] of flights) {
          if (pending.has(seq)) continue;
          if ((s.abandoned ?? []).includes(seq)) {
            flight.abort.abort(new Error(`${stream}#${seq} was abandoned: its reply is ignored`));
            flights.delete(seq);
          } else if ((s.withdrawn ?? []).includes(seq)) holdFrom = Math.min(holdFrom, seq);
        }
        const busy = new Set([...flights.values()].map((f) => f.send.to));
        if (failure === undefined) {
          for (const send of s.pending) {
            if (flights.size >= maxConcurrentSends || send.seq > holdFrom) break;
            if (flights.has(send.seq) || busy.has(send.to)) {
              busy.add(send.to);
              continue;
            }
            busy.add(send.to);
            start(send);
          }
        }
        if (flights.size === 0) {
          if (failure !== undefined) throw failure.error;
          if (s.pending.length === 0) {
            // Nothing of it is pending: none of its failed attempts is ever sent again (one
            // withdrawn after its handler failed would otherwise stay listed).
            for (const id of attempted) if (id.startsWith(`${stream}#`)) attempted.delete(id);
            return version;
          }
          continue;
        }
        if (woken) continue;
        // Another runner may find a timer due: look again now and then while sends are in flight.
        await new Promise<void>((resolve) => {
          const poll = s.timers.length > 0 ? setTimeout(resolve, DUE_POLL_MS) : undefined;
          wake = () => {
            clearTimeout(poll);
            resolve();
          };
        });
        wake = () => {};
      }
    } finally {
      wakers.delete(stream);
    }
  }

  /** The handler for a stream of a route's category: its events become inputs, in order. */
  async function routeEvents(stream: StreamName, events: readonly StreamEvent[]): Promise<void> {
    const route = routes.get(categoryOf(stream));
    if (route === undefined) return;
    for (const event of events) {
      const routed = route.route(stream, event);
      if (routed === undefined) continue;
      if (routed === null || typeof routed !== "object") {
        throw new InvalidArgumentError(
          `the route of ${route.category}`,
          `must return { id, input } or undefined, got ${describe(routed)}`,
        );
      }
      await runtime.handle(routed.id, routed.input, {
        id: `${stream}@${event.index}`,
        correlationId: event.correlationId,
      });
    }
  }

  const signal = options.signal;
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw new InvalidArgumentError("signal", "must be an AbortSignal");
  }
  // Two runners of one instance stream could deliver a compensation before the action the other
  // still delivers: refuse the second one this process can see.
  let unregister: () => void;
  try {
    unregister = register(options.store, category, source);
  } catch (error) {
    // The source was handed over to be read: let it go (a MessageDB source holds a connection).
    source.cancel(error).catch(() => {});
    throw error;
  }
  const shared = readsLeasedGroup(source);
  let lease: RunnerLease | undefined;
  try {
    lease = options.owner === undefined ? undefined : holdRunnerLease(options.owner, category);
  } catch (error) {
    unregister();
    source.cancel(error).catch(() => {});
    throw error;
  }
  // Nothing is dispatched, nor any timer fired, before the category's lease is held.
  const owned = lease?.ready;
  const handler: StreamsSinkOptions["handler"] = (stream, events, context) => {
    let of: string;
    try {
      of = categoryOf(stream);
    } catch {
      return; // not a workflow stream, nor a route's
    }
    return of === category ? dispatch(stream, events, context) : routeEvents(stream, events);
  };
  let sink: StreamsSink;
  try {
    sink = streamsSink({
      // The source's consumer group when it has one (its checkpoints are kept under it).
      group: (source as ObservableSource).group ?? category,
      statsIntervalMs: 0,
      ...options.sink,
      handler: owned === undefined
        ? handler
        : (stream, events, context) => owned.then(() => handler(stream, events, context)),
    });
  } catch (error) {
    void lease?.stop();
    unregister();
    throw error;
  }
  let timers: DurableTimers;
  try {
    timers = durableTimers({
      store: options.store,
      category: timerCategory,
      clock,
      shards: options.timers?.shards,
      maxConcurrentFires: options.timers?.maxConcurrentFires,
      reloadIntervalMs: options.timers?.reloadIntervalMs,
      fire: async (timer) => {
        await owned;
        return markDue(
          timer.stream,
          Number(timer.id.slice(timer.id.lastIndexOf("#") + 1)),
          timer.id,
        );
      },
    });
  } catch (error) {
    void sink.stop(); // it has started its commit timer
    void lease?.stop();
    unregister();
    throw error;
  }

  const controller = new AbortController();
  const onAbort = () => controller.abort();
  signal?.addEventListener("abort", onAbort, { once: true });
  if (signal?.aborted) controller.abort();
  // A lease held by another runner, or lost, stops this one with the conflict as its failure.
  let conflict: WorkflowRunnerConflictError | undefined;
  lease?.ready.then(() => lease.lost).catch((error) => {
    conflict = error instanceof WorkflowRunnerConflictError
      ? error
      : new WorkflowRunnerConflictError(category, lease.member, `could not be taken (${error})`);
    controller.abort();
  });
  const piped = run(source, sink, { signal: controller.signal });
  const running = piped.finally(async () => {
    signal?.removeEventListener("abort", onAbort);
    try {
      await timers.stop();
    } finally {
      unregister();
      await lease?.stop();
    }
  }).then(() => {
    if (conflict !== undefined) throw conflict;
  }, (error) => {
    throw conflict ?? error;
  });
  running.catch((error) =>
    log.error("{category} runner stopped: {error}", { category, error: errorText(error) })
  );

  return {
    streamOf: runtime.streamOf,
    // Callers' ids of a routed event's form are refused; the routes' own go through handle.
    handle: runtime.handleCommand,
    read: runtime.read,
    sink,
    timers,
    running,
    stats: () => ({ ignoredInputs: runtime.ignoredInputs() }),
    async awaitIdle(idleOptions = {}) {
      if (idleOptions === null || typeof idleOptions !== "object") {
        throw new InvalidArgumentError(
          "options",
          `must be an object ({ timeoutMs }), got ${describe(idleOptions)}`,
        );
      }
      const timeoutMs = checkNumber("timeoutMs", idleOptions.timeoutMs ?? 30_000, 0);
      const settle = async () => {
        for (;;) {
          await sink.monitor.awaitCompletion({ tail: true });
          const seen = sink.stats().counters.batches;
          await timers.idle();
          // A macrotask lets what the last fires appended reach the source.
          await new Promise((resolve) => setTimeout(resolve, 0));
          if (
            sink.stats().counters.batches === seen &&
            sink.stats().counters.batchesCompleted === seen
          ) return;
        }
      };
      // A runner that faulted never gets idle: say why at once, not after the timeout.
      const faulted = running.then(
        () => new Promise<never>(() => {}),
        (error) => Promise.reject(error),
      );
      try {
        await withTimeout(Promise.race([settle(), faulted]), timeoutMs, "awaitIdle");
      } catch (error) {
        if (!(error instanceof TimeoutError) || error instanceof AwaitIdleTimeoutError) throw error;
        const { failing, busy } = sink.stats();
        throw new AwaitIdleTimeoutError(timeoutMs, failing, busy);
      }
    },
    stop() {
      controller.abort();
      return running;
    },
  };
}
