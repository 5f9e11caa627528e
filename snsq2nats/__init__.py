"""snsq2nats: move an AWS SNS/SQS estate onto NATS JetStream without losing a message."""

from importlib.metadata import version

# pyproject.toml is the one place the version is written.
__version__ = version("snsq2nats")
