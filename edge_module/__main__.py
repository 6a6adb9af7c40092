"""``python -m edge_module``: serve the deployment described by the environment (and flags) over HTTP."""

import sys

from edge_module.server.main import main

if __name__ == "__main__":
    sys.exit(main())
