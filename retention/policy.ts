/**
 * Retention policies: what a cleanup job may remove from a MessageDB category or from a queue's
 * dead letters, and which policy applies to which name. The one parser of these options: the
 * PostgreSQL job (`retention/postgres.ts`) and the stream configuration (`core/streamconfig.ts`)
 * both check through it.
 *
 * - `maxAgeMs`: events (dead letters) older than this are removed, by the database's clock.
 * - `maxCount`: only the newest `maxCount` events of the category (dead letters of the queue)
 *   are kept. Counted per category, as Svrnty counts per stream: one of its streams is what
 *   MessageDB calls a category.
 * - `keepLast` (categories only, default 1, at least 1): the last `keepLast` events of every
 *   stream are never removed, whatever their age or count. At least one must stay: MessageDB
 *   numbers a stream's next event from its highest remaining position, so a stream emptied by
 *   retention would start again at position 0, its writers' expected versions would be refused,
 *   and readers that know the stream would see old positions again.
 *
 * A name is matched by the rules in order, the first match wins; `*` in a pattern stands for any
 * run of characters and may only end it (`Order`, `Ord*`, `*`), so that a category pattern never
 * matches through a stream id.
 *
 * @module
 */
import { describe, InvalidArgumentError } from "../core/errors.ts";

/**
 * What may be removed. With neither `maxAgeMs` nor `maxCount`, nothing is (keep forever).
 *
 * @example
 * ```ts
 * import type { RetentionPolicy } from "@impel/impel/retention/postgres";
 * // A week, and never more than a million events; each stream keeps its last event.
 * const policy: RetentionPolicy = { maxAgeMs: 7 * 86_400_000, maxCount: 1_000_000 };
 * ```
 *
 * @category Retention
 */
export interface RetentionPolicy {
  /** Remove what is older than this many ms (at least 1). */
  readonly maxAgeMs?: number;
  /** Keep only the newest this many (at least 1). */
  readonly maxCount?: number;
  /** Categories: keep every stream's last this many events (default 1, at least 1). */
  readonly keepLast?: number;
}

/**
 * One rule of a retention job: the categories (`target: "category"`) or queues
 * (`target: "queue"`) whose names match `match` get `policy`; `archive` moves what is removed
 * to the job's archive tables instead of deleting it outright.
 *
 * @example
 * ```ts
 * import type { RetentionRule } from "@impel/impel/retention/postgres";
 * const rules: RetentionRule[] = [
 *   { target: "category", match: "Audit", policy: {} }, // kept forever
 *   { target: "category", match: "*", policy: { maxAgeMs: 30 * 86_400_000 }, archive: true },
 *   { target: "queue", match: "*", policy: { maxAgeMs: 86_400_000 } }, // dead letters: a day
 * ];
 * ```
 *
 * @category Retention
 */
export interface RetentionRule {
  /** What the rule is about: MessageDB categories, or queues (their dead letters). */
  readonly target: "category" | "queue";
  /** A category or queue name, or a pattern ending in `*`. */
  readonly match: string;
  /** What may be removed. */
  readonly policy: RetentionPolicy;
  /** Copy what is removed to the archive table (in the same statement) first (default false). */
  readonly archive?: boolean;
}

/** Largest ms accepted (about 285 000 years: a bigint-safe interval for PostgreSQL). */
const MAX_MS = Number.MAX_SAFE_INTEGER;

/**
 * Checks a retention policy; errors name `field` and what is wrong. `target` says whether
 * `keepLast` applies (categories only).
 */
export function checkRetentionPolicy(
  field: string,
  policy: unknown,
  target: "category" | "queue",
): RetentionPolicy {
  if (policy === null || typeof policy !== "object" || Array.isArray(policy)) {
    throw new InvalidArgumentError(
      field,
      `must be { maxAgeMs?, maxCount?, keepLast? }, got ${describe(policy)}`,
    );
  }
  const p = policy as Record<string, unknown>;
  for (const key of Object.keys(p)) {
    if (!["maxAgeMs", "maxCount", "keepLast"].includes(key)) {
      throw new InvalidArgumentError(
        `${field}.${key}`,
        "is not a retention option (maxAgeMs, maxCount, keepLast)",
      );
    }
  }
  const positive = (key: string) => {
    const v = p[key];
    if (v === undefined) return;
    if (typeof v !== "number" || !Number.isInteger(v) || v < 1 || v > MAX_MS) {
      throw new InvalidArgumentError(
        `${field}.${key}`,
        `must be a positive integer, got ${describe(v)}`,
      );
    }
  };
  positive("maxAgeMs");
  positive("maxCount");
  if (p.keepLast !== undefined) {
    if (target === "queue") {
      throw new InvalidArgumentError(
        `${field}.keepLast`,
        "applies to categories (streams' last events); a queue's dead letters have no streams",
      );
    }
    if (p.keepLast === 0) {
      throw new InvalidArgumentError(
        `${field}.keepLast`,
        "must be at least 1: MessageDB numbers a stream's next event from its last remaining one, " +
          "so an emptied stream would start again at position 0",
      );
    }
    positive("keepLast");
  }
  return p as RetentionPolicy;
}

/**
 * Checks a name pattern: a name, or a prefix followed by one `*` (`*` alone: every name).
 * Category patterns may not contain `-`.
 */
export function checkNamePattern(
  field: string,
  match: unknown,
  target: "category" | "queue",
): string {
  if (typeof match !== "string" || match.length === 0 || match.length > 200) {
    throw new InvalidArgumentError(
      field,
      `must be a name or a prefix ending in * (1 to 200 characters), got ${describe(match)}`,
    );
  }
  if (match.trim() !== match) {
    throw new InvalidArgumentError(field, `has leading or trailing spaces: ${describe(match)}`);
  }
  const star = match.indexOf("*");
  if (star !== -1 && star !== match.length - 1) {
    throw new InvalidArgumentError(
      field,
      `may only end in * (a prefix: "Ord*", or "*" for every name), got ${describe(match)}`,
    );
  }
  if (target === "category" && match.includes("-")) {
    throw new InvalidArgumentError(
      field,
      `is a category pattern and a category never contains '-' (write the category, ` +
        `${describe(match.split("-")[0])}), got ${describe(match)}`,
    );
  }
  return match;
}

/** Whether `name` matches a pattern checked by {@linkcode checkNamePattern}. */
export function matchesName(pattern: string, name: string): boolean {
  return pattern.endsWith("*") ? name.startsWith(pattern.slice(0, -1)) : name === pattern;
}

/** Checks a list of retention rules; errors name `rules[i]` and the field. */
export function checkRetentionRules(rules: unknown, field = "rules"): readonly RetentionRule[] {
  if (!Array.isArray(rules)) {
    throw new InvalidArgumentError(
      field,
      `must be an array of retention rules, got ${describe(rules)}`,
    );
  }
  rules.forEach((rule, i) => {
    const at = `${field}[${i}]`;
    if (rule === null || typeof rule !== "object") {
      throw new InvalidArgumentError(
        at,
        `must be { target, match, policy }, got ${describe(rule)}`,
      );
    }
    if (rule.target !== "category" && rule.target !== "queue") {
      throw new InvalidArgumentError(
        `${at}.target`,
        `must be "category" or "queue", got ${describe(rule.target)}`,
      );
    }
    checkNamePattern(`${at}.match`, rule.match, rule.target);
    checkRetentionPolicy(`${at}.policy`, rule.policy, rule.target);
    if (rule.archive !== undefined && typeof rule.archive !== "boolean") {
      throw new InvalidArgumentError(
        `${at}.archive`,
        `must be a boolean, got ${describe(rule.archive)}`,
      );
    }
    // First match wins: a rule an earlier one of its target covers would never apply, and the
    // earlier one's policy would remove what it was written to keep.
    for (let j = 0; j < i; j++) {
      const earlier = rules[j];
      if (earlier.target !== rule.target) continue;
      if (earlier.match === rule.match || matchesName(earlier.match, rule.match)) {
        throw new InvalidArgumentError(
          `${at}.match`,
          `is never reached: ${field}[${j}] (${JSON.stringify(earlier.match)}) matches every ` +
            `name it does, and the first match wins (put the more specific rule first)`,
        );
      }
    }
  });
  return rules;
}

/** The first rule of `target` matching `name`, if any. */
export function ruleFor(
  rules: readonly RetentionRule[],
  target: "category" | "queue",
  name: string,
): RetentionRule | undefined {
  return rules.find((r) => r.target === target && matchesName(r.match, name));
}
