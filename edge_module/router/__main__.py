"""``python -m edge_module.router --routes FILE --port P [--host H]``: run an endpoint's router."""

from __future__ import annotations

import sys

from edge_module.router.router import run
from edge_module.router.settings import settings_from_args
from edge_module.settings import SettingsError


def main(argv: list[str] | None = None) -> int:
    try:
        settings = settings_from_args(argv)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run(settings)


if __name__ == "__main__":
    sys.exit(main())
