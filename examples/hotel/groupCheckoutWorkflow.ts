/**
 * The hotel group checkout in the workflow model, next to today's reactor (`reactor.ts`), over
 * the same GroupCheckout events and decisions and the same GuestStay service.
 *
 * - **Reactor style.** The GroupCheckout stream's state is the to-do list; a reactor over the
 *   category reads it, transfers every pending stay itself and records the outcomes, looping
 *   until nothing is pending, and reports the version it reached so it skips its own writes.
 * - **Workflow style.** Selecting stays is an input whose decision records the selection and, in
 *   the same append, one `TransferToGroup` send per new stay (the outbox). The runner's
 *   dispatcher delivers each send to the GuestStay service and feeds the transfer's result back
 *   as a `TransferReported` input, recorded with the send's delivery. Nothing reads a to-do
 *   list: what remains to do is the outbox's pending sends, and a crash re-sends them (a
 *   transfer to the same group is idempotent by design).
 *
 * Instances live in their own category, {@linkcode GROUP_CHECKOUT_FLOW}, so the two styles can
 * run side by side on one store without handling each other's groups.
 *
 * @module
 */
import {
  defineWorkflow,
  deliveryOptions,
  type SendHandlers,
  type WorkflowDefinition,
} from "../../core/workflow.ts";
import {
  confirm,
  foldGroup,
  type GroupCheckout,
  groupCheckoutCodec,
  type GroupCheckoutEvent,
  initialGroup,
  payGroup,
  recordMerges,
  selectStays,
} from "./groupCheckout.ts";
import { type GuestStayService, stayStream, type TransferResult } from "./guestStay.ts";

/** The category of group checkouts run as workflows. */
export const GROUP_CHECKOUT_FLOW = "GroupCheckoutFlow";

/** What a group checkout workflow is told. */
export type GroupCheckoutInput =
  | { type: "SelectStays"; data: { stayIds: string[]; at: string } }
  | { type: "TransferReported"; data: { stayId: string; result: TransferResult } }
  | { type: "Pay"; data: { paymentId: string; amount: number; at: string } }
  | { type: "Confirm"; data: { at: string } };

/** What it sends: a stay's transfer to the group. */
export type GroupCheckoutMessage = {
  type: "TransferToGroup";
  data: { stayId: string; groupId: string; at: string };
};

/**
 * The group checkout workflow: the GroupCheckout decisions, with the transfers as sends.
 *
 * @example
 * ```ts
 * import { groupCheckoutWorkflow } from "./groupCheckoutWorkflow.ts";
 * const context = { id: "g1", stream: "GroupCheckoutFlow-g1", now: 0, inputId: "c1", correlationId: "c1", version: 0, timers: [] };
 * groupCheckoutWorkflow.decide(groupCheckoutWorkflow.initial, {
 *   type: "SelectStays",
 *   data: { stayIds: ["s1"], at: "2026-03-04T10:00:00Z" },
 * }, context).sends; // [{ to: "GuestStay-s1", type: "TransferToGroup", ... }]
 * ```
 */
export const groupCheckoutWorkflow: WorkflowDefinition<
  GroupCheckoutEvent,
  GroupCheckout,
  GroupCheckoutInput,
  GroupCheckoutMessage
> = defineWorkflow({
  category: GROUP_CHECKOUT_FLOW,
  codec: groupCheckoutCodec,
  initial: initialGroup,
  fold: foldGroup,
  decide(state, input, { id }) {
    switch (input.type) {
      case "SelectStays": {
        const { events } = selectStays(input.data.stayIds, input.data.at)(state);
        const selected = events.flatMap((e) => e.type === "StaysSelected" ? e.data.stayIds : []);
        return {
          events,
          sends: selected.map((stayId) => ({
            to: stayStream(stayId),
            type: "TransferToGroup",
            data: { stayId, groupId: id, at: input.data.at },
          })),
        };
      }
      case "TransferReported":
        return { events: recordMerges([input.data])(state) };
      case "Pay": {
        const { paymentId, amount, at } = input.data;
        return { events: payGroup(paymentId, amount, at)(state).events };
      }
      case "Confirm":
        return { events: confirm(input.data.at)(state).events };
    }
  },
});

/**
 * Delivers the transfers to the GuestStay service and reports each result back. The transfer
 * is appended with the send's delivery options: its events carry the group's correlation id and
 * the send's id as causation id, and a re-send after a crash appends nothing.
 *
 * @example
 * ```ts
 * import { createMemoryStore } from "../../sources/memory.ts";
 * import { guestStayService } from "./guestStay.ts";
 * import { groupCheckoutHandlers } from "./groupCheckoutWorkflow.ts";
 * const handlers = groupCheckoutHandlers(guestStayService(createMemoryStore()));
 * ```
 */
export function groupCheckoutHandlers(
  stays: GuestStayService,
): SendHandlers<GroupCheckoutInput, GroupCheckoutMessage> {
  return {
    TransferToGroup: async (send) => {
      const { stayId, groupId, at } = send.data;
      const result = await stays.transferToGroup(stayId, groupId, at, deliveryOptions(send));
      return { type: "TransferReported", data: { stayId, result } };
    },
  };
}
