"""The platform plugin boundary, for the launcher, the offers service and plugins of any distribution.

- `port`: the `Platform` Protocol a plugin implements (and the optional `StartsOnce`), and the types
  it speaks (`LaunchSpec`, `RunStatus`, `RunState`, `PlatformError`, `PlatformBase`).
- `registry`: finds installed plugins (entry-point group `execution_broker.platforms`), builds them,
  and reads what each one declares it can run without building it.
- `contract`: the test suite every plugin must pass; it needs pytest, so it is imported only by tests.
"""
