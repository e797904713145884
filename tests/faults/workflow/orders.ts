// The orders of the workflow crash loop and what the simulated gateway answers each: shared by
// the suite (which places them and checks the outcomes) and the runner process (whose gateway
// answers). Deterministic in the order's number, so every process agrees.
import type { Order } from "../../../examples/fulfilment/fulfilment.ts";
import type { GatewayAnswer } from "../../../examples/fulfilment/gateway.ts";

/** SKUs per run; the first two are scarce, so some reservations are rejected. */
export const SKUS = 20;

/** Units restocked of SKU `k`. */
export const stockOf = (k: number): number => k < 2 ? 8 : 80;

/** Order `n` of run `run` (ids are `{run}o{n}`; a run id is hex, so it has no `o`). */
export function orderOf(run: string, n: number): Order {
  return {
    orderId: `${run}o${n}`,
    sku: `${run}s${n % SKUS}`,
    quantity: 1 + (n % 2),
    amount: 100 + n,
    address: n % 11 === 5 ? "" : `${n} Main St`,
  };
}

/** The gateway's answer to order `orderId`'s payment request. */
export function answerFor(orderId: string): GatewayAnswer {
  const n = Number(orderId.slice(orderId.lastIndexOf("o") + 1));
  return n % 9 === 0 ? "decline" : n % 9 === 1 ? "ignore" : "capture";
}
