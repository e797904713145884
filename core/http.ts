/**
 * Small pieces the HTTP handlers (management and delivery) share: a request body read that
 * counts bytes and stops at a limit, and a comparison of secrets that does not leak where they
 * differ. Each handler keeps its own error type: the body read refuses through a callback.
 *
 * @module
 */

/** Refuses a request: throws the handler's own error with an HTTP status and a code. */
export type Refuse = (status: number, code: string, message: string) => never;

/**
 * Reads a request body as UTF-8 text of at most `maxBytes` bytes: a declared Content-Length
 * past it is refused before reading, and an undeclared (chunked) body is refused as soon as
 * what arrived passes it, its stream cancelled, so a large body is never held whole. Refusals:
 * 413 `tooLarge`, 400 `notText` (not valid UTF-8).
 *
 * @example
 * ```ts
 * import { readBodyText } from "./http.ts";
 * const refuse = (status: number, code: string, message: string): never => {
 *   throw new Error(`${status} ${code}: ${message}`);
 * };
 * const request = new Request("http://x/", { method: "POST", body: '{"a":1}' });
 * console.log(await readBodyText(request, 1024, refuse, { tooLarge: "BodyTooLarge", notText: "BadBody" }));
 * ```
 */
export async function readBodyText(
  request: Request,
  maxBytes: number,
  refuse: Refuse,
  codes: { readonly tooLarge: string; readonly notText: string },
): Promise<string> {
  const tooLarge = () => refuse(413, codes.tooLarge, `the body must be at most ${maxBytes} bytes`);
  const declared = request.headers.get("content-length");
  if (declared !== null && Number(declared) > maxBytes) tooLarge();
  if (!request.body) return "";
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.length;
    if (size > maxBytes) {
      await reader.cancel().catch(() => {});
      tooLarge();
    }
    chunks.push(value);
  }
  const all = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    all.set(c, at);
    at += c.length;
  }
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(all);
  } catch {
    return refuse(400, codes.notText, "the body is not valid UTF-8");
  }
}

/**
 * Compares a presented secret with the expected one without leaking where they differ: both
 * are hashed (so the lengths do not show either) and the hashes compared in full.
 *
 * @example
 * ```ts
 * import { sameSecret } from "./http.ts";
 * console.log(await sameSecret("a-token-0123456789", "a-token-0123456789")); // true
 * ```
 */
export async function sameSecret(presented: string, expected: string): Promise<boolean> {
  const enc = new TextEncoder();
  const [a, b] = await Promise.all([
    crypto.subtle.digest("SHA-256", enc.encode(presented)),
    crypto.subtle.digest("SHA-256", enc.encode(expected)),
  ]);
  const x = new Uint8Array(a), y = new Uint8Array(b);
  let diff = 0;
  for (let i = 0; i < x.length; i++) diff |= x[i] ^ y[i];
  return diff === 0;
}
