/**
 * The logic of a park store over its state in memory, shared by the memory store and the file
 * store (which loads the state at open and saves it after each change): the reference for the
 * contract every park store follows. Events are kept in their stored (JSON) form, so that what
 * comes back is what a durable store would give.
 *
 * @module
 */
import type { StreamEvent } from "../core/event.ts";
import {
  checkParkName,
  checkParkRequest,
  checkParkWrites,
  decodeParkedEvent,
  encodeParkedEvent,
  newClaimToken,
  type ParkedStream,
  ParkRequestConflictError,
  type ParkStore,
  type ParkWriteOutcome,
  skipBound,
  StreamNotParkedError,
} from "../core/park.ts";
import { checkInteger } from "../core/errors.ts";

/** One episode of a stream: its record and its parked events, encoded. */
export interface Episode {
  /** The record. */
  entry: ParkedStream;
  /** The events still parked, by index, as {@linkcode encodeParkedEvent} stores them. */
  events: Array<{ readonly index: number; readonly text: string }>;
}

/** Everything a park store holds: group -> stream -> episodes, oldest first. */
export interface ParkState {
  /** At most the last episode of a stream is active. */
  readonly groups: Map<string, Map<string, Episode[]>>;
  /** Episodes numbered so far (ids are unique per store). */
  episodes: number;
}

/** An empty state. */
export function emptyParkState(): ParkState {
  return { groups: new Map(), episodes: 0 };
}

/** A store's methods answering at once rather than with promises. */
export type Sync<T> = {
  [K in keyof T]: T[K] extends (...args: infer A) => Promise<infer R> ? (...args: A) => R : never;
};

/**
 * The park store's operations over `state`, answering at once; a call changes `state` in place
 * (a throw before it changed anything, but for a failed validation only).
 */
export function parkStateStore(state: ParkState): Sync<ParkStore> {
  // group -> stream -> episodes, oldest first; at most the last one is active.
  const groups = state.groups;
  const episodesOf = (group: string, stream: string, create = false): Episode[] => {
    let streams = groups.get(group);
    if (streams === undefined) {
      if (!create) return [];
      groups.set(group, streams = new Map());
    }
    let list = streams.get(stream);
    if (list === undefined) {
      if (!create) return [];
      streams.set(stream, list = []);
    }
    return list;
  };
  const active = (group: string, stream: string): Episode | undefined => {
    const list = episodesOf(group, stream);
    const last = list[list.length - 1];
    return last?.entry.state === "parked" ? last : undefined;
  };
  const episodeOf = (group: string, stream: string, episode: string) => {
    const e = active(group, stream);
    return e?.entry.episode === episode ? e : undefined;
  };
  const update = (e: Episode, changes: Partial<ParkedStream>): ParkedStream => {
    const next = { ...e.entry, ...changes };
    for (const k of Object.keys(changes) as Array<keyof ParkedStream>) {
      if (changes[k] === undefined) delete next[k];
    }
    return e.entry = next;
  };

  return {
    park(group, writes) {
      checkParkWrites(group, writes);
      const outcomes: ParkWriteOutcome[] = writes.map((w) => {
        let e = active(group, w.stream);
        const f = w.failure;
        if (f !== undefined) {
          if (e === undefined) {
            const first = w.events[0]?.index ?? w.handledTo ?? 0;
            e = {
              entry: {
                group,
                stream: w.stream,
                episode: String(++state.episodes),
                state: "parked",
                first,
                next: first,
                events: 0,
                error: f.error,
                attempts: f.attempts,
                firstFailedAt: f.firstFailedAt,
                lastFailedAt: f.lastFailedAt,
                parkedAt: Date.now(),
                ...(w.tranche === undefined ? {} : { tranche: w.tranche }),
              },
              events: [],
            };
            episodesOf(group, w.stream, true).push(e);
          } else {
            const handledTo = Math.max(e.entry.first, w.handledTo ?? 0);
            const request = e.entry.request;
            if (request?.action === "release" && e.entry.claim !== undefined) {
              // The release being applied failed again: recorded in the history, before the
              // episode (which stays active, the newest of the stream's list).
              const { request: _r, claim, ...rest } = e.entry;
              const list = episodesOf(group, w.stream);
              list.splice(list.length - 1, 0, {
                entry: {
                  ...rest,
                  episode: `${e.entry.episode}.${++state.episodes}`,
                  state: "failed",
                  events: 0,
                  error: f.error,
                  attempts: f.attempts,
                  lastFailedAt: f.lastFailedAt,
                  resolution: {
                    action: "release",
                    by: request.by,
                    ...(request.reason === undefined ? {} : { reason: request.reason }),
                    at: Date.now(),
                    appliedBy: claim.by,
                    events: e.events.filter((x) => x.index < handledTo).length,
                  },
                },
                events: [],
              });
            }
            e.events = e.events.filter((x) => x.index >= handledTo);
            update(e, {
              error: f.error,
              attempts: f.attempts,
              lastFailedAt: f.lastFailedAt,
              first: handledTo,
              next: Math.max(e.entry.next, handledTo),
              events: e.events.length,
              request: undefined,
              claim: undefined,
            });
          }
        } else if (e === undefined) return "notParked";
        if (w.tranche !== undefined && e.entry.tranche !== w.tranche) {
          update(e, { tranche: w.tranche });
        }
        // Added: what is not stored yet, at or above the first event still parked.
        const have = new Set(e.events.map((x) => x.index));
        const added = w.events.filter((x) => x.index >= e!.entry.first && !have.has(x.index));
        if (added.length > 0) {
          for (const x of added) e.events.push({ index: x.index, text: encodeParkedEvent(x) });
          e.events.sort((a, b) => a.index - b.index);
          update(e, {
            next: Math.max(e.entry.next, added[added.length - 1].index + 1),
            events: e.events.length,
          });
        }
        return "parked";
      });
      return outcomes;
    },

    list(group, options = {}) {
      if (group !== undefined) checkParkName("group", group);
      const out: ParkedStream[] = [];
      const names = group === undefined ? [...groups.keys()].sort() : [group];
      for (const g of names) {
        const streams = groups.get(g);
        if (streams === undefined) continue;
        for (const stream of [...streams.keys()].sort()) {
          const list = streams.get(stream)!;
          const last = list[list.length - 1];
          if (last.entry.state === "parked" && (!options.requested || last.entry.request)) {
            out.push(last.entry);
          }
          if (options.resolved && !options.requested) {
            for (let i = list.length - 1; i >= 0; i--) {
              if (list[i].entry.state !== "parked") out.push(list[i].entry);
            }
          }
        }
      }
      return out;
    },

    get(group, stream) {
      checkParkName("group", group);
      checkParkName("stream", stream);
      // The active episode, else the latest resolved one (a failed release's record never: the
      // episode it failed in is newer).
      const list = episodesOf(group, stream).filter((e) => e.entry.state !== "failed");
      return list[list.length - 1]?.entry;
    },

    events(group, stream, episode, from, limit) {
      checkParkName("group", group);
      checkParkName("stream", stream);
      checkInteger("from", from, 0);
      checkInteger("limit", limit, 1);
      const e = episodeOf(group, stream, episode);
      if (e === undefined) return [];
      const out: StreamEvent[] = [];
      const start = Math.max(from, e.entry.first);
      for (const x of e.events) {
        if (x.index < start) continue;
        out.push(decodeParkedEvent(x.text));
        if (out.length === limit) break;
      }
      return out;
    },

    request(group, stream, request) {
      checkParkName("group", group);
      checkParkName("stream", stream);
      checkParkRequest(request);
      const e = active(group, stream);
      if (e === undefined) {
        const list = episodesOf(group, stream);
        const last = list[list.length - 1]?.entry;
        if (last?.resolution?.action === request.action) return last;
        throw new StreamNotParkedError(group, stream);
      }
      const pending = e.entry.request;
      if (pending?.action === request.action) return e.entry;
      const now = Date.now();
      if (pending !== undefined && e.entry.claim !== undefined && e.entry.claim.until > now) {
        throw new ParkRequestConflictError(group, stream, pending.action, request.action);
      }
      const upTo = skipBound(e.entry, request);
      return update(e, {
        request: {
          action: request.action,
          by: request.by,
          ...(request.reason === undefined ? {} : { reason: request.reason }),
          at: now,
          ...(upTo === undefined ? {} : { upTo }),
        },
        claim: undefined,
      });
    },

    claim(group, stream, episode, claim) {
      checkParkName("by", claim?.by);
      checkInteger("until", claim.until, 0);
      if (claim.token !== undefined) checkParkName("token", claim.token);
      const e = episodeOf(group, stream, episode);
      if (e === undefined || e.entry.request === undefined) return undefined;
      const held = e.entry.claim;
      const now = Date.now();
      if (claim.token === undefined) {
        if (held !== undefined && held.until > now) return undefined;
      } else if (held === undefined || held.token !== claim.token || held.until <= now) {
        return undefined; // lapsed or taken: its holder must stop
      }
      const token = claim.token ?? newClaimToken();
      const changes: Partial<ParkedStream> = {
        claim: { by: claim.by, until: claim.until, token },
      };
      if (claim.handledTo !== undefined && claim.handledTo > e.entry.first) {
        const handledTo = checkInteger("handledTo", claim.handledTo, 0);
        e.events = e.events.filter((x) => x.index >= handledTo);
        Object.assign(changes, {
          first: handledTo,
          next: Math.max(e.entry.next, handledTo),
          events: e.events.length,
        });
      }
      return update(e, changes);
    },

    resolve(group, stream, episode, resolution) {
      checkParkName("by", resolution?.by);
      checkParkName("token", resolution.token);
      const e = episodeOf(group, stream, episode);
      const request = e?.entry.request;
      const held = e?.entry.claim;
      if (
        e === undefined || request === undefined || held?.token !== resolution.token ||
        held.until <= Date.now()
      ) return undefined;
      if (
        request.action === "release" && resolution.expectedNext !== undefined &&
        e.entry.next !== resolution.expectedNext
      ) return undefined;
      const upTo = request.action === "skip" ? request.upTo : undefined;
      const resolved = {
        action: request.action,
        by: request.by,
        ...(request.reason === undefined ? {} : { reason: request.reason }),
        at: Date.now(),
        appliedBy: resolution.by,
        ...(upTo === undefined ? {} : { upTo }),
      };
      if (upTo !== undefined && e.entry.next > upTo) {
        // Events parked after the operator asked stay parked; the skip goes to the history.
        const dropped = e.events.filter((x) => x.index < upTo).length;
        e.events = e.events.filter((x) => x.index >= upTo);
        const list = episodesOf(group, stream);
        const { request: _r, claim: _c, ...rest } = e.entry;
        list.splice(list.length - 1, 0, {
          entry: {
            ...rest,
            episode: `${e.entry.episode}.${++state.episodes}`,
            state: "skipped",
            next: upTo,
            events: 0,
            resolution: { ...resolved, events: dropped },
          },
          events: [],
        });
        const now = update(e, {
          first: Math.max(e.entry.first, upTo),
          events: e.events.length,
          request: undefined,
          claim: undefined,
        });
        return { ...now, resolution: { ...resolved, events: dropped } };
      }
      const count = e.events.length;
      e.events = [];
      return update(e, {
        state: request.action === "release" ? "released" : "skipped",
        events: 0,
        request: undefined,
        claim: undefined,
        resolution: { ...resolved, events: count },
      });
    },
  };
}

/**
 * Answers of `store` as promises, a throw as a rejection, as from a store behind a network;
 * `around` runs each call (the memory store's fault hook, the file store's save).
 */
export function asyncParkStore(
  store: Sync<ParkStore>,
  around: <T>(method: keyof ParkStore, call: () => T) => T | Promise<T> = (_m, call) => call(),
): ParkStore {
  const later = <K extends keyof ParkStore>(k: K) => (...args: Parameters<ParkStore[K]>) =>
    new Promise((resolve) =>
      resolve(around(k, () => (store[k] as (...a: unknown[]) => unknown)(...args)))
    );
  return {
    park: later("park"),
    list: later("list"),
    get: later("get"),
    events: later("events"),
    request: later("request"),
    claim: later("claim"),
    resolve: later("resolve"),
  } as ParkStore;
}
