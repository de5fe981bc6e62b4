"""Fault injection for the reliability tests: SIGKILL the whole process group at a named point.

``BEYOND_IMAGENET_FAULT=<point>`` arms one point; when the code reaches it, this process and its
whole process group (Snakemake, when it was started in a session of its own, and every job and
DataLoader worker it spawned) die with SIGKILL, as after ``kill -9`` or a node failure. Points:

* ``extract-shard:<k>``: right after checkpoint shard ``k`` of an extraction is written
* ``unpack:mid``: with half of an archive's members extracted
* ``<kind>:before-rename``: a complete temporary file not yet renamed into place, for
  ``kind`` = ``table`` (.csv), ``hdf5`` (.h5), ``manifest`` (.json), ``shard`` (.npz)

Unset (always, outside tests) the hooks cost one comparison with an empty string.
"""

from __future__ import annotations

import os
import signal
import sys

ENV = "BEYOND_IMAGENET_FAULT"
FAULT = os.environ.get(ENV, "")


def at(point: str) -> None:
    """Die (the whole process group, SIGKILL) if ``BEYOND_IMAGENET_FAULT`` names ``point``."""
    if FAULT == point:
        sys.stderr.write(f"{ENV}={point}: killing process group {os.getpgrp()}\n")
        sys.stderr.flush()
        os.killpg(os.getpgrp(), signal.SIGKILL)
