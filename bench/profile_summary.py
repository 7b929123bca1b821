"""Summarise py-spy collapsed stacks (`py-spy record --format raw`) as text: the functions with the
most samples on CPU, by self time and by inclusive time (a function counted once per stack).

    .venv/bin/python -m bench.profile_summary /tmp/prof/worker-1.txt [--top 25]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_LINE = re.compile(r"^(.*) (\d+)$")
# Leaf functions that mean "blocked, not on CPU" (epoll wait, thread condition waits).
_WAITING = {"EpollSelector.select", "Condition.wait", "Event.wait", "select", "poll"}
_FRAME = re.compile(r"^(.*?) \((.*?)(?::\d+)?\)$")


def _name(frame: str) -> str:
    """`func (path/to/module.py:123)` -> `func (module.py)`; line numbers merged."""
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    func, path = m.groups()
    parts = Path(path).parts
    short = "/".join(parts[-2:]) if len(parts) > 1 else path
    return f"{func} ({short})"


def summarise(path: Path, top: int = 25) -> str:
    self_counts: Counter[str] = Counter()
    incl_counts: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        stack, count = m.group(1), int(m.group(2))
        frames = [_name(f) for f in stack.split(";") if f]
        frames = [f for f in frames if not f.startswith("process ") and not f.startswith("thread ")]
        if not frames or frames[-1].split(" ")[0] in _WAITING:
            continue  # py-spy's idle detection misses some waits; they are not CPU
        total += count
        self_counts[frames[-1]] += count
        for name in set(frames):
            incl_counts[name] += count
    out = [
        f"{path.name}: {total} samples on CPU (py-spy at 200 Hz; idle and epoll/condition waits excluded)",
        "",
        "self:",
    ]
    out += [f"  {c / total:6.1%}  {name}" for name, c in self_counts.most_common(top)]
    out += ["", "inclusive:"]
    out += [f"  {c / total:6.1%}  {name}" for name, c in incl_counts.most_common(top)]
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    for f in args.files:
        print(summarise(f, args.top))


if __name__ == "__main__":
    main()
