"""Profiling (v1's ``Model.profile``): serve a model locally under load at several CPU/memory settings,
measure throughput, latency percentiles, success and peak memory, and recommend ``cpu``/``memoryInGB``.

Modules: :mod:`~.limits` (how a setting is applied), :mod:`~.load` (the load generator), :mod:`~.run` (one
setting), :mod:`~.recommend`, :mod:`~.report` (``ModelProfile``, JSON schema, table), :mod:`~.inputs`
(request bodies), :mod:`~.profiler` (the whole run).
"""

from cloud_targets.profiling.profiler import profile
from cloud_targets.profiling.report import SCHEMA, ModelProfile

__all__ = ["SCHEMA", "ModelProfile", "profile"]
