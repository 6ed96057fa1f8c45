"""No load path in the package unpickles: a checkpoint or a map cache from anyone must not run code."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sage_hf"
_UNPICKLERS = {("pickle", "load"), ("pickle", "loads"), ("joblib", "load"), ("cloudpickle", "load"),
               ("cloudpickle", "loads"), ("dill", "load"), ("dill", "loads")}


def _keyword_is(call: ast.Call, name: str, value: object) -> bool:
    return any(k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is value for k in call.keywords)


def _unpickling_calls(source: str) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module in {m for m, _ in _UNPICKLERS}:
            names = {alias.name for alias in node.names}
            if names & {f for m, f in _UNPICKLERS if m == node.module}:
                found.append((node.lineno, f"from {node.module} import {', '.join(sorted(names))}"))
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        owner = node.func.value.id if isinstance(node.func.value, ast.Name) else ""
        call = f"{owner}.{node.func.attr}"
        if (owner, node.func.attr) in _UNPICKLERS:
            found.append((node.lineno, call))
        elif call == "torch.load" and _keyword_is(node, "weights_only", False):
            found.append((node.lineno, "torch.load(weights_only=False)"))
        elif node.func.attr == "load" and _keyword_is(node, "allow_pickle", True):
            found.append((node.lineno, f"{call}(allow_pickle=True)"))
    return found


def test_the_scan_finds_each_form():
    source = """
import pickle, joblib, torch, numpy as np
from pickle import loads
pickle.load(f); pickle.loads(b); joblib.load(p)
torch.load(p, weights_only=False); torch.load(p, weights_only=True); torch.load(p)
np.load(p, allow_pickle=True); np.load(p, allow_pickle=False)
"""
    calls = [call for _, call in _unpickling_calls(source)]
    assert calls == ["from pickle import loads", "pickle.load", "pickle.loads", "joblib.load",
                     "torch.load(weights_only=False)", "np.load(allow_pickle=True)"]


def test_no_load_path_unpickles():
    offenders = [f"{path.relative_to(PACKAGE.parent)}:{line}: {call}"
                 for path in sorted(PACKAGE.rglob("*.py"))
                 for line, call in _unpickling_calls(path.read_text(encoding="utf-8"))]
    assert not offenders, "unpickling load paths (store tensors as safetensors, the rest as JSON):\n" + "\n".join(
        offenders)
