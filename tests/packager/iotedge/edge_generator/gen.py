"""A tiny IoT Edge module for the local runtime's tests: sends digits samples when its twin says so.

Runs in a module container (the scoring image's Python, entrypoint replaced) and connects exactly as a
module does under IoT Edge: ``IoTHubModuleClient.create_from_edge_environment()``.
Desired properties: ``round`` (each new value >= 1 sends every sample in samples.json once, to output
``samples``: body ``{"data": [[64 floats]]}``, message id ``r<round>-s<i>``, properties ``round``,
``sample``), ``interval`` (seconds between messages). Messages on input ``high`` are counted per
round and reported as ``high: {"<round>": [sample, ...]}``.
"""

import json
import queue
import threading
import time
from pathlib import Path

from azure.iot.device import IoTHubModuleClient, Message

samples = json.loads((Path(__file__).parent / "samples.json").read_text())
client = IoTHubModuleClient.create_from_edge_environment()
rounds: queue.Queue = queue.Queue()
state = {"round": 0, "interval": 0.0}
high: dict[str, list[int]] = {}
lock = threading.Lock()


def on_desired(patch: dict) -> None:
    if "interval" in patch:
        state["interval"] = float(patch["interval"] or 0)
    if isinstance(patch.get("round"), int) and patch["round"] > state["round"]:
        state["round"] = patch["round"]
        rounds.put(patch["round"])


def on_message(msg: Message) -> None:
    if msg.input_name == "high":
        with lock:
            high.setdefault(msg.custom_properties.get("round", "?"), []).append(int(msg.custom_properties["sample"]))
            client.patch_twin_reported_properties({"high": {k: sorted(v) for k, v in high.items()}})


client.on_twin_desired_properties_patch_received = on_desired
client.on_message_received = on_message
client.connect()
on_desired(client.get_twin()["desired"])
client.patch_twin_reported_properties({"status": "ready", "samples": len(samples)})
while True:
    r = rounds.get()
    for i, row in enumerate(samples):
        msg = Message(json.dumps({"data": [row]}), message_id=f"r{r}-s{i}", content_type="application/json")
        msg.content_encoding = "utf-8"
        msg.custom_properties["round"] = str(r)
        msg.custom_properties["sample"] = str(i)
        client.send_message_to_output(msg, "samples")
        if state["interval"]:
            time.sleep(state["interval"])
    client.patch_twin_reported_properties({"sent_round": r})
