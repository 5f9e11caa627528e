import os

pytest_plugins = ["tests.fixtures.nats", "tests.fixtures.aws", "tests.fixtures.bridge"]

# Deterministic human output: no colour, a fixed width, no terminal detection surprises.
os.environ["NO_COLOR"] = "1"
os.environ["COLUMNS"] = "100"
os.environ.pop("NATS_CONTEXT", None)
