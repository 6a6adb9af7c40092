"""The transports a :class:`~edge_module.settings.Settings` switches on, run beside the HTTP server.

The server starts them once its ``load()`` has settled, on the app it loaded (so a process scores
one model, whichever way requests arrive); when the load failed they still start and answer every
request with that error (503). With several workers only worker 0 runs them: an MQTT session and an
IoT Edge module connection each belong to one client.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

from edge_module.runtime import ScoringApp

if TYPE_CHECKING:  # the settings import the transports' settings: no import back at run time
    from edge_module.settings import Settings

log = logging.getLogger("edgepack.transports")


class Transport(Protocol):
    def start(self) -> Any: ...

    def stop(self, timeout: float = 10.0) -> None: ...


def start_transports(
    settings: Settings, app: ScoringApp, metrics: Any = None, load_error: str | None = None
) -> list[Transport]:
    """Start the MQTT and IoT Edge transports ``settings`` asks for; ``metrics`` gets their requests."""
    started: list[Transport] = []
    try:
        if settings.mqtt is not None:
            from edge_module.transports.mqtt import MqttTransport

            mqtt = MqttTransport(app, settings.mqtt, metrics, load=False, load_error=load_error)
            started.append(mqtt.start())
            log.info("scoring over MQTT: %s, requests on %s", settings.mqtt.url, mqtt.request_filter)
        if settings.iotedge is not None:
            from edge_module.transports.iotedge import IotEdgeTransport

            hub = IotEdgeTransport(app, settings.iotedge, load=False, load_error=load_error, metrics=metrics)
            started.append(hub.start())
            log.info(
                "scoring on the IoT Edge hub: input %r -> output %r",
                settings.iotedge.input_name,
                settings.iotedge.output_name,
            )
    except BaseException:
        stop_transports(started, 2.0)
        raise
    return started


def stop_transports(transports: list[Transport], timeout: float = 10.0) -> None:
    """Stop each (draining what it holds, up to ``timeout`` s each); errors are logged, not raised."""
    for transport in transports:
        try:
            transport.stop(timeout)
        except Exception:
            log.exception("stopping %s failed", type(transport).__name__)
