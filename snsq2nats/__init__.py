"""snsq2nats: move an AWS SNS/SQS estate onto NATS JetStream without losing a message."""

__version__ = "0.1.0"
