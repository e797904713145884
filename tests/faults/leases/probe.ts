// Whether the streams sink asks Ownership.held() before starting a call: the fencing rule for a
// process resumed after a pause relies on it (see core/ownership.ts). An ownership that is not
// revoked but no longer held must not get a call.
import { createOwnership, streamsSink } from "../../../mod.ts";

/** Resolves true when a batch of an ownership that says it is no longer held is not handled. */
export async function sinkAsksHeld(): Promise<boolean> {
  let called = false;
  const sink = streamsSink({ handler: () => void (called = true), statsIntervalMs: 0 });
  const owned = createOwnership("t", { held: () => false });
  const writer = sink.writable.getWriter();
  await writer.write({
    tranche: "t",
    items: [{
      stream: "S-1",
      event: { index: 0, type: "E", data: null, meta: null, id: "0", time: new Date(0), size: 1 },
    }],
    position: 1n,
    isTail: true,
    ownership: owned.ownership,
  });
  await new Promise((r) => setTimeout(r, 50));
  writer.releaseLock();
  await owned.revoke();
  await sink.stop();
  return !called;
}
