"""Who a bus client is: owners namespaced by where their identity comes from, the NATS permissions
of an owner, and the config-mode auth callout responder that proves one to nats-server.

The pure parts (`owners`, `permissions`, `jwt` apart from signing) import no I/O; `callout` is the
imperative shell, started by whichever process runs it (it imports no service).
"""
