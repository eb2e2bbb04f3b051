#!/usr/bin/env python3
"""Fails when modules of one crate import each other in a cycle (docs/architecture.md).

For every crate's src/ folder, each module's non-test code is scanned for `crate::a::b` and
`super::x` paths; an edge runs from a module to every other module of the crate it names (a
module and its own ancestors or descendants are not edges). Cycles are the strongly connected
components with more than one module. Usage: scripts/check-module-cycles.py [SRC_DIR ...]
(default: every crate's src/ in the repository).
"""

import os
import re
import sys

PATH = re.compile(r"\b(crate|super)::([a-z_][a-z0-9_]*)(?:::([a-z_][a-z0-9_]*))?")


def module_name(root, path):
    parts = os.path.relpath(path, root)[:-3].split(os.sep)
    if parts[-1] == "mod":
        parts = parts[:-1]
    if parts in (["lib"], ["main"]):
        return []
    return parts


def imports(root):
    """Module (tuple of path parts) -> the module paths its non-test code names."""
    found = {}
    for folder, _, files in os.walk(root):
        for f in files:
            if not f.endswith(".rs") or f == "tests.rs":
                continue
            path = os.path.join(folder, f)
            parts = module_name(root, path)
            with open(path, encoding="utf-8") as fh:
                code = fh.read().split("#[cfg(test)]")[0]
            named = set()
            for m in PATH.finditer(code):
                base = [] if m.group(1) == "crate" else parts[:-1]
                named.add(tuple(base + [m.group(2)]))
                if m.group(3):
                    named.add(tuple(base + [m.group(2), m.group(3)]))
            found[tuple(parts)] = named
    return found


def related(a, b):
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def cycles(graph):
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(here)
    roots = sys.argv[1:] or sorted(
        os.path.join(repo, d, "src")
        for d in [".", *os.listdir(repo)]
        if os.path.isfile(os.path.join(repo, d, "Cargo.toml")) and os.path.isdir(os.path.join(repo, d, "src"))
    )
    bad = 0
    for root in roots:
        found = imports(root)
        graph = {m: {d for d in named if d in found and not related(m, d)} for m, named in found.items()}
        for comp in cycles(graph):
            bad += 1
            names = ", ".join("::".join(c) for c in comp)
            print(f"{os.path.relpath(root, repo)}: modules import each other in a cycle: {names}")
    if bad:
        sys.exit(1)
    print(f"no module cycles in {len(roots)} crates")


if __name__ == "__main__":
    main()
