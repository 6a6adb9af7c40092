"""``edgepack manifest``: IoT Edge deployment manifests (``gen`` writes them, ``validate`` checks them)."""

from __future__ import annotations

import click

from packager.cli.manifest_gen import gen
from packager.cli.manifest_validate import validate


@click.group()
def manifest() -> None:
    """IoT Edge deployment manifests."""


manifest.add_command(gen)
manifest.add_command(validate)
