"""The demo: local services (moto, nats-server), the seeded estate and the story."""
