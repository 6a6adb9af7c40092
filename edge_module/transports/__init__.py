"""Transports beside HTTP: plain MQTT (:mod:`.mqtt`) and the IoT Edge hub (:mod:`.iotedge`).

Names are imported on first use, so importing one transport never needs the other's packages.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "MqttSettings": "settings",
    "MqttTransport": "mqtt",
    "mqtt_request": "mqtt",
    "Spool": "spool",
    "SpoolFull": "spool",
    "IotEdgeSettings": "settings",
    "IotEdgeTransport": "iotedge",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
