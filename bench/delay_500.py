"""Issue 4 point 1: 500 tasks with `delay` 3 s; all start no earlier than due (see w3_scheduling)."""

from __future__ import annotations

import sys

from bench.w3_scheduling import main

if __name__ == "__main__":
    sys.exit(main(["--delay-only", *sys.argv[1:]]))
