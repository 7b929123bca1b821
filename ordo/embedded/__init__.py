"""The servers `ordo up` embeds (nats-server, PostgreSQL, a local cluster), their processes and NATS users."""
