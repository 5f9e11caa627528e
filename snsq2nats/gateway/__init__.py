"""The SQS and SNS APIs served from JetStream: an unchanged application moves by changing its
endpoint URL.

The gateway serves the applied estate (the plan `apply` recorded in NATS) over the AWS wire
protocols, verifies SigV4 on every request, and acts on NATS as the identity `auth` generated
for the request's access key, so NATS enforces the same least privilege as for native clients.
"""
