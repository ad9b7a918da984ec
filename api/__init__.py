"""The NOC API: REST under ``/api``, the event WebSocket, the NOC page, ``/metrics``.

Build it with :func:`api.app.create_app`; serve it with ``noc api`` (:func:`api.server.serve`)
or, from a supervisor or a test, :class:`api.server.ApiServer` (a background thread).
"""
