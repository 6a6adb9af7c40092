"""The endpoint router: a small HTTP reverse proxy in front of an endpoint's versions.

An endpoint (v1 ``AksEndpoint``, v2 managed online endpoint) holds several versions of a service;
each takes a share of the traffic. The router picks a version per request, weighted by the shares
in its routes file (:mod:`edge_module.router.routes`), health-aware (a version that is not ready
gets nothing; its share goes to the default version), and forwards the request without its hop-by-hop
headers (RFC 9110 7.6.1), with ``Via``. A request names its version with the
``azureml-model-deployment`` header (v2's), whatever the weights.

It ships inside every module image (it needs only the standard library), so Kubernetes can run it
as its own Deployment from any version's image: ``python -m edge_module.router --routes FILE``.
The routes file is re-read when it changes (written atomically by the endpoint manager), and
``GET /-/router`` reports the routes revision in force and per-version readiness, in-flight
requests and counters, so a manager can wait for a change to take effect before stopping a version.
"""
