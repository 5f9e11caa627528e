"""The live-cutover bridge: relays between SQS/SNS and JetStream without losing a message.

- `session`: one bridge run (clients, a NATS connection that never gives up, the routes).
- `runtime`: every route supervised until stopped, then drained; `RUNNERS` by route kind.
- One runner per route kind: `sqs_to_nats`, `sns_to_nats` (through a bridge-owned queue),
  `nats_to_sqs`, `nats_to_sns`, `dlq` (the DLQ mover), `filter_router`.
- Shared machinery: `aws_to_nats` (long polls, pipelined publishes, delete after the PubAck),
  `nats_to_aws` (batch calls into AWS, ack after AWS accepted), `pull` (the pull-consumer
  toolkit of every NATS-side runner), `replies` (many requests on one inbox), `codec`
  (attributes ↔ headers).
- `context` (what every runner gets: timings, the stop signal, metrics, the one backoff),
  `metrics` (Prometheus), `wire` (the only use of nats-py's private internals).
"""
