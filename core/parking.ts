/**
 * The sink's side of parked streams: reads the park stores before anything is handled, writes
 * parked events (coalescing the writes of many streams into one store call), polls for release
 * and skip requests, claims them for this sink and keeps the claims alive while they are
 * applied. The scheduler decides what happens to each stream; this module does the I/O.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import {
  backoff,
  errorText,
  type FailurePolicy,
  type ParkPolicy,
  streamPolicies,
} from "./failure.ts";
import type { ImpelError } from "./errors.ts";
import {
  type ParkedStream,
  type ParkStore,
  type ParkWrite,
  type ParkWriteOutcome,
  ParkWritesError,
} from "./park.ts";
import type { ParkedSnapshot, ParkIo, ParkResolveResult, Scheduler } from "./scheduler.ts";
import { withTimeout } from "./timeout.ts";
import { sleep } from "./tranches.ts";

/** How long one park store call may take before it counts as failed (and is retried). */
const STORE_TIMEOUT_MS = 30_000;
/** Most streams written in one park call. */
const MAX_WRITES = 500;
/**
 * Requests applied at once by one sink: each release holds a page of parked events in memory
 * (up to `max(maxEventsPerCall, 100)`), so this bounds what releases buffer however many streams
 * are released together; the others wait for the next polls.
 */
const MAX_APPLYING = 8;
/** The shortest a claim lasts unless renewed, ms. */
const MIN_CLAIM_MS = 1_000;
/** Polls between two full reads of a store's parked streams (to forget those resolved elsewhere). */
const RECONCILE_POLLS = 10;
/** Park calls in flight per store: writes are bound by the store's latency, not its work. */
const MAX_CALLS = 4;

/** The sink's parking: I/O for the scheduler, loading, polling and claims. */
export interface Parking {
  /** The store operations the scheduler runs. */
  readonly io: ParkIo;
  /** This sink's name in claims and resolutions. */
  readonly instance: string;
  /** The stores in use. */
  readonly stores: readonly ParkStore[];
  /**
   * Reads every store's parked streams into the scheduler, retrying with backoff until it
   * succeeds or `signal` aborts: at start, and when a tranche is newly owned.
   */
  load(signal: AbortSignal): Promise<void>;
  /** Starts polling for requests. */
  start(scheduler: Scheduler): void;
  /** Since when, and why, the stores cannot be read, if so. */
  trouble(): { readonly since: number; readonly error: unknown } | undefined;
  /** Requests its polls found waiting unclaimed for longer than a claim lasts, if any. */
  unclaimed(): ParkedSnapshot["unclaimed"];
  /** Stops polling and gives up the claims held, recording the progress of releases. */
  stop(): Promise<void>;
}

/**
 * Creates the parking of the sink of `group` for `policies` (one per store); `failure` is the
 * sink's whole (checked) failure policy, to tell which streams it parks in which store.
 */
export function createParking(
  group: string,
  policies: readonly ParkPolicy[],
  failure?: FailurePolicy,
): Parking {
  const log = getLogger(["impel", "parked"]);
  const policyOf = failure === undefined ? undefined : streamPolicies(failure);
  // Streams already warned about (loaded parked in a store their policy no longer parks in).
  const orphans = new Set<string>();
  const instance = `${group}/${crypto.randomUUID().slice(0, 8)}`;
  const stores = policies.map((p) => p.store);
  const pollMs = Math.min(...policies.map((p) => p.pollMs ?? 1000));
  // A claim lasts ten polls, and at least a second: a sink starved of CPU for a few polls would
  // otherwise lose (fenced) claims it still works on, and replay their events again.
  const leaseMs = Math.max(10 * pollMs, MIN_CLAIM_MS);
  // How long the last round of polls took: a claim is renewed once a round, so on a store slow
  // enough that a round takes longer than a claim lasts (DynamoDB Local under load took over 1 s
  // against the 1 s of a 50 ms pollMs) claims would lapse between renewals, each request being
  // claimed and lost again for good. Claims are taken and renewed for three rounds at least, of
  // the slowest round lately (rounds vary: every 10th reads every parked stream).
  let roundMs = 0;
  const claimMs = () => Math.max(leaseMs, 3 * roundMs);
  const retry = backoff({ initialDelayMs: 100, maxDelayMs: 10_000 });
  let scheduler: Scheduler | undefined;
  // Failures by operation and store (reading the parked streams, polling), each until that
  // operation on that store succeeds: one store's success does not hide another's failure.
  const troubles = new Map<string, { since: number; error: unknown }>();
  // The claims this sink holds, by store and stream: the token that fences them and when they
  // lapse unless renewed. A claim past its time is given up here at once: its request may be
  // someone else's by now, so nothing more of it may be applied.
  const claims = new Map<
    string,
    {
      store: ParkStore;
      stream: string;
      episode: string;
      token: string;
      until: number;
      /** Revocations seen when it was taken. */
      revocations: number;
      /** The tranche the episode names, if any. */
      tranche: string | undefined;
    }
  >();
  const claimKey = (store: ParkStore, stream: string) => `${stores.indexOf(store)}:${stream}`;
  // Streams whose claim this sink gave up because the scheduler let go of them (their tranche was
  // revoked): not claimed again here until a tranche is newly owned (`load`), so that the new
  // owner applies the request, not this sink.
  const disowned = new Set<string>();
  // Tranche revocations seen, counted from the ownerships of the scheduler's tranches: a claim
  // the scheduler dropped after one was let go with its tranche, not parked again after a
  // failure (a re-park clears the claim in the store, so giving it up finds nothing either).
  let revocations = 0;
  const watched = new WeakSet<AbortSignal>();
  const watchRevocations = () => {
    for (const t of scheduler?.tranches.values() ?? []) {
      const signal = t.ownership?.signal;
      if (signal === undefined || watched.has(signal)) continue;
      watched.add(signal);
      if (signal.aborted) revoked(t.name);
      else signal.addEventListener("abort", () => revoked(t.name), { once: true });
    }
  };

  /**
   * Whether this sink may claim the episode's request: always for an episode that names no
   * tranche; else only while this sink reads the episode's tranche (and, when the source gives
   * ownerships, holds it), so that a member that owns nothing yet, or another tranche, leaves it
   * to the owner. Decided by what this sink holds now, never by what it has seen before.
   */
  const mayClaim = (e: ParkedStream): boolean => {
    if (e.tranche === undefined) return true;
    const t = scheduler?.tranches.get(e.tranche);
    if (t === undefined) return false;
    const ownership = t.ownership;
    if (ownership === undefined) return true;
    return !ownership.signal.aborted && (ownership.held?.() ?? true);
  };

  // Requests no member claimed for longer than a claim lasts although they name a tranche: no
  // member may own that tranche any more (renamed, say, when a group moves to leases). Any member
  // then claims them, rather than let them wait for good; said once per episode.
  const unowned = new Set<string>();
  // When a live claim on an episode of each tranche was last seen: a tranche whose owner is busy
  // with other requests (a backlog, at most 8 at once) has an owner, and is left to it.
  const claimedSeen = new Map<string, number>();
  const ownerless = (store: ParkStore, e: ParkedStream, now: number): boolean => {
    const since = Math.max(
      e.request?.at ?? now,
      e.claim === undefined ? 0 : e.claim.until,
      e.tranche === undefined ? 0 : claimedSeen.get(e.tranche) ?? 0,
    );
    if (now - since <= leaseMs) return false;
    const key = `${claimKey(store, e.stream)}:${e.episode}`;
    if (!unowned.has(key)) {
      unowned.add(key);
      log.warn(
        "{group}: the {action} of {stream} names tranche {tranche}, which no member has claimed for {ms} ms; applied here ({instance}) instead",
        {
          group,
          action: e.request?.action,
          stream: e.stream,
          tranche: e.tranche,
          ms: now - since,
          instance,
        },
      );
    }
    return true;
  };

  /** A tranche was revoked: the requests of its episodes are stopped and given up at once. */
  function revoked(tranche: string) {
    revocations++;
    const progressOf = new Map(
      (scheduler?.applying() ?? []).map((a) => [claimKey(a.store, a.stream), a.handledTo]),
    );
    for (const [key, c] of claims) {
      if (c.tranche !== tranche) continue;
      claims.delete(key);
      disowned.add(key);
      lost(c.stream, `tranche ${tranche} was revoked`);
      const handledTo = progressOf.get(key);
      call(
        `giving up the claim on ${c.stream}`,
        () =>
          c.store.claim(group, c.stream, c.episode, {
            by: instance,
            token: c.token,
            until: 0,
            ...(handledTo === undefined ? {} : { handledTo }),
          }),
      ).catch((error) =>
        log.warn("{group}: could not give up the claim on {stream}: {error}", {
          group,
          stream: c.stream,
          error: errorText(error),
        })
      );
    }
  }
  // How far a replay got when this sink lost its claim on it, by store and stream: the events
  // below were handled here, so a new claim of the same episode records that progress rather
  // than replaying them again. Taken when the claim is lost and again once the release is back
  // to parked (`io.lost`: a call in flight then has ended, and counts only if it succeeded); the
  // furthest of an episode is kept, since a poll may remember what it saw before the call ended.
  const progress = new Map<string, { episode: string; handledTo: number }>();
  const remember = (key: string, a: { episode: string; handledTo?: number }) => {
    if (a.handledTo === undefined) return;
    const known = progress.get(key);
    if (known?.episode === a.episode && known.handledTo >= a.handledTo) return;
    progress.set(key, { episode: a.episode, handledTo: a.handledTo });
  };
  const polls = new Map<ParkStore, number>();
  // Requests that could be claimed (none held, or the claim lapsed) when each store was last
  // polled, and not claimed here then: since when each can be claimed. Reported once they have
  // waited longer than a claim lasts, since by then a member that may apply them should have.
  type Waiting = NonNullable<ParkedSnapshot["unclaimed"]>["oldest"];
  const waiting = new Map<ParkStore, readonly Waiting[]>();
  let timer: ReturnType<typeof setInterval> | undefined;
  let polling: Promise<void> | undefined;
  let loaded = false;
  let stopped = false;

  const call = <T>(what: string, op: () => Promise<T>, signal?: AbortSignal): Promise<T> =>
    withTimeout(Promise.resolve().then(op), STORE_TIMEOUT_MS, what, "ParkStoreTimeout", signal);

  const failed = (key: string, error: unknown) => {
    const trouble = troubles.get(key);
    if (trouble === undefined) troubles.set(key, { since: Date.now(), error });
    else trouble.error = error;
  };
  const keyOf = (what: string, store: ParkStore) => `${what}:${stores.indexOf(store)}`;
  const oldest = () => {
    let trouble: { since: number; error: unknown } | undefined;
    for (const t of troubles.values()) {
      if (trouble === undefined || t.since < trouble.since) trouble = t;
    }
    return trouble && { ...trouble };
  };

  /**
   * One writer per store: writes that come while calls run go in the next one (a stream is in
   * at most one call: its write holds it busy).
   */
  const writers = new Map(stores.map((store) => {
    let queue: Array<{
      write: ParkWrite;
      resolve: (o: ParkWriteOutcome) => void;
      reject: (e: unknown) => void;
    }> = [];
    let running = 0;
    const flush = () => {
      if (running >= MAX_CALLS || queue.length === 0) return;
      running++;
      const batch = queue.slice(0, MAX_WRITES);
      queue = queue.slice(batch.length);
      call(
        `writing ${batch.length} parked stream(s)`,
        () => store.park(group, batch.map((b) => b.write)),
      ).then(
        (outcomes) => batch.forEach((b, i) => b.resolve(outcomes[i] ?? "notParked")),
        (error) => {
          // Some streams written, some not: only those not written fail (and are retried).
          if (error instanceof ParkWritesError) {
            batch.forEach((b, i) => {
              const outcome = error.outcomes[i];
              if (outcome !== undefined) b.resolve(outcome);
              else refused(b.write, error.errors[i] ?? error, b.reject);
            });
          } else batch.forEach((b) => refused(b.write, error, b.reject));
        },
      ).finally(() => {
        running--;
        flush();
      });
    };
    return [store, (write: ParkWrite) =>
      new Promise<ParkWriteOutcome>((resolve, reject) => {
        queue.push({ write, resolve, reject });
        queueMicrotask(flush);
      })] as const;
  }));

  // Streams whose events the store cannot take as they are (an event too large): logged once
  // each as an error; they stay failing (retried, visible in stats and health), never dropped.
  const unparkable = new Set<string>();
  const refused = (write: ParkWrite, error: unknown, reject: (e: unknown) => void) => {
    if ((error as ImpelError)?.code === "ParkEventTooLarge" && !unparkable.has(write.stream)) {
      unparkable.add(write.stream);
      log.error("{group}: {stream} cannot be parked and stays failing: {error}", {
        group,
        stream: write.stream,
        error: errorText(error),
      });
    }
    reject(error);
  };

  const io: ParkIo = {
    write: (store, write) => writers.get(store)!(write),
    page: (store, stream, episode, from, limit) =>
      call(
        `reading parked events of ${stream}`,
        () => store.events(group, stream, episode, from, limit),
      ),
    async resolve(store, stream, episode, expectedNext): Promise<ParkResolveResult> {
      const key = claimKey(store, stream);
      const held = claims.get(key);
      if (held === undefined || held.until <= Date.now()) {
        claims.delete(key);
        return { kind: "lost" }; // lapsed here: the store would refuse it too
      }
      const entry = await call(
        `resolving ${stream}`,
        () =>
          store.resolve(group, stream, episode, { by: instance, token: held.token, expectedNext }),
      );
      if (entry !== undefined) {
        claims.delete(key);
        return { kind: "resolved", entry };
      }
      const now = await call(`reading parked stream ${stream}`, () => store.get(group, stream));
      if (now?.state !== "parked") {
        claims.delete(key);
        return { kind: "gone" };
      }
      if (
        now.episode !== episode || now.request === undefined || now.claim?.token !== held.token ||
        now.claim.until <= Date.now()
      ) {
        claims.delete(key);
        return { kind: "lost" };
      }
      if (expectedNext !== undefined && now.next === expectedNext) {
        // Nothing changed that would explain it (a transient conflict): retried after a backoff.
        throw new Error(`the park store did not resolve ${stream} and says nothing changed`);
      }
      return { kind: "moved", next: now.next }; // a skip resolves whatever was added: try again
    },
    lost(store, stream, episode, handledTo) {
      remember(claimKey(store, stream), { episode, handledTo });
    },
  };

  async function load(signal: AbortSignal) {
    disowned.clear(); // a tranche newly owned may hold them again
    for (const store of stores) {
      for (let attempt = 1;; attempt++) {
        try {
          const entries = await call(
            `reading the parked streams of ${group}`,
            () => store.list(group),
            signal,
          );
          scheduler?.markParked(store, entries);
          troubles.delete(keyOf("load", store));
          warnOrphans(store, entries);
          break;
        } catch (error) {
          if (signal.aborted) return;
          failed(keyOf("load", store), error);
          log.warn(
            "{group}: cannot read the parked streams (attempt {attempt}); nothing is handled until it can: {error}",
            { group, attempt, error: errorText(error) },
          );
          if (!await sleep(retry.delay(attempt), signal)) return;
        }
      }
    }
    loaded = true; // requests are looked for once the parked streams are known
  }

  /**
   * A configuration change removed or changed the rule a stream was parked under: it is still
   * parked in the store (and stays parked here until released or skipped), but nothing in the
   * policy says so any more, so it is said here, once per stream and store.
   */
  function warnOrphans(store: ParkStore, entries: readonly ParkedStream[]) {
    if (policyOf === undefined) return;
    for (const e of entries) {
      if (e?.state !== "parked") continue;
      const policy = policyOf(e.stream);
      if (policy.kind === "park" && policy.store === store) continue;
      const key = claimKey(store, e.stream);
      if (orphans.has(key)) continue;
      orphans.add(key);
      log.warn(
        "{group}: {stream} is parked in park store {store} ({events} events since {since}) but its failure policy ({policy}) no longer parks it there: it stays parked until released or skipped; a release replays it under the current policy",
        {
          group,
          stream: e.stream,
          store: stores.indexOf(store),
          events: e.events,
          since: new Date(e.parkedAt).toISOString(),
          policy: policy.kind === "park" ? "park, in another store" : policy.kind,
        },
      );
    }
  }

  /** Claims this sink can no longer rely on (not renewed in time) stop being applied now. */
  function dropLapsed() {
    if (scheduler === undefined) return;
    const now = Date.now();
    for (const a of scheduler.applying()) {
      const key = claimKey(a.store, a.stream);
      const held = claims.get(key);
      if (held !== undefined && held.until > now) continue;
      remember(key, a);
      if (held === undefined) {
        scheduler.claimLost(a.stream); // said already; the scheduler has yet to let it go
        continue;
      }
      claims.delete(key);
      lost(a.stream, "it lapsed before it could be renewed");
    }
  }

  function lost(stream: string, why: string) {
    log.warn("{group}: lost the claim on {stream} ({why}); its request is not applied here", {
      group,
      stream,
      why,
    });
    scheduler!.claimLost(stream);
  }

  async function pollStore(store: ParkStore) {
    dropLapsed();
    // Every few polls the whole list, so that streams another member resolved stop being shown
    // parked here (stats, health, gauges) and their state is freed.
    const n = (polls.get(store) ?? 0) + 1;
    polls.set(store, n);
    if (n % RECONCILE_POLLS === 0) {
      const entries = await call(`reading the parked streams of ${group}`, () => store.list(group));
      scheduler!.markParked(store, entries);
    }
    watchRevocations();
    const now = Date.now();
    const held = scheduler!.applying().filter((a) => a.store === store);
    const live = new Set(held.map((a) => claimKey(store, a.stream)));
    for (const [key, c] of claims) {
      if (c.store !== store || live.has(key)) continue;
      // No longer applied here (its tranche was revoked and forgotten): given up now, so that
      // the new owner need not wait for it to lapse. Its progress is unknown here: the new
      // owner replays from the last progress recorded.
      claims.delete(key);
      watchRevocations();
      const given = await call(
        `giving up the claim on ${c.stream}`,
        () => store.claim(group, c.stream, c.episode, { by: instance, token: c.token, until: 0 }),
      );
      if (given !== undefined && revocations > c.revocations) {
        disowned.add(key);
        log.info("{group}: gave up the claim on {stream}: its tranche was revoked", {
          group,
          stream: c.stream,
        });
      }
    }
    for (const a of held) {
      const key = claimKey(store, a.stream);
      const token = claims.get(key)?.token;
      // From now, not from the poll's start: the store calls before it may have taken a while.
      const until = Date.now() + claimMs();
      const renewed = token === undefined ? undefined : await call(
        `renewing the claim on ${a.stream}`,
        () =>
          store.claim(group, a.stream, a.episode, {
            by: instance,
            token,
            until,
            handledTo: a.handledTo,
          }),
      );
      if (token === undefined) {
        remember(key, a);
        scheduler!.claimLost(a.stream); // said already; the scheduler has yet to let it go
      } else if (renewed?.claim?.token !== token) {
        claims.delete(key);
        remember(key, a);
        lost(a.stream, "it lapsed or was taken, or the request changed");
      } else {
        const c = claims.get(key);
        if (c !== undefined) c.until = until;
      }
    }
    const mine = new Set(held.map((a) => a.stream));
    const requested = await call(
      `polling ${group} for park requests`,
      () => store.list(group, { requested: true }),
    );
    for (const e of requested) {
      if (e.tranche !== undefined && e.claim !== undefined && e.claim.until > now) {
        claimedSeen.set(e.tranche, now);
      }
    }
    // Streams claimed during this poll (here or, first, by another sink): not waiting.
    const claimedNow = new Set<string>();
    try {
      await claimRequests(store, requested, mine, now, claimedNow);
    } finally {
      // Also when a claim failed: what the poll saw stays the best knowledge of what waits.
      waiting.set(
        store,
        requested.flatMap((e) => {
          const r = e.request;
          if (r === undefined || claimedNow.has(e.stream)) return [];
          if (e.claim !== undefined && e.claim.until > now) return [];
          return [{
            stream: e.stream,
            action: r.action,
            by: r.by,
            at: r.at,
            since: Math.max(r.at, e.claim?.until ?? 0),
            ...(e.tranche === undefined ? {} : { tranche: e.tranche }),
          }];
        }),
      );
    }
  }

  /** Claims, for this sink, the requests of `requested` it may apply, up to MAX_APPLYING. */
  async function claimRequests(
    store: ParkStore,
    requested: readonly ParkedStream[],
    mine: ReadonlySet<string>,
    now: number,
    claimedNow: Set<string>,
  ) {
    for (const e of requested) {
      if (scheduler!.applying().length >= MAX_APPLYING) break;
      if (stopped || mine.has(e.stream) || e.request === undefined) continue;
      if (disowned.has(claimKey(store, e.stream))) continue;
      if (e.claim !== undefined && e.claim.until > now) continue;
      if (!mayClaim(e) && !ownerless(store, e, now)) continue; // another member owns its tranche
      const key = claimKey(store, e.stream);
      const done = progress.get(key);
      progress.delete(key);
      const handledTo = done?.episode === e.episode && e.request.action === "release"
        ? { handledTo: done.handledTo }
        : {};
      // From now, not from the poll's start: on a slow store, the list and the claims before
      // this one can take longer than a claim lasts, and a claim would be born lapsed (it was, on
      // DynamoDB Local under load: every claim dropped at once, the request never applied).
      const until = Date.now() + claimMs();
      const claimed: ParkedStream | undefined = await call(
        `claiming the request on ${e.stream}`,
        () => store.claim(group, e.stream, e.episode, { by: instance, until, ...handledTo }),
      );
      if (claimed?.claim === undefined) {
        claimedNow.add(e.stream); // claimed by another sink first, or resolved meanwhile
        continue;
      }
      const token = claimed.claim.token;
      if (stopped || (!mayClaim(claimed) && !ownerless(store, e, now))) {
        // Stopped, or the tranche was lost, while claiming: given up at once, so that another
        // sink (the owner) need not wait it out.
        await call(
          `giving up the claim on ${e.stream}`,
          () => store.claim(group, e.stream, e.episode, { by: instance, token, until: 0 }),
        );
        continue;
      }
      claimedNow.add(e.stream);
      claims.set(claimKey(store, e.stream), {
        store,
        stream: e.stream,
        episode: e.episode,
        token,
        until,
        revocations,
        tranche: claimed.tranche,
      });
      log.info("{group}: applying the {action} of {stream} asked by {by}", {
        group,
        action: e.request.action,
        stream: e.stream,
        by: e.request.by,
      });
      scheduler!.apply(store, claimed);
    }
  }

  function poll() {
    if (polling !== undefined || stopped || !loaded || scheduler === undefined) return;
    const started = Date.now();
    polling = (async () => {
      for (const store of stores) {
        try {
          await pollStore(store);
          troubles.delete(keyOf("poll", store));
        } catch (error) {
          failed(keyOf("poll", store), error);
          log.warn("{group}: polling the park store for requests failed: {error}", {
            group,
            error: errorText(error),
          });
        }
      }
    })().finally(() => {
      roundMs = Math.max(Date.now() - started, Math.floor(roundMs * 0.9));
      polling = undefined;
    });
  }

  return {
    io,
    instance,
    stores,
    load,
    start(s) {
      scheduler = s;
      // A sink stopped while it was starting (its park stores still loading) starts no timer: one
      // started after stop() would keep the process alive for good.
      if (stopped) return;
      timer = setInterval(() => {
        dropLapsed(); // also while a poll waits on a slow store
        poll();
      }, pollMs);
    },
    trouble: oldest,
    unclaimed() {
      if (stopped) return undefined;
      const now = Date.now();
      let requests = 0;
      let first: Waiting | undefined;
      for (const list of waiting.values()) {
        for (const w of list) {
          if (now - w.since <= leaseMs) continue;
          requests++;
          if (first === undefined || w.since < first.since) first = w;
        }
      }
      return first === undefined ? undefined : { requests, oldest: first };
    },
    async stop() {
      stopped = true;
      clearInterval(timer);
      await polling;
      const held = scheduler?.applying() ?? [];
      // Given up with the progress made, so that the next sink resumes at once, not after the lease.
      const given = held.flatMap((a) => {
        const token = claims.get(claimKey(a.store, a.stream))?.token;
        return token === undefined ? [] : [{ ...a, token }];
      });
      claims.clear();
      await Promise.all(
        given.map((a) =>
          call(
            `giving up the claim on ${a.stream}`,
            () =>
              a.store.claim(group, a.stream, a.episode, {
                by: instance,
                token: a.token,
                until: 0,
                handledTo: a.handledTo,
              }),
          ).catch((error) =>
            log.warn("{group}: could not give up the claim on {stream}: {error}", {
              group,
              stream: a.stream,
              error: errorText(error),
            })
          )
        ),
      );
    },
  };
}
