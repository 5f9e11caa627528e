// One application's use of SQS through the JavaScript SDK v3, printed as JSON for comparison:
// the test runs it against an AWS emulator and against the gateway. The SDK checks
// MD5OfMessageBody on send and MD5OfBody on receive itself and throws on a mismatch.
import {
  SQSClient,
  GetQueueUrlCommand,
  SendMessageCommand,
  SendMessageBatchCommand,
  ReceiveMessageCommand,
  DeleteMessageCommand,
  DeleteMessageBatchCommand,
  ChangeMessageVisibilityCommand,
} from "@aws-sdk/client-sqs";

const [endpoint, queueName] = process.argv.slice(2);
const sqs = new SQSClient({
  endpoint,
  region: "us-east-1",
  credentials: {
    accessKeyId: process.env.AWS_ACCESS_KEY_ID,
    secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY,
  },
  maxAttempts: 1,
});

async function failure(command) {
  try {
    await sqs.send(command);
    return null;
  } catch (err) {
    return { name: err.name, code: err.Code ?? null, status: err.$metadata?.httpStatusCode };
  }
}

async function receiveAll(url, count, extra = {}) {
  const got = [];
  while (got.length < count) {
    const out = await sqs.send(
      new ReceiveMessageCommand({ QueueUrl: url, MaxNumberOfMessages: 10, WaitTimeSeconds: 5, ...extra }),
    );
    got.push(...(out.Messages ?? []));
  }
  return got;
}

const { QueueUrl: url } = await sqs.send(new GetQueueUrlCommand({ QueueName: queueName }));
const attributes = {
  colour: { DataType: "String", StringValue: "blue" },
  count: { DataType: "Number", StringValue: "7" },
  raw: { DataType: "Binary", BinaryValue: new Uint8Array([0, 1, 255]) },
};
const sent = await sqs.send(
  new SendMessageCommand({ QueueUrl: url, MessageBody: "from node é", MessageAttributes: attributes }),
);
const batch = await sqs.send(
  new SendMessageBatchCommand({
    QueueUrl: url,
    Entries: [
      { Id: "a", MessageBody: "batch a" },
      { Id: "b", MessageBody: "batch b", MessageAttributes: attributes },
    ],
  }),
);
const first = await receiveAll(url, 3, {
  MessageAttributeNames: ["All"],
  MessageSystemAttributeNames: ["ApproximateReceiveCount"],
});
// Visibility 0: back at once, counted twice.
const again = first.find((m) => m.Body === "batch a");
await sqs.send(
  new ChangeMessageVisibilityCommand({ QueueUrl: url, ReceiptHandle: again.ReceiptHandle, VisibilityTimeout: 0 }),
);
const second = await receiveAll(url, 1, { MessageSystemAttributeNames: ["ApproximateReceiveCount"] });
await sqs.send(new DeleteMessageCommand({ QueueUrl: url, ReceiptHandle: second[0].ReceiptHandle }));
const deleted = await sqs.send(
  new DeleteMessageBatchCommand({
    QueueUrl: url,
    Entries: [
      ...first.filter((m) => m !== again).map((m, i) => ({ Id: `m${i}`, ReceiptHandle: m.ReceiptHandle })),
      { Id: "forged", ReceiptHandle: "forged" },
    ],
  }),
);
const left = await sqs.send(new ReceiveMessageCommand({ QueueUrl: url, WaitTimeSeconds: 1 }));

const view = (m) => ({
  Body: m.Body,
  MD5OfBody: m.MD5OfBody,
  MD5OfMessageAttributes: m.MD5OfMessageAttributes ?? null,
  MessageAttributes: Object.fromEntries(
    Object.entries(m.MessageAttributes ?? {}).map(([k, v]) => [
      k,
      { DataType: v.DataType, StringValue: v.StringValue ?? null, BinaryValue: v.BinaryValue ? Array.from(v.BinaryValue) : null },
    ]),
  ),
  ApproximateReceiveCount: m.Attributes?.ApproximateReceiveCount ?? null,
});
console.log(
  JSON.stringify({
    path: new URL(url).pathname,
    sent: { MD5OfMessageBody: sent.MD5OfMessageBody, MD5OfMessageAttributes: sent.MD5OfMessageAttributes },
    batch: (batch.Successful ?? []).map((s) => [s.Id, s.MD5OfMessageBody, s.MD5OfMessageAttributes ?? null]).sort(),
    received: first.map(view).sort((x, y) => x.Body.localeCompare(y.Body)),
    again: second.map(view),
    deleted: (deleted.Successful ?? []).map((s) => s.Id).sort(),
    notDeleted: (deleted.Failed ?? []).map((f) => [f.Id, f.Code, f.SenderFault]),
    left: left.Messages ?? [],
    unknownQueue: await failure(new GetQueueUrlCommand({ QueueName: "gw-nowhere" })),
    badHandle: await failure(new DeleteMessageCommand({ QueueUrl: url, ReceiptHandle: "forged" })),
  }),
);
