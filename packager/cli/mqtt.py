"""``edgepack mqtt score``: send one scoring request over MQTT and print the answer."""

from __future__ import annotations

import click

from packager.cli.output import print_json
from packager.cli.serve import load_data
from packager.errors import EdgepackError, InvalidInputError


@click.group()
def mqtt() -> None:
    """Talk to a model served over MQTT (edgepack serve --mqtt)."""


@mqtt.command("score")
@click.option(
    "--broker",
    default="mqtt://127.0.0.1:1883",
    show_default=True,
    envvar="EDGEPACK_MQTT_URL",
    help="mqtt://HOST:PORT or mqtts://HOST:PORT [EDGEPACK_MQTT_URL].",
)
@click.option(
    "--topic",
    metavar="TOPIC",
    help="Request topic [edgepack/<service>/score/request]; MQTT 3.1.1 adds /<id>.",
)
@click.option("--service", default="default", show_default=True, help="<service> in the default topic.")
@click.option("--data", "-d", required=True, metavar="FILE|JSON", help="Request body: a file, or inline JSON.")
@click.option("--protocol", type=click.Choice(["5", "3.1.1"]), default="5", show_default=True)
@click.option("--username", envvar="EDGEPACK_MQTT_USERNAME", help="[EDGEPACK_MQTT_USERNAME]")
@click.option("--password", envvar="EDGEPACK_MQTT_PASSWORD", help="[EDGEPACK_MQTT_PASSWORD; prefer it]")
@click.option("--ca", "ca_file", type=click.Path(exists=True, dir_okay=False), help="CA certificates (mqtts).")
@click.option("--cert", "cert_file", type=click.Path(exists=True, dir_okay=False), help="Client certificate (PEM).")
@click.option("--key", "key_file", type=click.Path(exists=True, dir_okay=False), help="Its key (PEM).")
@click.option("--id", "request_id", help="Request id (correlation data / topic level) [random].")
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Seconds to wait for the answer.")
def score(
    broker: str,
    topic: str | None,
    service: str,
    data: str,
    protocol: str,
    username: str | None,
    password: str | None,
    ca_file: str | None,
    cert_file: str | None,
    key_file: str | None,
    request_id: str | None,
    timeout: float,
) -> None:
    """Publish one scoring request (QoS 1) and print the answer's JSON.

    MQTT 5 gets the answer on a private response topic with correlation data; 3.1.1 reads it from
    the topics the server derives (/response/<id>, /error/<id>). An error reply exits 1 with its
    status and message.
    """
    try:
        from edge_module.runtime import ScoringError
        from edge_module.settings import SettingsError
        from edge_module.transports.mqtt import mqtt_request
    except ImportError as exc:
        raise EdgepackError(f"the MQTT client needs paho-mqtt: pip install 'edgepack[edge]' ({exc})") from None
    raw, _ = load_data(data)
    try:
        answer = mqtt_request(
            broker,
            topic or f"edgepack/{service}/score/request",
            raw,
            timeout,
            protocol=5 if protocol == "5" else 311,
            username=username,
            password=password,
            ca_file=ca_file,
            cert_file=cert_file,
            key_file=key_file,
            request_id=request_id,
        )
    except (SettingsError, ValueError) as exc:
        raise InvalidInputError(str(exc)) from None
    except ScoringError as exc:
        raise EdgepackError(f"the service answered {exc.status}: {exc}") from None
    except TimeoutError as exc:
        raise EdgepackError(f"{exc}: is edgepack serve --mqtt running for this topic?") from None
    except OSError as exc:  # refused by the broker (a plain ConnectionError), or not reachable at all
        raise EdgepackError(str(exc) if type(exc) is ConnectionError else f"cannot reach {broker}: {exc}") from None
    print_json(answer)
