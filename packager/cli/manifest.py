"""``edgepack manifest``: IoT Edge deployment manifests (minimal group; the manifest branch adds ``gen``)."""

from __future__ import annotations

import click

from packager.cli.manifest_validate import validate


@click.group()
def manifest() -> None:
    """IoT Edge deployment manifests."""


manifest.add_command(validate)
