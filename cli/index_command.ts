/**
 * The `index` command: shows a DynamoDB index's partitions, open and closed epochs, or one
 * stream's entry. Internal to the `impel` command line.
 *
 * @module
 */
import { type Command, JSON_OUT } from "./args.ts";
import { DYNAMO, load, withDynamo } from "./backends.ts";
import { EXIT } from "./exit.ts";
import { table } from "./table.ts";

/** `impel index`: inspects the DynamoDB index. */
export const indexCommand: Command = {
  path: ["index"],
  summary:
    "Shows the DynamoDB index: its partitions with their open epochs, closed epochs, or one stream's entry.",
  usage:
    "index [--endpoint URL] --region REGION --index-table NAME [--partition P] [--epochs] [--stream NAME] [--json]",
  options: [
    ...DYNAMO,
    { name: "index-table", kind: "string", arg: "NAME", help: "the index table" },
    { name: "partition", kind: "string", arg: "P", help: "only this partition" },
    { name: "epochs", kind: "boolean", help: "also list each closed epoch's entry count" },
    { name: "stream", kind: "string", arg: "NAME", help: "show how far this stream is indexed" },
    JSON_OUT,
  ],
  async run(args) {
    const indexTable = args.required("index-table");
    return await withDynamo(args, async (client) => {
      const idx = await load(
        "stores/dynamo-indexer.ts",
        () => import("../stores/dynamo-indexer.ts"),
      );
      const sdk = await import("@aws-sdk/client-dynamodb");
      const get = async (p: string, i: number) =>
        (await client.send(
          new sdk.GetItemCommand({
            TableName: indexTable,
            Key: { p: { S: p }, i: { N: String(i) } },
            ConsistentRead: true,
          }),
        ))
          .Item;
      const num = (v: { N?: string } | undefined) => (v?.N === undefined ? undefined : Number(v.N));
      const stream = args.string("stream");
      if (stream !== undefined) {
        const item = await get(`$stream#${stream}`, 0);
        if (!item) {
          args.io.err(`stream ${stream} is not in index ${indexTable}\n`);
          return EXIT.notFound;
        }
        const entry = {
          stream,
          nextVersion: num(item.n),
          partition: item.pt?.S,
          epoch: num(item.ep),
        };
        args.io.out(
          args.flag("json")
            ? JSON.stringify(entry) + "\n"
            : `stream ${stream}: indexed up to version ${entry.nextVersion} in partition ${entry.partition}, epoch ${entry.epoch}\n`,
        );
        return EXIT.ok;
      }
      const all = await idx.listPartitions(client, indexTable);
      const only = args.string("partition");
      const partitions = only === undefined ? all : all.filter((p) => p === only);
      if (partitions.length === 0) {
        args.io.err(
          only === undefined
            ? `index ${indexTable} has no partitions yet\n`
            : `index ${indexTable} has no partition ${only}\n`,
        );
        return EXIT.notFound;
      }
      const indexer = idx.dynamoIndexer(client, { indexTable });
      const rows = [];
      for (const partition of partitions) {
        const tip = await indexer.tip(partition);
        const epochs: Array<{ epoch: number; entries: number | undefined }> = [];
        if (args.flag("epochs")) {
          for (let e = Math.max(0, tip.epoch - 100); e < tip.epoch; e++) {
            epochs.push({
              epoch: e,
              entries: num((await get(idx.epochKey(partition, e), idx.EPOCH_FACTOR))?.c),
            });
          }
        }
        rows.push({
          partition,
          epoch: tip.epoch,
          entries: tip.offset,
          bytes: tip.bytes,
          streams: tip.streams,
          closedEpochs: epochs,
        });
      }
      if (args.flag("json")) {
        args.io.out(JSON.stringify({ indexTable, partitions: rows }) + "\n");
        return EXIT.ok;
      }
      args.io.out(`index ${indexTable}: ${all.length} partition${all.length === 1 ? "" : "s"}\n`);
      args.io.out(table([
        ["PARTITION", "OPEN EPOCH", "ENTRIES", "BYTES", "STREAMS"],
        ...rows.map((
          r,
        ) => [r.partition, String(r.epoch), String(r.entries), String(r.bytes), String(r.streams)]),
      ]));
      for (const r of rows) {
        for (const e of r.closedEpochs) {
          args.io.out(
            `  partition ${r.partition} epoch ${e.epoch}: ${e.entries ?? "?"} entries (closed)\n`,
          );
        }
      }
      return EXIT.ok;
    });
  },
};
