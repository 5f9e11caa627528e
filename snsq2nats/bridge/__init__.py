"""The live-cutover bridge: relays between SQS/SNS and JetStream without losing a message."""
