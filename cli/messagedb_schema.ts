/**
 * Finds MessageDB's installer files (the `database` folder of the `@eventide/message-db` npm
 * package) for `impel init messagedb`: a folder given with `--sql-dir`, else an installed copy
 * under `node_modules`, else the pinned release fetched from the npm registry and checked against
 * the registry's integrity hash. Internal to the `impel` command line.
 *
 * @module
 */
import { readFile, stat } from "node:fs/promises";
import { resolve } from "node:path";
import { cwd } from "node:process";
import { pathToFileURL } from "node:url";
import { errorText } from "../core/failure.ts";
import { CliError, EXIT } from "./exit.ts";

/** The release fetched when no copy is installed; the one impel is tested with. */
export const MESSAGEDB_RELEASE = "1.3.1";
const REGISTRY = "https://registry.npmjs.org/@eventide/message-db";

/** Reads a file by its path relative to the package's `database` folder. */
export type SchemaFiles = (path: string) => Promise<string>;

/** Where the files came from, for the command's output, and how to read them. */
export interface SchemaSource {
  /** A folder, or the tarball's address. */
  readonly from: string;
  /** Reads one file. */
  readonly read: SchemaFiles;
}

/** The installed copies looked for, in order: the working directory's, then impel's neighbours. */
function candidates(): URL[] {
  return [
    new URL("node_modules/@eventide/message-db/database/", here()),
    new URL("../node_modules/@eventide/message-db/database/", import.meta.url),
    new URL("../../../@eventide/message-db/database/", import.meta.url), // impel in node_modules
  ];
}

// Files through node:fs, which Deno and Bun both provide (there is no web-standard file API).
const here = () => pathToFileURL(`${cwd()}/`);
const isFile = (url: URL) => stat(url).then((s) => s.isFile(), () => false);

function folder(dir: URL): SchemaSource {
  return {
    from: decodeURIComponent(dir.pathname),
    read: (path) => readFile(new URL(path, dir), "utf8"),
  };
}

/**
 * The installer files: from `dir` when given (exit 3 if it holds no `install.sh`), else an
 * installed copy, else downloaded unless `download` is false (exit 3 then).
 */
export async function schemaSource(
  dir: string | undefined,
  download: boolean,
): Promise<SchemaSource> {
  if (dir !== undefined) {
    const url = pathToFileURL(`${resolve(dir)}/`);
    if (!(await isFile(new URL("install.sh", url)))) {
      throw new CliError(
        EXIT.unavailable,
        "MessageDbSchemaMissing",
        `--sql-dir ${dir} holds no install.sh (give the database folder of @eventide/message-db)`,
      );
    }
    return folder(url);
  }
  for (const url of candidates()) if (await isFile(new URL("install.sh", url))) return folder(url);
  if (!download) {
    throw new CliError(
      EXIT.unavailable,
      "MessageDbSchemaMissing",
      "no installed @eventide/message-db found and --no-download given; give --sql-dir",
    );
  }
  return await fetchRelease();
}

/** Downloads the pinned release's tarball and verifies it against the registry's integrity. */
export async function fetchRelease(): Promise<SchemaSource> {
  let tarball: string, integrity: string, bytes: Uint8Array<ArrayBuffer>;
  try {
    type Meta = { dist?: { tarball?: unknown; integrity?: unknown } } | null;
    const meta = await fetchOk(`${REGISTRY}/${MESSAGEDB_RELEASE}`).then((r) =>
      r.json() as Promise<Meta>
    );
    tarball = String(meta?.dist?.tarball);
    integrity = String(meta?.dist?.integrity);
    bytes = new Uint8Array(await (await fetchOk(tarball)).arrayBuffer());
  } catch (error) {
    throw new CliError(
      EXIT.unavailable,
      "MessageDbSchemaMissing",
      `no installed @eventide/message-db found and the npm registry could not be read ` +
        `(${errorText(error)}); install the package or give --sql-dir`,
      { cause: error },
    );
  }
  return await fromTarball(bytes, integrity, tarball);
}

/** The files of a release's tarball, once its bytes match `integrity` (`sha512-<base64>`). */
export async function fromTarball(
  bytes: Uint8Array<ArrayBuffer>,
  integrity: string,
  from: string,
): Promise<SchemaSource> {
  const [algorithm, expected] = integrity.split("-", 2);
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-512", bytes));
  if (algorithm !== "sha512" || btoa(String.fromCharCode(...digest)) !== expected) {
    throw new CliError(
      EXIT.failed,
      "MessageDbSchemaIntegrity",
      `${from} does not match the registry's integrity ${integrity}; not installing it`,
    );
  }
  const files = await untar(bytes);
  return {
    from,
    read: (path) => {
      const text = files.get(`package/database/${path}`);
      return text === undefined
        ? Promise.reject(new Error(`${path} is not in ${from}`))
        : Promise.resolve(text);
    },
  };
}

async function fetchOk(url: string): Promise<Response> {
  const response = await fetch(url, { signal: AbortSignal.timeout(30_000) });
  if (!response.ok) {
    await response.body?.cancel();
    throw new Error(`GET ${url}: ${response.status} ${response.statusText}`);
  }
  return response;
}

/** The regular files of a gzipped tar archive (ustar, as npm packs), by path. */
async function untar(gzipped: Uint8Array<ArrayBuffer>): Promise<Map<string, string>> {
  const stream = new Blob([gzipped]).stream().pipeThrough(new DecompressionStream("gzip"));
  const tar = new Uint8Array(await new Response(stream).arrayBuffer());
  const text = new TextDecoder();
  const field = (at: number, length: number) =>
    text.decode(tar.subarray(at, at + length)).replace(/\0.*$/s, "");
  const files = new Map<string, string>();
  for (let at = 0; at + 512 <= tar.length;) {
    const name = field(at, 100);
    if (name === "") break; // the two zero blocks that end the archive
    const size = parseInt(field(at + 124, 12).trim() || "0", 8);
    const type = field(at + 156, 1);
    const prefix = field(at + 345, 155);
    const body = at + 512;
    if (type === "0" || type === "") {
      files.set(prefix ? `${prefix}/${name}` : name, text.decode(tar.subarray(body, body + size)));
    }
    at = body + Math.ceil(size / 512) * 512;
  }
  return files;
}
