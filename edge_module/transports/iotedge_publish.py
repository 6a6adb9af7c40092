"""Module inputs and outputs straight on the SDK's MQTT connection, several outputs in flight.

``send_message_to_output`` runs each message through the SDK's pipeline (a dozen stages, an
operation, a future and a callback thread) and blocks until edgeHub's PUBACK: in a scorer that
is most of its CPU per message. :class:`DirectOutputs` publishes on the SDK's own paho client
(same connection, same session) with exactly the SDK's topic and property encoding
(``mqtt_topic_iothub``), QoS 1, up to ``window`` unacknowledged. A message counts as sent at its
PUBACK; until then paho keeps it and sends it again after a reconnect (the SDK keeps
``clean_session=False``), so results stay at-least-once. The SDK keeps connecting,
authenticating, the subscriptions and the twin. Inputs (:meth:`DirectOutputs.receive_inputs`) come
from paho's callback for the module's input topics, built into ``Message`` objects as the SDK
builds them, without its receive pipeline and handler threads. Only for azure-iot-device 2.x's layout:
:meth:`DirectOutputs.attach` returns None otherwise (the caller sends through the SDK).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("edgepack.iotedge")


def sdk_transport(client: Any) -> Any:
    """The SDK's ``MQTTTransport`` (it owns the paho client), or None when the layout differs."""
    stage = getattr(getattr(client, "_mqtt_pipeline", None), "_pipeline", None)
    while stage is not None and getattr(stage, "transport", None) is None:
        stage = getattr(stage, "next", None)
    return getattr(stage, "transport", None)


class DirectOutputs:
    """Publishes output messages on the SDK client's paho connection; ``on_acked(n)`` at each PUBACK."""

    def __init__(self, paho: Any, device_id: str, module_id: str, window: int, on_acked: Callable[[], None]):
        from azure.iot.device.iothub.pipeline import mqtt_topic_iothub

        self._paho = paho
        self._topics = mqtt_topic_iothub
        self._base = mqtt_topic_iothub.get_telemetry_topic_for_publish(device_id, module_id)
        self._prefix = self._base.encode("utf-8")
        self._inputs = mqtt_topic_iothub.get_input_topic_for_subscribe(device_id, module_id)
        self._slots = threading.Semaphore(window)
        self._on_acked = on_acked
        self._unacked = 0
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        sdk_on_publish = paho.on_publish

        def on_publish(client: Any, userdata: Any, mid: int) -> None:
            # paho calls this holding its out-message lock, before it drops the message: the topic
            # tells ours (module events; the SDK itself publishes none once this is in use) from the SDK's
            message = client._out_messages.get(mid)
            if message is not None and bytes(message._topic).startswith(self._prefix):
                self._acked()
            elif sdk_on_publish is not None:
                sdk_on_publish(client, userdata, mid)

        paho.on_publish = on_publish

    def receive_inputs(self, handler: Callable[[Any], None]) -> None:
        """Input messages straight from paho to ``handler`` (an SDK ``Message`` built as the SDK builds it:
        properties from the topic, ``input_name``), skipping the SDK's receive pipeline and handler threads.
        The SDK still subscribes; paho acknowledges after ``handler`` returns, as before."""
        topics = self._topics

        def on_input(client: Any, userdata: Any, mqtt_message: Any) -> None:
            from azure.iot.device import Message

            topic = mqtt_message.topic
            message = Message(mqtt_message.payload)
            topics.extract_message_properties_from_topic(topic, message)
            message.input_name = topics.get_input_name_from_topic(topic)
            handler(message)

        self._paho.message_callback_add(self._inputs, on_input)

    @classmethod
    def attach(cls, client: Any, window: int, on_acked: Callable[[], None]) -> DirectOutputs | None:
        transport = sdk_transport(client)
        paho = getattr(transport, "_mqtt_client", None)
        config = getattr(getattr(client, "_mqtt_pipeline", None), "pipeline_configuration", None)
        device_id, module_id = getattr(config, "device_id", None), getattr(config, "module_id", None)
        if paho is None or not hasattr(paho, "_out_messages") or not device_id or not module_id:
            log.debug("cannot reach the SDK's MQTT client: outputs go through send_message_to_output")
            return None
        return cls(paho, device_id, module_id, window, on_acked)

    def _acked(self) -> None:
        with self._lock:
            self._unacked -= 1
            if self._unacked == 0:
                self._idle.notify_all()
        self._slots.release()
        self._on_acked()

    def publish(self, message: Any, output: str, abandon: threading.Event) -> bool:
        """Queue ``message`` on ``output`` (waits while ``window`` are unacknowledged); False: abandoned.
        Raises RuntimeError when paho refused it (nothing queued)."""
        while not self._slots.acquire(timeout=0.5):
            if abandon.is_set():
                return False
        message.output_name = output
        topic = self._topics.encode_message_properties_in_topic(message, self._base)
        with self._lock:
            self._unacked += 1
        try:
            info = self._paho.publish(topic, message.data, qos=1)
            rc = info.rc
        except Exception:
            rc = -1
        # not connected (MQTT_ERR_NO_CONN, 4): paho keeps the message and sends it after the reconnect
        if rc not in (0, 4):
            with self._lock:
                self._unacked -= 1
                if self._unacked == 0:
                    self._idle.notify_all()
            self._slots.release()
            raise RuntimeError(f"paho publish failed (rc {rc})")
        return True

    def unacked(self) -> int:
        with self._lock:
            return self._unacked

    def wait_acked(self, timeout: float) -> bool:
        """Wait until every published message is acknowledged; False when ``timeout`` ran out."""
        with self._lock:
            return self._idle.wait_for(lambda: self._unacked == 0, timeout)
