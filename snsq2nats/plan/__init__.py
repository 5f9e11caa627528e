"""Planning: an inventory and mapping rules in, the plan document out. Pure except `pipeline`.

- `rules`: the mapping files (naming templates, defaults, per-resource overrides);
- `names`: valid, deterministic NATS names and subjects, never merging two sources;
- `translate`: the orchestrator, running the per-kind modules in the order facts are known:
  `context` (what they all read), `queues`, `topics`, `subscriptions`, `fidelity` (the verdict
  entry and the verdicts every kind shares), `metadata` (source vs bridge-owned keys);
- `routes`: the bridge routes and bridge-owned JetStream objects for a cutover state;
- `diff`: desired vs live state, the ordered changes; `model`: the plan document;
- `pipeline`: scan or load, read the server, translate, diff (the only impure module).
"""
