"""NATS identities and permissions generated from the plan: least privilege by construction."""
