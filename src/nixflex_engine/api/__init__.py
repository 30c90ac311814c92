"""The public HTTP API (``/v1``): routes, the error envelope, auth, limits, OpenAPI.

Route modules (``keys``, ``agents``, ``phone_numbers``, ``calls``, ``account``, ``system``)
each expose ``routes()``; ``server.create_app`` mounts them. Shared request handling lives in
``routing`` (auth, rate limits, idempotency), ``errors`` (the envelope) and ``middleware``
(request ids, body cap, catch-all 500).
"""
