/**
 * The version of this impel package, as published (the `version` of `deno.json` and
 * `package.json`; a test keeps the three equal).
 *
 * @example
 * ```ts
 * import { VERSION } from "@impel/impel";
 * console.log(VERSION); // e.g. "0.1.0"
 * ```
 *
 * @module
 */

/**
 * The package's version.
 *
 * @example
 * ```ts
 * import { VERSION } from "@impel/impel";
 * console.log(/^\d+\.\d+\.\d+/.test(VERSION)); // true
 * ```
 */
export const VERSION: string = "0.1.0";
