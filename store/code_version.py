"""Code versions that key measured runs: the meaning of the code, not its place.

A variant's key holds the version of the code that computed it. The version is a digest of every
Python file under the packages that compute a result, read as syntax: each top-level statement
(docstrings and import statements taken out) and the set of names imported from outside the
project (torch.nn.functional as F means something; where a project module now lives does not). So
moving a file, splitting a module, reordering definitions, rewording a docstring or comment, or an
import that names the same thing from another place keys nothing anew; any change to what the code does
re-keys the runs it computed. Packages are given per method, so a change to GPTQ's code
re-measures GPTQ variants and nothing else.
"""

from __future__ import annotations

import ast
import hashlib
from functools import lru_cache
from importlib import metadata
from pathlib import Path

PROJECT_PACKAGES = ("advisor", "pipelines", "registry", "store")

def _strip(node: ast.AST) -> ast.AST:
    """`node` without docstrings and import statements, at any depth."""
    for field, value in ast.iter_fields(node):
        if isinstance(value, list):
            kept = [v for v in value if not isinstance(v, (ast.Import, ast.ImportFrom))]
            if (kept and isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                    and field == "body" and isinstance(kept[0], ast.Expr)
                    and isinstance(kept[0].value, ast.Constant) and isinstance(kept[0].value.value, str)):
                kept = kept[1:]
            if field == "body" and not kept and value:
                kept = [ast.Pass()]  # a body of imports only
            setattr(node, field, kept)
            for v in kept:
                if isinstance(v, ast.AST):
                    _strip(v)
        elif isinstance(value, ast.AST):
            _strip(value)
    return node


def source_digest(paths) -> str:
    """sha256 (hex) of the meaning of these Python files taken together (see the module doc)."""
    statements, imported = [], set()
    for path in paths:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                continue
            if any(m.split(".")[0] in PROJECT_PACKAGES for m in modules) or modules == ["__future__"]:
                continue
            prefix = "" if isinstance(node, ast.Import) else f"{node.module}."
            imported |= {f"{prefix}{a.name} as {a.asname}" if a.asname else f"{prefix}{a.name}" for a in node.names}
        for node in _strip(tree).body:
            statements.append(hashlib.sha256(ast.dump(node, annotate_fields=False).encode()).hexdigest())
    digest = hashlib.sha256()
    for part in sorted(statements) + ["imports"] + sorted(imported):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()


def python_files(roots) -> list[Path]:
    """Every .py file under the folders (or the files) in `roots`."""
    out = []
    for root in map(Path, roots):
        out += sorted(root.rglob("*.py")) if root.is_dir() else [root]
    return out


@lru_cache(maxsize=None)
def code_version(*roots: str, package: str = "ptq-advisor") -> str:
    """`<package version>+<12 hex>` for the code under `roots` (folders or files)."""
    return f"{metadata.version(package)}+{source_digest(python_files(roots))[:12]}"
