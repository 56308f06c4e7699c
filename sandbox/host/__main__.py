"""``python -m sandbox.host``: runs the development host (see :func:`sandbox.host.devhost.main`)."""

import sys

from sandbox.host.devhost import main

if __name__ == "__main__":
    sys.exit(main())
