"""``python -m napari_connecto.testing.dvid_server``: run the DVID test server."""

from __future__ import annotations

import sys

from napari_connecto.testing.dvid_server.cli import main

if __name__ == "__main__":
    sys.exit(main())
