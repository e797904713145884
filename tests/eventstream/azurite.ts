// Azurite for the blob tests: the well-known development account on 127.0.0.1:10000
// (tools/azurite.sh; IMPEL_AZURITE_BLOB_URL to use another), a fresh container per caller.
import { BlobServiceClient, StorageSharedKeyCredential } from "@azure/storage-blob";

export const ACCOUNT = "devstoreaccount1";
export const KEY =
  "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
export const BLOB_URL = Deno.env.get("IMPEL_AZURITE_BLOB_URL") ??
  `http://127.0.0.1:10000/${ACCOUNT}`;
export const credential = new StorageSharedKeyCredential(ACCOUNT, KEY);
export const service = new BlobServiceClient(BLOB_URL, credential);

/** A container name of its own for each test, so runs and tests never share a stream. */
export function uniqueContainer(what: string): string {
  return `${what}-${crypto.randomUUID().slice(0, 8)}`.toLowerCase();
}
