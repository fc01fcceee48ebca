"""The HTTP layer shared by the platform clients and Rucio: retries, tokens, clients, spans.

`retry` is the one retry loop (stamina; back-off, jitter, a time budget, Retry-After), `rules` says
per API which answers are retried, `tokens` is the one token source, and `client.HttpApi` builds the
pooled httpx client and runs every request through them. `create` avoids duplicates when a create
may have taken effect although its answer was lost.
"""
