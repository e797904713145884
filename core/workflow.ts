/**
 * Workflows (process managers, sagas): long-running processes that span streams and services,
 * resume after a crash and, as sagas ({@linkcode defineSaga}), undo what they did when a later
 * step fails.
 *
 * A workflow is defined like a decider: an instance is a stream `{category}-{id}`, its state is
 * folded from its own events, and on each **input** (a command given to
 * {@linkcode WorkflowClient.handle}, an event of another category mapped to the instance by a
 * route, a send handler's reply, a timer) its `decide` returns what to record, what to **send**
 * and which **timers** to set. {@linkcode startWorkflow} runs it:
 *
 * - **Outbox.** A decision's events, sends and timers are appended to the instance's stream in
 *   one append, at the version it was decided on (conflicts re-decide, as a decider does). A
 *   crash after that append loses nothing: the sends are in the stream.
 * - **Inputs once.** Every input has an id, recorded as the append's idempotency key: a command's
 *   id (the caller's, else a random one), `{stream}@{index}` for a routed event, the send's id for
 *   a reply, the timer's id for a timeout. A re-delivered input appends nothing, if it comes within the
 *   instance's last `idempotencyWindow` keyed appends (default 100,
 *   {@linkcode WorkflowClientOptions.idempotencyWindow}): past that it is decided again as a new
 *   input. (A decision that records nothing leaves no key: a redelivery is decided again, on the
 *   state of that time.)
 * - **Sends at least once, in order per target.** A dispatcher (the same pipeline, over the
 *   workflow's own category) reads each instance's pending sends, hands each to the handler for
 *   its type, and records it delivered, together with what the handler replied (an input decided
 *   in that same append). Sends to one target go one at a time in outbox order; different
 *   targets in parallel. A crash between a handler and the record re-sends: each send has a
 *   deterministic id, `{instance stream}#{outbox index}`, that a handler passes on as the target
 *   decider's idempotency key ({@linkcode deliveryOptions}), so the target appends once,
 *   however many other senders appended to it in between: a possible re-send
 *   ({@linkcode Delivery.redelivery}) has the target's decider search its whole stream for the
 *   key once its recent keys are full.
 *   A send withdrawn before its handler is called is not delivered. Each handler call is bounded
 *   by `sendTimeoutMs` (default 60 s).
 * - **One runner per instance stream.** What an action's handler still runs is known only to
 *   its runner: a second runner of the same streams could deliver the compensation first. Run one
 *   process per category, or members of a leased consumer group; a second runner of a category
 *   over the same store in one process is refused ({@linkcode DuplicateWorkflowRunnerError}),
 *   and across processes a runner given `owner: { leases }` holds its category's lease
 *   (`core/workflow/ownership.ts`): a second one fails with
 *   {@linkcode WorkflowRunnerConflictError}.
 * - **Timers fire once.** A timer is an outbox entry with a due time; the dispatcher registers it
 *   in {@linkcode durableTimers} (shard streams of their own category in the same store), which
 *   find it due, also after a restart, and record it due in the instance's stream
 *   (`WorkflowTimerDue`); the dispatcher then fires it: it records the timer fired together with
 *   the decision on its input, keyed by the timer's id, so a second firing records nothing. A
 *   firing that fails (its decision is refused, the store fails) fails the instance's stream
 *   like a send: it shows in the sink's stats (`failing`) and meets the sink's failure policy.
 *   A name holds one timer: setting one under a name that is pending replaces it, and of two set
 *   under one name in one decision the last is kept; `cancelTimers` cancels by name. A
 *   cancelled (or replaced) timer leaves its shard when the dispatcher reads the cancel; one
 *   whose removal never landed finds itself no longer pending when due, and records nothing.
 * - **Correlation.** Everything a decision records and sends carries the input's correlation id
 *   (when the input has none, the instance's: that of its first outbox entry, else its stream
 *   name) and, as causation id, the input's
 *   id; a send handler gives the target's events the send's id as causation id. Decisions, sends
 *   and timers are logged (category `["impel", "workflow", <category>]`, debug) with both.
 *
 * - **Bad input, typed errors.** Ids, inputs and options are checked at the boundary
 *   (`InvalidArgumentError` naming the field); a decision that breaks the contract is refused
 *   ({@linkcode InvalidWorkflowDecisionError}), a `decide` that throws is wrapped
 *   ({@linkcode WorkflowDecideError}); nothing is appended. An input a decision ignores with
 *   notice ({@linkcode WorkflowDecision.ignored}) is logged at warning and counted
 *   ({@linkcode WorkflowRunner.stats}).
 *
 * Sends and inputs are plain `{ type, data }` objects; what a decision keeps (timer inputs,
 * sends) must survive JSON, and is checked before anything is appended.
 *
 * The parts, one module each under `core/workflow/`: `definition.ts` (a workflow and the boundary
 * checks), `instance.ts` (the runtime's events, their codec, the instance's fold), `decision.ts`,
 * `client.ts`, `delivery.ts`, `runner.ts`, `ownership.ts`, `errors.ts`; sagas are in `core/saga.ts`, timers in
 * `core/timers.ts`.
 *
 * @module
 */
export {
  defineWorkflow,
  type Outgoing,
  type PendingTimer,
  type RoutedInput,
  type TimerRequest,
  workflowCategories,
  type WorkflowContext,
  type WorkflowDecision,
  type WorkflowDefinition,
  type WorkflowRoute,
  type WorkflowSnapshotOptions,
} from "./workflow/definition.ts";
export {
  type PendingSend,
  type TimerRecord,
  WORKFLOW_EVENT_TYPES,
  type WorkflowRuntimeEvent,
  type WorkflowSnapshotData,
} from "./workflow/instance.ts";
export type {
  HeartbeatResult,
  HeldLease,
  Lease,
  LeaseMemberBeat,
  LeaseStore,
  LeaseView,
  ScopedLeaseView,
} from "./lease.ts";
export { type WorkflowOwnerOptions, WorkflowRunnerConflictError } from "./workflow/ownership.ts";
export {
  type HandleOptions,
  type HandleOutcome,
  type WorkflowClient,
  workflowClient,
  type WorkflowClientOptions,
  type WorkflowInstance,
} from "./workflow/client.ts";
export {
  AwaitIdleTimeoutError,
  DuplicateWorkflowRunnerError,
  InvalidWorkflowDecisionError,
  MissingSendHandlerError,
  WorkflowDecideError,
} from "./workflow/errors.ts";
export {
  type Delivery,
  deliveryOptions,
  type SendHandler,
  type SendHandlers,
} from "./workflow/delivery.ts";
export {
  startWorkflow,
  type WorkflowRunner,
  type WorkflowRunnerOptions,
  type WorkflowRunnerStats,
} from "./workflow/runner.ts";
export {
  type Clock,
  type DurableTimer,
  type DurableTimers,
  durableTimers,
  type DurableTimersOptions,
  type ManualClock,
  manualClock,
  systemClock,
  type TimerStats,
} from "./timers.ts";
export * from "./saga.ts";

// The core types this entry's API mentions, so that its documentation is complete on its own
// (`deno doc --lint core/workflow.ts`) and a workflow's code can name them from here.
export type { Batch, BatchItem, Position, SourceProblem } from "./batch.ts";
export type { Codec, CodecCounters, EncodeContext, RoundTrip, TypedEvent } from "./codec.ts";
export type { CachedState, LoadOption, StateCache, TransactOptions } from "./decider.ts";
export { ImpelError } from "./errors.ts";
export { TimeoutError } from "./timeout.ts";
export type { StreamEvent } from "./event.ts";
export type {
  DeadLetterPolicy,
  FailurePolicy,
  ParkPolicy,
  RetryOptions,
  StreamFailure,
  StreamPolicy,
  StreamRule,
} from "./failure.ts";
export type { LatencyTotals, Percentiles } from "./histogram.ts";
export type { AwaitCompletionOptions, Monitor } from "./monitor.ts";
export type { Ownership, RevocationOutcome } from "./ownership.ts";
export type {
  ParkAction,
  ParkClaim,
  ParkClaimRequest,
  ParkedFailure,
  ParkedStream,
  ParkListOptions,
  ParkRequest,
  ParkResolution,
  ParkStore,
  ParkWrite,
  ParkWriteOutcome,
} from "./park.ts";
export type {
  Handler,
  HandlerContext,
  ParkedSnapshot,
  ParkedStatus,
  SchedulerCounters,
  SchedulerOptions,
  SchedulerSnapshot,
  StreamStateName,
  StreamStateTotals,
  StreamStatus,
} from "./scheduler.ts";
export type { StreamsSink, StreamsSinkOptions } from "./sink.ts";
export type { SinkStats, TrancheStats } from "./stats.ts";
export type {
  AppendResult,
  EventData,
  EventStore,
  ExpectedVersion,
  ReadStreamOptions,
} from "./store.ts";
export type { StreamName } from "./streamName.ts";
