"""The store: connections, the named SQL of ``schema/sql/``, the outbox relay, the read model."""
