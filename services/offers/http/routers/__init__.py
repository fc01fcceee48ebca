"""The HTTP API's routes, one router per concern; ``create_app`` includes them in this order, which is
also the order of the paths in the OpenAPI document.

- ``requests``: ask for offers (``POST /requests``, ``POST /direct``) and read offer sets
- ``sessions``: list, read and update sessions, their components and their history
- ``admin``: local identities
- ``dashboard``: the dashboard's page, its example and ``GET /whoami``
- ``events``: the live event stream (server-sent events) and its tokens; the bus contract
  (``GET /asyncapi.json``) belongs there too
- ``docs``: the Swagger UI page (``GET /docs``), its assets served from a package, not a CDN
"""
