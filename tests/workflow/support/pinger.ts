// The workflow of tests/workflow/owner.test.ts and its runner process: each Note sends a Ping.
import { createCodec } from "../../../core/codec.ts";
import { defineWorkflow, type WorkflowDefinition } from "../../../core/workflow.ts";

type Noted = { type: "Noted"; data: null };
type Input = { type: "Note"; data: null };
type Ping = { type: "Ping"; data: null };

/** The pinger workflow of `category`. */
export const pingerOf = (category: string): WorkflowDefinition<Noted, number, Input, Ping> =>
  defineWorkflow<Noted, number, Input, Ping>({
    category,
    codec: createCodec<Noted>({ Noted: {} }),
    initial: 0,
    fold: (n, events) => n + events.length,
    decide: () => ({
      events: [{ type: "Noted", data: null }],
      sends: [{ to: "Pinged-1", type: "Ping", data: null }],
    }),
  });
