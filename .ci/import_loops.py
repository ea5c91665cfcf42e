#!/usr/bin/env python3
"""Fails when modules of a crate import each other in a loop.

For every `.rs` file under the given `src` folders (test modules excluded), each
`crate::a::b` / `super::x` path outside comments is an edge from the file's module to the
module it names. Edges are reduced to the first level where the two paths differ (so
`client::book -> client::slots` is an edge between siblings, and `client -> connection` one
between top-level modules); any strongly connected group of two or more modules is a loop.
Usage: import_loops.py SRC_DIR...
"""
import os
import re
import sys
from collections import defaultdict


def module_of(root, path):
    parts = os.path.relpath(path, root)[:-3].split(os.sep)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def edges_of(root):
    files = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.endswith(".rs")]
    modules = {module_of(root, f) for f in files}
    edges = set()
    for f in files:
        me = module_of(root, f)
        text = open(f, encoding="utf-8").read().split("#[cfg(test)]")[0]
        for line in text.splitlines():
            if line.strip().startswith("//"):
                continue
            for m in re.finditer(r"\b(crate|super)((?:::[a-z_][a-z0-9_]*)+)", line):
                base = [] if m.group(1) == "crate" else list(me[:-1])
                target = base + m.group(2).split("::")[1:]
                hit = next(
                    (tuple(target[:k]) for k in range(len(target), 0, -1) if tuple(target[:k]) in modules),
                    None,
                )
                if hit is None or hit == me:
                    continue
                i = 0
                while i < min(len(me), len(hit)) and me[i] == hit[i]:
                    i += 1
                if i < len(me) and i < len(hit):
                    edges.add((me[: i + 1], hit[: i + 1]))
    return edges


def loops(edges):
    graph = defaultdict(set)
    for a, b in edges:
        graph[a].add(b)
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(group)

    for v in list(graph):
        if v not in index:
            visit(v)
    return found


def main():
    bad = False
    for root in sys.argv[1:]:
        for group in loops(edges_of(root)):
            bad = True
            names = ", ".join("::".join(m) for m in sorted(group))
            print(f"import loop in {root}: {names}")
    if bad:
        sys.exit(1)
    print("no import loops in", " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
