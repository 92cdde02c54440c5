"""``python -m benchmarks [--quick] [--only P2,P3] [--pin auto|on|off]``."""

from __future__ import annotations

import sys

from benchmarks.runner import main

try:
    sys.exit(main())
except KeyboardInterrupt:  # the servers were stopped on the way out
    print("\nbenchmarks: interrupted", file=sys.stderr)
    sys.exit(130)
