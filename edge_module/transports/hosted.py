"""The transports a :class:`~edge_module.settings.Settings` switches on, run beside the HTTP server.

The server starts them once its ``load()`` has settled, on the app it loaded (so a process scores
one model, whichever way requests arrive); when the load failed they still start and answer every
request with that error (503). With several workers only worker 0 runs them: an MQTT session and an
IoT Edge module connection each belong to one client.

A transport that cannot start (e.g. an unsafe spool folder) or whose thread ends for good calls
``on_failure(name, error)``: the server answers 503 on ``/v2/health/ready`` naming it and, when it
runs as a process (``python -m edge_module``, ``edgepack serve``), stops and exits with
:data:`TRANSPORT_FAILED` (3) so that its supervisor (Docker's restart policy, the IoT Edge agent)
restarts it. Passing problems (the broker away, a bad message, a damaged spool record) are not failures.

The module twin's ``model_version`` switches the versions the app serves by default, in place, for
every transport of the process (HTTP ``/score`` included): for an app declaring
:class:`~edge_module.runtime.VersionSelection` run by one worker; otherwise it is reported as ignored
with the reason (:func:`~edge_module.transports.model_switch.cannot_switch_reason`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from edge_module.runtime import ScoringApp

if TYPE_CHECKING:  # the settings import the transports' settings: no import back at run time
    from edge_module.settings import Settings
    from edge_module.transports.model_switch import SwitchCallback

log = logging.getLogger("edgepack.transports")

TRANSPORT_FAILED = 3  # the exit code of a server whose transport failed for good

#: ``on_failure(name, error)``: the transport ``name`` ("MQTT", "IoT Edge") stopped for good; called from its thread.
FailureCallback = Callable[[str, str], None]


class Transport(Protocol):
    def start(self) -> Any: ...

    def stop(self, timeout: float = 10.0) -> None: ...


def start_transports(
    settings: Settings,
    app: ScoringApp,
    metrics: Any = None,
    load_error: str | None = None,
    on_failure: FailureCallback | None = None,
    on_switch: SwitchCallback | None = None,
) -> list[Transport]:
    """Start the MQTT and IoT Edge transports ``settings`` asks for; ``metrics`` gets their requests,
    ``on_failure`` hears of a transport whose thread ended for good, ``on_switch(served)`` of a switch
    of model versions from the twin. Raises what a start raised."""
    started: list[Transport] = []
    try:
        if settings.mqtt is not None:
            from edge_module.transports.mqtt import MqttTransport

            report = None if on_failure is None else (lambda error: on_failure("MQTT", error))
            mqtt = MqttTransport(app, settings.mqtt, metrics, load=False, load_error=load_error, on_failure=report)
            started.append(mqtt.start())
            log.info("scoring over MQTT: %s, requests on %s", settings.mqtt.url, mqtt.request_filter)
        if settings.iotedge is not None:
            from edge_module.transports.iotedge import IotEdgeTransport
            from edge_module.transports.model_switch import cannot_switch_reason, version_hook

            reason = cannot_switch_reason(app, settings.workers)
            hook = version_hook(app, on_switch) if reason is None else None  # type: ignore[arg-type]
            hub = IotEdgeTransport(
                app,
                settings.iotedge,
                hook,
                load=False,
                load_error=load_error,
                metrics=metrics,
                cannot_switch=reason,
            )
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
