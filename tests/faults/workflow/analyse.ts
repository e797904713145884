// What the workflow crash loop counts, from the runs' logs and every stream the orders touched:
// outcomes, records kept twice, effects applied twice, outcomes that disagree with the
// services' events, sends that were never delivered, re-sends, and timers (fired twice, fired
// by another process than the one that set them).
import type { StreamEvent } from "../../../core/event.ts";
import type { Order } from "../../../examples/fulfilment/fulfilment.ts";
import type { GatewayAnswer } from "../../../examples/fulfilment/gateway.ts";

/** What the suite observed. */
export interface Observed {
  readonly orders: readonly Order[];
  readonly answers: (orderId: string) => GatewayAnswer;
  /** Events by stream name (every instance, Payment, Shipment and Stock stream of the run). */
  readonly streams: ReadonlyMap<string, readonly StreamEvent[]>;
  /** Units restocked per SKU. */
  readonly restocked: ReadonlyMap<string, number>;
  /** Each run's log, and whether it was killed. */
  readonly runs: readonly { readonly log: string; readonly killed: boolean }[];
}

/** The figures. */
export interface Figures {
  kills: number;
  orders: number;
  completed: number;
  compensated: number;
  failed: number;
  /** Orders with no end: lost. */
  unfinished: number;
  /** Outcomes by reason (`completed` or the compensation's reason up to the first digit). */
  reasons: Record<string, number>;
  /** Saga records or runtime marks kept twice in an instance stream. */
  duplicateRecords: number;
  /** Sends in an outbox never recorded delivered. */
  undelivered: number;
  /** Service events applied twice for one order. */
  effectsTwice: number;
  /** Outcomes that disagree with the services' events or the gateway's answer. */
  inconsistent: number;
  /** SKUs whose free units are not restocked minus what completed orders hold. */
  stockMismatches: number;
  /** Orders the gateway answered, but too late: they timed out. */
  lateAnswers: number;
  /** Distinct sends handled, handler calls, and sends handled more than once. */
  sends: number;
  sendCalls: number;
  resent: number;
  /** Timers set in the outboxes, and TimerFired marks. */
  timersSet: number;
  timersFired: number;
  timersFiredTwice: number;
  /** Fired by another process than the one that first scheduled them. */
  timersFiredAfterRestart: number;
  /**
   * Fires that found the timer no longer pending: cancelled timers reaching their due time (they
   * stay in their shard until then), and fires repeated after a kill.
   */
  staleFires: number;
  /** Orders the gateway ignored that got past the reservation, and those of them compensated by their deadline. */
  ignored: number;
  ignoredTimedOut: number;
  /** Problems, one line each, for the report. */
  problems: string[];
}

const count = <T>(items: readonly T[], key: (t: T) => string | undefined) => {
  const counts = new Map<string, number>();
  for (const item of items) {
    const k = key(item);
    if (k !== undefined) counts.set(k, (counts.get(k) ?? 0) + 1);
  }
  return counts;
};
const field = (e: StreamEvent, key: string) => (e.data as Record<string, unknown>)[key];

export function analyse(o: Observed): Figures {
  const f: Figures = {
    kills: o.runs.filter((r) => r.killed).length,
    orders: o.orders.length,
    completed: 0,
    compensated: 0,
    failed: 0,
    unfinished: 0,
    reasons: {},
    duplicateRecords: 0,
    undelivered: 0,
    effectsTwice: 0,
    inconsistent: 0,
    stockMismatches: 0,
    lateAnswers: 0,
    sends: 0,
    sendCalls: 0,
    resent: 0,
    timersSet: 0,
    timersFired: 0,
    timersFiredTwice: 0,
    timersFiredAfterRestart: 0,
    staleFires: 0,
    ignored: 0,
    ignoredTimedOut: 0,
    problems: [],
  };
  const problem = (line: string) => void (f.problems.length < 50 && f.problems.push(line));
  const held = new Map<string, number>();

  for (const order of o.orders) {
    const id = order.orderId;
    const wf = o.streams.get(`Fulfilment-${id}`) ?? [];
    const ends = wf.filter((e) => ["Completed", "Compensated", "Failed"].includes(e.type));
    if (ends.length === 0) {
      f.unfinished++;
      problem(`${id}: never ended (${wf.map((e) => e.type).join(", ")})`);
    }
    if (ends.length > 1) {
      f.duplicateRecords++;
      problem(`${id}: ended ${ends.length} times`);
    }
    const marks = count(wf, (e) => {
      if (e.type === "Started") return e.type;
      if (e.type.startsWith("Step") || e.type === "CompensationFailed") {
        return `${e.type} ${field(e, "step")}`;
      }
      if (e.type === "WorkflowDelivered" || e.type === "WorkflowTimerFired") {
        return `${e.type} ${field(e, "seq")}`;
      }
      return undefined;
    });
    for (const [mark, n] of marks) {
      if (n > 1) {
        f.duplicateRecords++;
        if (mark.startsWith("WorkflowTimerFired")) f.timersFiredTwice++;
        problem(`${id}: ${mark} recorded ${n} times`);
      }
    }
    const delivered = new Set(
      wf.filter((e) => e.type === "WorkflowDelivered").map((e) => field(e, "seq")),
    );
    for (const send of wf.filter((e) => e.type === "WorkflowSend")) {
      if (!delivered.has(field(send, "seq"))) {
        f.undelivered++;
        problem(`${id}: send ${field(send, "seq")} (${field(send, "type")}) never delivered`);
      }
    }
    f.timersSet += wf.filter((e) => e.type === "WorkflowTimerSet").length;
    const fired = wf.filter((e) => e.type === "WorkflowTimerFired").length;
    f.timersFired += fired;

    // The services' events for this order.
    const stock = (o.streams.get(`Stock-${order.sku}`) ?? []).filter((e) =>
      field(e, "orderId") === id
    );
    const payment = o.streams.get(`Payment-${id}`) ?? [];
    const shipment = o.streams.get(`Shipment-${id}`) ?? [];
    const effects = new Map<string, number>();
    for (const [k, n] of count(stock, (e) => e.type)) effects.set(k, n);
    for (const [k, n] of count(payment, (e) => e.type)) effects.set(k, n);
    for (const [k, n] of count(shipment, (e) => e.type)) effects.set(k, n);
    for (const [type, n] of effects) {
      if (n > 1) {
        f.effectsTwice++;
        problem(`${id}: ${type} applied ${n} times`);
      }
    }
    const has = (type: string) => (effects.get(type) ?? 0) > 0;

    const end = ends.at(-1);
    if (end === undefined) continue;
    const status = end.type;
    const reason = status === "Completed" ? "completed" : String(field(end, "reason") ?? "");
    const key = reason.replace(/[0-9].*$/, "").trim();
    f.reasons[key] = (f.reasons[key] ?? 0) + 1;
    const answer = o.answers(id);
    const inconsistent = (why: string) => {
      f.inconsistent++;
      problem(`${id}: ${status} (${reason}) but ${why}`);
    };
    if (status === "Completed") {
      f.completed++;
      held.set(order.sku, (held.get(order.sku) ?? 0) + order.quantity);
      if (!has("Reserved") || has("Released")) inconsistent("its reservation is not held");
      if (!has("PaymentCaptured") || has("PaymentRefunded") || has("PaymentCancelled")) {
        inconsistent("its payment is not captured");
      }
      if (!has("Shipped")) inconsistent("it was not shipped");
      if (answer !== "capture") inconsistent(`the gateway answered ${answer}`);
      if (order.address === "") inconsistent("it has no address");
    } else if (status === "Compensated") {
      f.compensated++;
      if (has("Shipped")) inconsistent("it was shipped");
      if (has("Reserved") !== has("Released")) inconsistent("its reservation is not released");
      if (has("PaymentCaptured") !== has("PaymentRefunded")) inconsistent("a capture is kept");
      if (
        has("PaymentRequested") && !has("PaymentCaptured") && !has("PaymentDeclined") &&
        !has("PaymentCancelled")
      ) inconsistent("its payment request is still open");
      const timedOut = reason.startsWith("pay: no outcome");
      if (timedOut && fired !== 1) inconsistent(`its deadline fired ${fired} times`);
      if (answer === "ignore" && !reason.startsWith("reserve:")) {
        f.ignored++;
        if (timedOut) f.ignoredTimedOut++;
        else inconsistent("the gateway never answered");
      } else if (timedOut) f.lateAnswers++;
      if (reason.startsWith("pay: card declined") && answer !== "decline") {
        inconsistent(`the gateway answered ${answer}`);
      }
      if (reason.startsWith("ship:") && order.address !== "") inconsistent("it has an address");
      if (reason.startsWith("reserve:") && (has("Reserved") || !has("ReservationRejected"))) {
        inconsistent("its reservation was not rejected");
      }
    } else {
      f.failed++;
      problem(`${id}: failed: ${reason}`);
    }
  }

  for (const [sku, restocked] of o.restocked) {
    let available = 0;
    for (const e of o.streams.get(`Stock-${sku}`) ?? []) {
      const q = Number(field(e, "quantity"));
      if (e.type === "Restocked" || e.type === "Released") available += q;
      if (e.type === "Reserved") available -= q;
    }
    if (available !== restocked - (held.get(sku) ?? 0)) {
      f.stockMismatches++;
      problem(`${sku}: ${available} free, expected ${restocked - (held.get(sku) ?? 0)}`);
    }
  }

  const sendCalls = new Map<string, number>();
  const scheduledBy = new Map<string, string>();
  const firedBy = new Map<string, string>();
  for (const { log } of o.runs) {
    for (const line of log.split("\n")) {
      const cols = line.split("\t");
      if (cols[0] === "send") sendCalls.set(cols[1], (sendCalls.get(cols[1]) ?? 0) + 1);
      if (cols[0] === "timer" && cols[1] === "scheduled" && !scheduledBy.has(cols[2])) {
        scheduledBy.set(cols[2], cols[3]);
      }
      if (cols[0] === "timer" && cols[1] === "fired") firedBy.set(cols[2], cols[3]);
      if (cols[0] === "timer" && cols[1] === "stale") f.staleFires++;
    }
  }
  f.sends = sendCalls.size;
  f.sendCalls = [...sendCalls.values()].reduce((a, b) => a + b, 0);
  f.resent = [...sendCalls.values()].filter((n) => n > 1).length;
  for (const [timer, pid] of firedBy) {
    const by = scheduledBy.get(timer);
    if (by !== undefined && by !== pid) f.timersFiredAfterRestart++;
  }
  return f;
}
