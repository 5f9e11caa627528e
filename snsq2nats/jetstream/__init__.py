"""JetStream: the only package that talks to NATS for the planner, apply, verify and status.

api.py       one request/reply to the JetStream API, typed errors, create/update/delete
state.py     every list read, paginated: `paginate`, `stream_names`, `read_live`, `server_info`
spec.py      stream and consumer specs as the server spells them, the live state, metadata keys
connect.py   natscli's conventions (URL, context, creds, nkey, user, token, mutual TLS) to a
             connection, with one-line errors that never show a secret
subjects.py  NATS subject matching (`*`, `>`), written once
"""
