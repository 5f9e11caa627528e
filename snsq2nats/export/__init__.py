"""Exports: the plan's desired state for the tools teams already run (natscli, NACK, Terraform).

Each target is a pure function of a `Plan` that returns text files; nothing here talks to a
server. The output is deterministic (stable order, no timestamps) so a regenerated export only
changes in a pull request when the plan did.
"""
