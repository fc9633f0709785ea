#!/usr/bin/env python3
"""Fails on an import cycle between the crate's source files, or on an
import that points up the layers.

Each file under src/ is a node; `a.rs` depends on `b.rs` when a path in
`a.rs` (a `use` or an inline path such as `crate::store::Store`) names an
item of `b.rs`. A path is resolved to the longest module prefix that is a
file: `crate::config::error::ConfigError` is config/error.rs, while
`crate::config::ConfigError` (a re-export) is config/mod.rs. Paths inside
`#[cfg(test)] mod ... { }` blocks and comments are not counted: a test may
reach anywhere. `super::` and `self::` are read relative to the file's own
module, also inside inline modules (`mod documented { use super::X; }`
names the file's own items).

The layers, bottom up, are those of docs/architecture.md (LAYERS below):
a room (a top-level module of src/) may import rooms of its own layer or
below, and the shared rooms; a shared room may import only shared rooms
and the domain. ALLOWED_UP lists the one exception the architecture
document names.

Prints each cycle (its files, and one import that closes it) and each
import up the layers, and exits 1 if there is any; prints the number of
files and imports otherwise.

    scripts/check-imports.py [SRC_DIR]
"""
import re
import sys
from pathlib import Path

PATH = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
GROUP = re.compile(r"\buse\s+(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{([^;]*)\};", re.S)
TEST_MOD = re.compile(r"#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+\w+\s*\{")
INLINE_MOD = re.compile(r"\bmod\s+\w+\s*\{")


LAYERS = {
    "domain": 0,
    "store": 1, "cache": 1, "bus": 1,
    "service": 2, "pipeline": 2, "health": 2, "auth": 2,
    "http": 3, "edge": 3,
    "startup": 4, "shutdown": 4, "healthcheck": 4, "": 4,
}
SHARED = {"config", "metrics", "telemetry", "retry", "supervisor", "tls"}
# (from, to): the registry samples the store's figures at scrape time.
ALLOWED_UP = {("metrics", "store")}


def points_up(room: str, target: str) -> bool:
    if room == target or target in SHARED:
        return False
    if room in SHARED:
        return LAYERS.get(target, 0) > 0
    return LAYERS.get(target, 0) > LAYERS.get(room, 4)


def module_of(src: Path, file: Path) -> tuple:
    parts = list(file.relative_to(src).with_suffix("").parts)
    if parts[-1] == "mod" or (len(parts) == 1 and parts[0] in ("lib", "main")):
        parts = parts[:-1]
    return tuple(parts)


def block_end(text: str, open_brace: int) -> int:
    """Index just past the brace that closes the one at `open_brace`."""
    depth, i = 0, open_brace
    while i < len(text):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
        if depth == 0:
            break
    return i


def without_tests_and_comments(text: str) -> str:
    text = re.sub(r"//[^\n]*", "", text)
    out, i = [], 0
    for m in TEST_MOD.finditer(text):
        if m.start() < i:
            continue
        out.append(text[i:m.start()])
        i = block_end(text, m.end() - 1)
    out.append(text[i:])
    return "".join(out)


def inline_depths(text: str) -> list:
    """For each character, how many inline `mod x { }` blocks enclose it."""
    depth = [0] * (len(text) + 1)
    for m in INLINE_MOD.finditer(text):
        end = block_end(text, m.end() - 1)
        for k in range(m.end(), end):
            depth[k] += 1
    return depth


def main() -> int:
    src = Path(sys.argv[1] if len(sys.argv) > 1 else "src")
    files = sorted(src.rglob("*.rs"))
    by_module = {module_of(src, f): f for f in files}

    def resolve(segments):
        for k in range(len(segments), 0, -1):
            target = by_module.get(tuple(segments[:k]))
            if target:
                return target
        return None

    edges = {f: {} for f in files}
    for f in files:
        here = list(module_of(src, f))
        body = without_tests_and_comments(f.read_text(encoding="utf-8"))
        depth = inline_depths(body)

        def target_of(kind, at, segments):
            """The file a path names, or None outside the crate's files."""
            if kind == "crate":
                return resolve(segments)
            climbs = (1 if kind == "super" else 0)
            while segments and segments[0] == "super":
                climbs, segments = climbs + 1, segments[1:]
            # Inside an inline module the first climbs stay in this file.
            climbs -= depth[at]
            if climbs < 0 or (climbs == 0 and depth[at] > 0):
                return f
            if climbs > len(here):
                return None
            return resolve(here[: len(here) - climbs] + segments)

        refs = [(m.start(), m.group(1), m.group(2).split("::")[1:]) for m in PATH.finditer(body)]
        for m in GROUP.finditer(body):
            prefix = m.group(2).split("::")[1:]
            for item in re.sub(r"\{[^}]*\}", "", m.group(3)).split(","):
                item = item.strip().split(" as ")[0].strip()
                if item and item != "self":
                    refs.append((m.start(), m.group(1), prefix + item.split("::")))
        for at, kind, segments in refs:
            target = target_of(kind, at, segments)
            if target and target != f:
                edges[f].setdefault(target, "::".join([kind] + segments))

    room = {f: (module_of(src, f) or ("",))[0] for f in files}
    unknown = sorted({r for r in room.values() if r not in LAYERS and r not in SHARED})
    for r in unknown:
        print(f"src/{r}: a room in no layer: add it to LAYERS or SHARED in {sys.argv[0]}")
    up = sorted(
        (str(f.relative_to(src)), path, str(to.relative_to(src)))
        for f in files
        for to, path in edges[f].items()
        if points_up(room[f], room[to]) and (room[f], room[to]) not in ALLOWED_UP
    )
    for f, path, to in up:
        print(f"import up the layers: {f} uses {path} ({to})")

    cycles = strongly_connected(edges)
    for cycle in cycles:
        names = sorted(str(f.relative_to(src)) for f in cycle)
        first = sorted(cycle)[0]
        closing = next((f"{first.relative_to(src)} uses {path}" for to, path in edges[first].items() if to in cycle), "")
        print(f"import cycle of {len(cycle)} files: {' '.join(names)} ({closing})")
    if cycles or up or unknown:
        return 1
    print(f"no import cycle, and none up the layers but {len(ALLOWED_UP)} allowed, "
          f"among {len(files)} files ({sum(len(e) for e in edges.values())} imports)")
    return 0


def strongly_connected(edges: dict) -> list:
    """Tarjan's algorithm, iterative: the components of more than one file."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], [0]
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            advanced = False
            for nxt in successors:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter[0]
                    counter[0] += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(edges[nxt])))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


if __name__ == "__main__":
    sys.exit(main())
