"""Summarize py-spy raw (folded) profiles: the top functions by self time, overall and in Sluicegate's code.

Usage: python bench/profile_summary.py PROFILE.txt [--top 25] [--match sluicegate/]

A raw profile has one line per distinct stack: `frame;frame;...;leaf COUNT`, each frame `func (file:line)`.
Self time is the leaf's share of all samples; inclusive time counts a function once per stack it is on.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def parse(path: Path) -> list[tuple[list[str], int]]:
    """(frames root→leaf, sample count) per line of a raw profile."""
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def short(frame: str, with_line: bool) -> str:
    """`func (file:line)` with the file shortened to its path below site-packages or src/."""
    m = FRAME.match(frame)
    if not m:
        return frame
    file = m["file"]
    for marker in ("site-packages/", "/src/", "/lib/python3."):
        if marker in file:
            file = file.split(marker, 1)[1]
            if marker.startswith("/lib/python3."):
                file = "stdlib/" + file.split("/", 1)[-1]
            break
    line = f":{m['line']}" if with_line and m["line"] else ""
    return f"{m['func']} ({file}{line})"


LOOP_FRAMES = ("Runner.run (", "run_until_complete (", "run_forever (", "_run_once (")


def _below_loop(frames: list[str]) -> int:
    """Index of the first frame below the (deepest) event loop frame: start-up frames are not work."""
    for index in range(len(frames) - 1, -1, -1):
        if frames[index].startswith(LOOP_FRAMES):
            return index + 1
    return 0


def summarize(stacks: list[tuple[list[str], int]], top: int, match: str, with_line: bool) -> str:
    """The report text."""
    total = sum(count for _, count in stacks)
    self_all: Counter[str] = Counter()
    self_files: Counter[str] = Counter()
    self_ours: Counter[str] = Counter()
    inclusive_ours: Counter[str] = Counter()
    for frames, count in stacks:
        leaf = frames[-1]
        self_all[short(leaf, with_line)] += count
        m = FRAME.match(short(leaf, False))
        self_files[m["file"] if m else leaf] += count
        if match in leaf:
            self_ours[short(leaf, with_line)] += count
        seen = set()
        for frame in frames[_below_loop(frames) :]:
            if match in frame:
                name = short(frame, False)
                if name not in seen:
                    seen.add(name)
                    inclusive_ours[name] += count
    ours = sum(self_ours.values())
    loop = sum(c for name, c in self_all.items() if name.startswith(LOOP_FRAMES))
    out = [
        f"{total} samples (idle excluded); self time in frames matching {match!r}: {ours / total:.1%}; "
        f"in the event loop's own frame (uvloop's C code: epoll, socket I/O, callbacks): {loop / total:.1%}"
    ]

    def block(title: str, counter: Counter[str]) -> None:
        out.append(f"\n{title}")
        for name, count in counter.most_common(top):
            out.append(f"  {count / total:6.1%}  {name}")

    block("self time, all code:", self_all)
    block(f"self time, frames matching {match!r}:", self_ours)
    block(f"inclusive time, frames matching {match!r}:", inclusive_ours)
    block("self time by file:", self_files)
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Print the summary of each profile given."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("profiles", nargs="+", type=Path)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--match", default="sluicegate/", help="what marks our own code (default sluicegate/)")
    p.add_argument("--lines", action="store_true", help="keep line numbers in the self-time tables")
    args = p.parse_args(argv)
    for path in args.profiles:
        print(f"== {path}")
        print(summarize(parse(path), args.top, args.match, args.lines))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
