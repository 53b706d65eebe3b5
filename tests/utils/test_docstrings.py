"""Every public definition in ``d2ext/`` has a docstring.

Public means a name that does not start with ``_``. Checked: module-level classes and functions,
and the public methods (``forward`` included) of every module-level class. A class documents its
``__init__`` arguments in the class docstring, so ``__init__`` itself is not checked.
"""

import ast
from pathlib import Path

import d2ext

PACKAGE_DIR = Path(d2ext.__file__).resolve().parent
_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def public_definitions(tree: ast.Module):
    """Yield the public definitions of a parsed module that must carry a docstring.

    Args:
        tree: a module parsed by ``ast.parse``.

    Returns:
        Iterator of ``(node, qualified_name)``: module-level classes and functions whose name
        does not start with ``_``, and the public methods of every module-level class.
    """
    for node in tree.body:
        if not isinstance(node, _DEFS):
            continue
        if not node.name.startswith("_"):
            yield node, node.name
        if isinstance(node, ast.ClassDef):
            for member in node.body:
                if isinstance(member, (ast.FunctionDef, ast.AsyncFunctionDef)) and (
                    not member.name.startswith("_")
                ):
                    yield member, f"{node.name}.{member.name}"


def missing_docstrings(root: Path):
    """List the public definitions under ``root`` that have no docstring.

    Args:
        root: a package directory; every ``*.py`` file below it is parsed.

    Returns:
        list[str]: ``"path:line name"`` entries, sorted by path.
    """
    missing = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node, name in public_definitions(tree):
            if ast.get_docstring(node) is None:
                missing.append(f"{path.relative_to(root.parent)}:{node.lineno} {name}")
    return missing


def test_checker_finds_missing_docstrings():
    source = (
        "class Public:\n"
        '    """Doc."""\n'
        "    def forward(self, x):\n"
        "        return x\n"
        "    def _private(self):\n"
        "        pass\n"
        "def f():\n"
        "    pass\n"
        "def _g():\n"
        "    pass\n"
        "class _Hidden:\n"
        "    def method(self):\n"
        "        pass\n"
        "def documented():\n"
        '    """Doc."""\n'
    )
    tree = ast.parse(source)
    undocumented = [
        name for node, name in public_definitions(tree) if ast.get_docstring(node) is None
    ]
    assert undocumented == ["Public.forward", "f", "_Hidden.method"]


def test_every_public_definition_has_a_docstring():
    missing = missing_docstrings(PACKAGE_DIR)
    assert not missing, f"{len(missing)} public definitions without a docstring:\n" + "\n".join(
        missing
    )
