/**
 * The errors of the workflow runtime: a decision refused, a send no handler delivers, a
 * `decide` that threw.
 *
 * @module
 */
import { ImpelError } from "../errors.ts";
import { errorText } from "../failure.ts";
import type { StreamStatus } from "../scheduler.ts";
import type { StreamName } from "../streamName.ts";
import { TimeoutError } from "../timeout.ts";

/**
 * A decision broke the workflow contract (an event of a reserved type, a send without a target
 * or without a handler, a timer without a due time); nothing was appended. (Data that is not
 * JSON is refused by the codec, with `EventEncodeError`.) `code` is `"InvalidWorkflowDecision"`.
 *
 * @example
 * ```ts
 * import { InvalidWorkflowDecisionError } from "@impel/impel/workflow";
 * const e = new InvalidWorkflowDecisionError("Fulfilment-o1", "sends[0].to must be a non-empty string");
 * console.log(e.code, e.stream); // "InvalidWorkflowDecision" "Fulfilment-o1"
 * ```
 *
 * @category Workflows
 */
export class InvalidWorkflowDecisionError extends ImpelError {
  /** The instance stream. */
  readonly stream: StreamName;
  /** Creates the error; `problem` says what was wrong. */
  constructor(stream: StreamName, problem: string, options?: ErrorOptions) {
    super("InvalidWorkflowDecision", `decision for ${stream} refused: ${problem}`, options);
    this.stream = stream;
  }
}

/**
 * A pending send has a type no handler delivers (it was recorded by a client or runner with
 * other handlers); the dispatcher fails the instance's stream with it until a runner with the
 * handler takes over. `code` is `"MissingSendHandler"`.
 *
 * @example
 * ```ts
 * import { MissingSendHandlerError } from "@impel/impel/workflow";
 * const e = new MissingSendHandlerError("Fulfilment-o1", "Reserve", ["Ship"]);
 * console.log(e.code, e.type); // "MissingSendHandler" "Reserve"
 * ```
 *
 * @category Workflows
 */
export class MissingSendHandlerError extends ImpelError {
  /** The instance stream. */
  readonly stream: StreamName;
  /** The send's type. */
  readonly type: string;
  /** Creates the error; `known` lists the types that have handlers. */
  constructor(stream: StreamName, type: string, known: readonly string[]) {
    super(
      "MissingSendHandler",
      `${stream} has a pending send of type ${JSON.stringify(type)} but no handler delivers it ` +
        `(handlers: ${known.length === 0 ? "none" : known.join(", ")})`,
    );
    this.stream = stream;
    this.type = type;
  }
}

/**
 * A workflow's `decide` threw (something other than an impel error, which passes as it is):
 * nothing was appended; `cause` is what it threw. `code` is `"WorkflowDecide"`.
 *
 * @example
 * ```ts
 * import { WorkflowDecideError } from "@impel/impel/workflow";
 * const e = new WorkflowDecideError("Notes-n1", "Note", new TypeError("no text"));
 * console.log(e.code, e.stream, e.input); // "WorkflowDecide" "Notes-n1" "Note"
 * ```
 *
 * @category Workflows
 */
export class WorkflowDecideError extends ImpelError {
  /** The instance stream. */
  readonly stream: StreamName;
  /** The input's type. */
  readonly input: string;
  /** Creates the error; `cause` is what `decide` threw. */
  constructor(stream: StreamName, input: string, cause: unknown) {
    super(
      "WorkflowDecide",
      `decide of ${stream} threw on input ${JSON.stringify(input)}: ${errorText(cause)}`,
      { cause },
    );
    this.stream = stream;
    this.input = input;
  }
}

/**
 * {@linkcode WorkflowRunner.awaitIdle} timed out: the message names the streams failing (with
 * their attempts and last error) and those whose handler is still running, which are also in
 * `failing` and `busy`. `code` is `"Timeout"`.
 *
 * @example
 * ```ts
 * import { AwaitIdleTimeoutError } from "@impel/impel/workflow";
 * const e = new AwaitIdleTimeoutError(2_000, [
 *   { stream: "Order-o1", ageMs: 900, attempts: 5, error: new Error("no gateway") },
 * ], []);
 * console.log(e.message); // awaitIdle took over 2000 ms; failing: Order-o1 (5 attempts): Error: no gateway
 * ```
 *
 * @category Workflows
 */
export class AwaitIdleTimeoutError extends TimeoutError {
  /** Streams whose last attempt threw, as the sink's stats showed them at the timeout. */
  readonly failing: readonly StreamStatus[];
  /** Streams whose handler was still running. */
  readonly busy: readonly StreamStatus[];
  /** Creates the error from the sink's `failing` and `busy` streams at the timeout. */
  constructor(ms: number, failing: readonly StreamStatus[], busy: readonly StreamStatus[]) {
    super("awaitIdle", ms);
    const parts = [
      failing.length === 0
        ? ""
        : `failing: ${
          failing.map((f) =>
            `${f.stream} (${f.attempts} attempt${f.attempts === 1 ? "" : "s"}): ${
              errorText(f.error)
            }`
          ).join("; ")
        }`,
      busy.length === 0
        ? ""
        : `busy: ${busy.map((f) => `${f.stream} (handler running for ${f.ageMs} ms)`).join("; ")}`,
    ].filter((p) => p.length > 0);
    if (parts.length > 0) this.message += `; ${parts.join("; ")}`;
    this.failing = failing;
    this.busy = busy;
  }
}

/**
 * {@linkcode startWorkflow} was asked for a second runner of a category whose runner over the
 * same store already runs in this process. Two runners both dispatching an instance stream can
 * deliver a compensation before the action the other is still delivering; only members of a
 * leased consumer group (which hand a stream over only once its calls have ended) may share a
 * category. `code` is `"DuplicateWorkflowRunner"`.
 *
 * @example
 * ```ts
 * import { DuplicateWorkflowRunnerError } from "@impel/impel/workflow";
 * const e = new DuplicateWorkflowRunnerError("Fulfilment");
 * console.log(e.code, e.category); // "DuplicateWorkflowRunner" "Fulfilment"
 * ```
 *
 * @category Workflows
 */
export class DuplicateWorkflowRunnerError extends ImpelError {
  /** The workflow's category. */
  readonly category: string;
  /** Creates the error for `category`. */
  constructor(category: string) {
    super(
      "DuplicateWorkflowRunner",
      `a runner of ${category} over this store already runs in this process: stop it first ` +
        "(two runners of one category must be members of a leased consumer group)",
    );
    this.category = category;
  }
}
