"""The scoring module's HTTP server: Azure ML's ``/score`` routes and the V2 Open Inference Protocol.

Built directly on ``asyncio.Protocol`` + ``httptools`` + orjson, on uvloop when it is installed
(plain asyncio otherwise, e.g. on arm/v7). It serves any :class:`~edge_module.runtime.ScoringApp`:

- ``GET /`` liveness (``Healthy``), ``GET /swagger.json?version=2|3``, ``GET|POST /score``;
- ``GET /v2/health/live``, ``GET /v2/health/ready`` (503 until ``load()`` has finished, with the
  error if it failed), ``GET /v2``, ``GET /v2/models/{name}[/versions/{v}][/ready]``,
  ``POST /v2/models/{name}[/versions/{v}]/infer`` with JSON tensors or the binary tensor
  extension, ``POST /v2/repository/index``;
- ``GET /metrics`` (Prometheus text), ``GET /openapi.json`` (this server's own OpenAPI document).

Scoring runs on a dedicated thread per worker with a timeout (504), or inline on the event loop
for scorers that declare ``inline_safe = True`` (fast, bounded calls such as the built-in ONNX
scorer; an optional ``cancel()`` lets the watchdog stop an overrunning call). Several worker
processes share the port with ``SO_REUSEPORT``.

Modules, one job each:

- :mod:`.lifecycle`: :func:`~.lifecycle.serve` (blocking, 1..N workers), :class:`~.lifecycle.Server`
  (one worker) and :class:`~.lifecycle.BackgroundServer` (a server on its own thread);
- :mod:`.connection`: HTTP parsing, limits and in-order replies;
- :mod:`.service`: loading the app, the routes table, auth; :mod:`.routes_aml` and :mod:`.routes_v2`: handlers;
- :mod:`.executor` (scoring threads, inline calls, timeouts), :mod:`.batching` (adaptive batching),
  :mod:`.auth`, :mod:`.metrics`, :mod:`.openapi`, :mod:`.workers` (several processes), :mod:`.main` (CLI).
"""
