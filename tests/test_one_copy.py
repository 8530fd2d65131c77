"""Reassociated sums live in exactly one compiled copy: the top-level kernel's.

``add_reassoc`` lets LLVM choose the order of a sum (its vector width,
interleaving and remainder).  A jitted function called by another one exists
twice in a process: compiled on its own, and as a copy linked into its
caller's module and optimised again there.  Numba's symbols are weak, so
which copy a call reaches depends on what the process loaded first: a
process that compiles everything calls the standalone copy, one that loads
the caller from numba's cache calls the caller's own copy.  The two copies
can order a sum differently: the last bit of a result then depended on the
cache (seen: the Brier standard error at C = 1000, float32 logits).

The rule this test holds the package to: a jitted function whose code sums
with ``add_reassoc`` (itself, or through callees inlined into it) is either
inlined into every caller (``inline_into_callers()``, or numba's
``inline="always"``) or a top-level kernel that only Python calls.  Then
each top-level kernel holds the only copy that runs, the same whether it was
compiled in this process or loaded from the cache (tests/test_reproducible.py
checks the bits).
"""

from __future__ import annotations

import ast
import collections
import pathlib

import fastce

PACKAGE = pathlib.Path(fastce.__file__).parent


def _jitted_functions() -> dict[str, list[tuple[str, ast.FunctionDef]]]:
    """Every jitted function (or overload) of the package by name; a name defined twice keeps both
    (a call to it is taken to reach either: the analysis stays on the safe side)."""
    found = collections.defaultdict(list)
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and _jitted(node):
                found[node.name].append((path.name, node))
    return found


def _jitted(node: ast.FunctionDef) -> bool:
    return any(kind in ast.unparse(d) for d in node.decorator_list for kind in ("njit", "kernel", "overload"))


def _called(node: ast.FunctionDef) -> set[str]:
    names = set()
    for inner in ast.walk(node):
        if isinstance(inner, ast.Call):
            func = inner.func
            if isinstance(func, ast.Name):
                names.add(func.id)
            elif isinstance(func, ast.Attribute):
                names.add(func.attr)
    return names


def _inlined(node: ast.FunctionDef) -> bool:
    numba_inline = any("inline='always'" in ast.unparse(d) or 'inline="always"' in ast.unparse(d)
                       for d in node.decorator_list)
    return numba_inline or "inline_into_callers" in _called(node)


def test_every_reassociated_sum_has_one_copy():
    jitted = _jitted_functions()
    calls = {name: set().union(*(_called(node) for _, node in defs)) & set(jitted) for name, defs in jitted.items()}
    inlined = {name: all(_inlined(node) for _, node in defs) for name, defs in jitted.items()}
    callers = collections.defaultdict(set)
    for name, callees in calls.items():
        for callee in callees - {name}:
            callers[callee].add(name)
    # Functions whose compiled code holds a reassociated sum: their own, or an inlined callee's.
    holds = {name for name, defs in jitted.items() if any("add_reassoc" in _called(node) for _, node in defs)}
    changed = True
    while changed:
        changed = False
        for name in jitted:
            if name not in holds and any(c in holds and inlined[c] for c in calls[name]):
                holds.add(name)
                changed = True
    assert {"_two_class_block", "_pair_sums"} <= holds  # the analysis sees the kernels
    where = {name: sorted({module for module, _ in defs}) for name, defs in jitted.items()}
    offenders = sorted(f"{name} {where[name]}, called by {sorted(callers[name])}"
                       for name in holds if callers[name] and not inlined[name])
    assert not offenders, (
        "these functions sum with add_reassoc and are called from jitted code without being inlined "
        "into it: mark them inline_into_callers() (see this test's docstring):\n" + "\n".join(offenders)
    )
    clashes = sorted(name for name in holds if any("compile_apart" in _called(node) for _, node in jitted[name]))
    assert not clashes, f"compile_apart() keeps a second copy of a reassociated sum: {clashes}"
