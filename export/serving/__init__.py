"""Serving tooling: a TF Serving `models.config` example, the docker command (README.md), a client."""
