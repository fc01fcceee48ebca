"""Bus plumbing shared by the services: streams, the SQLite inbox/outbox, and the handler runtime."""
