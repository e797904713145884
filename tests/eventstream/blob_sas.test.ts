// A reader of blob storage with a SAS: its name (in every log line and error, and the source's
// default checkpoint key) is the container URL without the SAS query, so that the token is never
// logged and a reader given a renewed SAS keeps its checkpoints.
import assert from "node:assert/strict";
import {
  ContainerClient,
  ContainerSASPermissions,
  generateBlobSASQueryParameters,
} from "@azure/storage-blob";
import { blobStorage, ReadOnlyBlobStorageError } from "../../eventstream/blob.ts";
import { BLOB_URL, credential, service, uniqueContainer } from "./azurite.ts";

const sasReader = (container: string, hours: number) => {
  const sas = generateBlobSASQueryParameters({
    containerName: container,
    permissions: ContainerSASPermissions.parse("rl"),
    expiresOn: new Date(Date.now() + hours * 3600_000),
  }, credential).toString();
  return blobStorage({
    container: new ContainerClient(`${BLOB_URL}/${container}?${sas}`),
    prefix: "p/",
    readOnly: true,
  });
};

Deno.test("blob storage with a SAS: the name carries no token, a renewed SAS names the same storage", async () => {
  const name = uniqueContainer("sas-name");
  const writer = await blobStorage({ container: service.getContainerClient(name), prefix: "p/" });
  await writer.append(0, ["a"]);
  const first = await sasReader(name, 1);
  const renewed = await sasReader(name, 2);
  assert.equal(first.name, writer.name);
  // The source's checkpoint key (eventstream:<name>): a renewed SAS resumes where the old one was.
  assert.equal(renewed.name, writer.name);
  assert.doesNotMatch(first.name, /sig=|\?/);
  await assert.rejects(first.append(1, ["b"]), (e: unknown) => {
    assert.ok(e instanceof ReadOnlyBlobStorageError);
    assert.doesNotMatch(e.message, /sig=/, "the error does not show the SAS");
    return true;
  });
  for (const s of [writer, first, renewed]) await s.close();
  await service.getContainerClient(name).delete();
});
