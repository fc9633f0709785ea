#!/usr/bin/env python3
"""Checks that every relative link in the repository's Markdown files
points at a file or directory that exists. Prints each broken one as
FILE:LINE: TARGET and exits 1 if there is any.

    scripts/check-links.py
"""
import re
import subprocess
import sys
from pathlib import Path

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
EXTERNAL = ("http://", "https://", "mailto:", "#")


def main() -> int:
    root = Path(subprocess.run(["git", "rev-parse", "--show-toplevel"], check=True,
                               capture_output=True, text=True).stdout.strip())
    files = subprocess.run(["git", "ls-files", "*.md"], cwd=root, check=True,
                           capture_output=True, text=True).stdout.split()
    broken = 0
    for name in files:
        path = root / name
        in_code = False
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.lstrip().startswith("```"):
                in_code = not in_code
                continue
            if in_code:
                continue
            for target in LINK.findall(line):
                if target.startswith(EXTERNAL):
                    continue
                relative = target.split("#", 1)[0]
                if relative and not (path.parent / relative).exists():
                    print(f"{name}:{number}: {target}")
                    broken += 1
    print(f"links: {len(files)} Markdown files, {broken} broken relative link(s)")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
