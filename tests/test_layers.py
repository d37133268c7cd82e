"""The package's layers, read from the source with `ast` (nothing is imported).

Every import between modules of `functional_ast` counts, also those inside functions (they hide cycles) and
under `if TYPE_CHECKING:` (those are left out of the cycle check only: they never run). Three rules:

1. no import cycle between modules;
2. imports only go down the layers below (a module may import its own layer and lower ones; the package's
   `__init__.py` and `__main__.py` may import anything);
3. no module imports a private name (`_x`, not a dunder) from another module of the package, or a private
   module, or reaches one as an attribute (`optim._tree`).

`python tests/test_layers.py` prints every finding.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

PACKAGE = "functional_ast"
PACKAGE_DIR = Path(__file__).resolve().parents[1] / PACKAGE
# Lowest first. A module belongs to the first entry that is itself or one of its parent packages.
LAYERS: tuple[tuple[str, ...], ...] = (
    (f"{PACKAGE}.io", f"{PACKAGE}.models"),
    (f"{PACKAGE}.core",),
    (f"{PACKAGE}.strategies",),
    (f"{PACKAGE}.data",),
    (f"{PACKAGE}.tasks",),
    (f"{PACKAGE}.train",),
    (f"{PACKAGE}.report",),
    (f"{PACKAGE}.adapters",),
    (f"{PACKAGE}.edges",),
    (f"{PACKAGE}.pays",),
    (f"{PACKAGE}.cli",),
)
FREE = (PACKAGE, f"{PACKAGE}.__main__")  # may import anything


@dataclass(frozen=True)
class Import:
    """One import of a module of the package (`target`), or of `name` from it, at `source`:`line`."""

    source: str
    line: int
    target: str
    name: str | None  # `from target import name` where name is not a submodule; None otherwise
    text: str  # the statement as written
    type_checking: bool  # under `if TYPE_CHECKING:`
    in_function: bool  # runs when the function is called, not when the module is imported
    resolved: bool = True  # target is a module or package of the tree


@dataclass
class Tree:
    package: str
    root: Path  # the package's folder
    files: dict[str, Path] = field(default_factory=dict)  # module -> file
    packages: set[str] = field(default_factory=set)  # every folder, with or without __init__.py
    imports: list[Import] = field(default_factory=list)
    attributes: list[tuple[str, int, str, str]] = field(default_factory=list)  # (source, line, name used, text)

    def is_module(self, name: str) -> bool:
        return name in self.files or name in self.packages

    def where(self, source: str, line: int, text: str) -> str:
        """`module (path:line): text`, the path from the package's parent folder."""
        path = self.files.get(source)
        shown = path.relative_to(self.root.parent).as_posix() if path else source
        return f"{source} ({shown}:{line}): {text}"

    def at(self, i: Import) -> str:
        return self.where(i.source, i.line, i.text)


def _module_name(root: Path, path: Path, package: str) -> str:
    parts = [package, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class _Visitor(ast.NodeVisitor):
    """Collects one module's imports of the package, and the private attributes it reads off modules."""

    def __init__(self, tree: Tree, module: str, is_package: bool, source: str):
        self.tree, self.module, self.source = tree, module, source
        self.here = module if is_package else module.rpartition(".")[0]  # where relative imports start
        self.type_checking = 0
        self.functions = 0
        self.bound: dict[str, str] = {}  # local name (any scope) -> the module of the package it names

    def _ours(self, name: str) -> bool:
        return name == self.tree.package or name.startswith(self.tree.package + ".")

    def _add(self, node: ast.AST, target: str, name: str | None) -> None:
        text = " ".join((ast.get_source_segment(self.source, node) or ast.unparse(node)).split())
        self.tree.imports.append(Import(self.module, node.lineno, target, name, text, self.type_checking > 0,
                                        self.functions > 0))

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            return self.generic_visit(node)
        self.type_checking += 1
        for child in node.body:
            self.visit(child)
        self.type_checking -= 1
        for child in node.orelse:
            self.visit(child)

    def _function(self, node: ast.AST) -> None:
        self.functions += 1
        self.generic_visit(node)
        self.functions -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if self._ours(alias.name):
                self._add(node, alias.name, None)
                top = alias.name.split(".")[0]
                self.bound[alias.asname or top] = alias.name if alias.asname else top

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.here.split(".")
            if node.level - 1 >= len(base):
                return  # above the package: not ours
            target = ".".join(base[:len(base) - (node.level - 1)] + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        if not self._ours(target):
            return
        for alias in node.names:
            sub = f"{target}.{alias.name}"
            if alias.name != "*" and self.tree.is_module(sub):
                self._add(node, sub, None)
                self.bound[alias.asname or alias.name] = sub
            else:
                self._add(node, target, None if alias.name == "*" else alias.name)

    def visit_Call(self, node: ast.Call) -> None:
        """`importlib.import_module("functional_ast.x")` and `__import__(...)` with a literal name count too."""
        func = node.func
        dynamic = (isinstance(func, ast.Attribute) and func.attr == "import_module") or \
            (isinstance(func, ast.Name) and func.id in ("import_module", "__import__"))
        if dynamic and node.args and isinstance(node.args[0], ast.Constant) and \
                isinstance(node.args[0].value, str) and self._ours(node.args[0].value):
            self._add(node, node.args[0].value, None)
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        """`optim._tree` where `optim` names a module of the package: a private name used across modules."""
        chain, value = [node.attr], node.value
        while isinstance(value, ast.Attribute):
            chain.append(value.attr)
            value = value.value
        if not (isinstance(value, ast.Name) and value.id in self.bound):
            return self.generic_visit(node)
        module = self.bound[value.id]
        for attr in reversed(chain):  # down through submodules; the first other attribute is the name used
            used = f"{module}.{attr}"
            if _is_private(attr) and module != self.module:
                text = " ".join((ast.get_source_segment(self.source, node) or ast.unparse(node)).split())
                self.tree.attributes.append((self.module, node.lineno, used, text))
                return
            if not self.tree.is_module(used):
                return
            module = used


def scan(root: Path, package: str = PACKAGE) -> Tree:
    """Every module under `root` (the folder of `package`) and every import of the package that it makes."""
    tree = Tree(package, root)
    paths = sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)
    tree.files = {_module_name(root, path, package): path for path in paths}
    tree.packages = {package} | {_module_name(root, d / "__init__.py", package)
                                 for d in root.rglob("*") if d.is_dir() and d.name != "__pycache__"}
    for path in paths:
        source = path.read_text()
        _Visitor(tree, _module_name(root, path, package), path.name == "__init__.py", source).visit(
            ast.parse(source, str(path)))
    tree.imports = [i if tree.is_module(i.target) else replace(i, resolved=False) for i in tree.imports]
    return tree


def _layer(module: str, layers=LAYERS) -> int | None:
    for rank, members in enumerate(layers):
        if any(module == m or module.startswith(m + ".") for m in members):
            return rank
    return None


def _layer_name(rank: int, layers=LAYERS) -> str:
    return "/".join(m.rpartition(".")[2] for m in layers[rank])


def cycles(tree: Tree) -> list[list[Import]]:
    """One cycle (the imports that close it, in order) per strongly connected group of modules. Imports under
    `if TYPE_CHECKING:` never run, so they are left out; imports inside functions are in."""
    return [path for _, path in _cycles(tree)]


def _cycles(tree: Tree) -> list[tuple[list[str], list[Import]]]:
    """(group, its shortest cycle through the group's first module) per strongly connected group."""
    edges: dict[str, dict[str, Import]] = {}
    for i in tree.imports:
        if i.resolved and not i.type_checking and i.target != i.source:
            edges.setdefault(i.source, {}).setdefault(i.target, i)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    for start in sorted(edges):  # Tarjan's algorithm, iterative
        if start in index:
            continue
        work = [(start, iter(sorted(edges.get(start, {}))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, {})))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while not group or group[-1] != node:
                    group.append(stack.pop())
                    on_stack.discard(group[-1])
                if len(group) > 1:
                    groups.append(sorted(group))
    found = []
    for group in sorted(groups):
        members, first = set(group), group[0]
        previous: dict[str, str] = {}
        queue, seen, closing = [first], {first}, None
        while queue and closing is None:  # the shortest way from `first` back to itself, breadth first
            node = queue.pop(0)
            for child in sorted(edges.get(node, {})):
                if child == first:
                    closing = node
                    break
                if child in members and child not in seen:
                    seen.add(child)
                    previous[child] = node
                    queue.append(child)
        path = [closing]
        while path[-1] != first:
            path.append(previous[path[-1]])
        path.reverse()
        found.append((group, [edges[a][b] for a, b in zip(path, path[1:] + [first])]))
    return found


def layer_violations(tree: Tree, layers=LAYERS, free=FREE) -> list[tuple[Import, str]]:
    out = []
    for i in tree.imports:
        if i.source in free:
            continue
        here, there = _layer(i.source, layers), _layer(i.target, layers)
        if here is None:
            out.append((i, f"{i.source} is in no layer"))
        elif there is None:
            out.append((i, f"imports the package's top {i.target}" if i.target == tree.package
                        else f"imports {i.target}, which is in no layer"))
        elif there > here:
            out.append((i, f"layer {_layer_name(here, layers)} imports up into layer {_layer_name(there, layers)}"))
    return out


def private_violations(tree: Tree) -> list[str]:
    out = []
    for i in tree.imports:
        if any(_is_private(part) for part in i.target.split(".")):
            out.append(f"{tree.at(i)}  [private module {i.target}]")
        elif i.name is not None and _is_private(i.name) and i.target != i.source:
            out.append(f"{tree.at(i)}  [private name {i.name} of {i.target}]")
    for source, line, used, text in tree.attributes:
        out.append(f"{tree.where(source, line, text)}  [private attribute {used}]")
    return out


def unresolved(tree: Tree) -> list[Import]:
    return [i for i in tree.imports if not i.resolved]


def _notes(i: Import) -> str:
    return ("  (inside a function)" if i.in_function else "") + ("  (TYPE_CHECKING)" if i.type_checking else "")


def _cycle_text(cycle: list[Import], tree: Tree, group: list[str] | None = None) -> str:
    steps = "\n".join(f"      {tree.at(c)}{_notes(c)}" for c in cycle)
    more = f"\n      (one loop of the modules that all reach one another: {', '.join(group)})" \
        if group and len(group) > len(cycle) else ""
    return "  " + " -> ".join([c.source for c in cycle] + [cycle[0].source]) + "\n" + steps + more


def report(tree: Tree, layers=LAYERS, free=FREE) -> dict[str, list[str]]:
    """Every finding, as the lines the failure messages print."""
    return {
        "cycles": [_cycle_text(c, tree, group) for group, c in _cycles(tree)],
        "layers": [f"  {tree.at(i)}  [{why}]{_notes(i)}" for i, why in layer_violations(tree, layers, free)],
        "private": [f"  {line}" for line in private_violations(tree)],
        "unresolved": [f"  {tree.at(i)}  [no module {i.target} under {tree.root.name}/]" for i in unresolved(tree)],
    }


ORDER = " < ".join(_layer_name(r) for r in range(len(LAYERS)))


# -- the real package ----------------------------------------------------------------------------------------
def test_no_import_cycle_between_modules():
    found = report(scan(PACKAGE_DIR))["cycles"]
    assert not found, "import cycles (modules, then the import that makes each step):\n" + "\n".join(found)


def test_imports_only_go_down_the_layers():
    found = report(scan(PACKAGE_DIR))["layers"]
    assert not found, f"imports against the layer order {ORDER}:\n" + "\n".join(found)


def test_no_private_name_or_module_is_used_across_modules():
    found = report(scan(PACKAGE_DIR))["private"]
    assert not found, "private names or modules used across modules:\n" + "\n".join(found)


def test_every_import_of_the_package_names_one_of_its_modules():
    found = report(scan(PACKAGE_DIR))["unresolved"]
    assert not found, f"imports of modules that are not in {PACKAGE}/:\n" + "\n".join(found)


# -- the checker itself, on small packages written for it ----------------------------------------------------
TOY_LAYERS = (("toy.io",), ("toy.core",), ("toy.cli",))
TOY_FREE = ("toy", "toy.__main__")


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_the_checker_finds_a_cycle_hidden_in_a_function_private_imports_and_upward_imports(tmp_path):
    tree = scan(_write(tmp_path / "toy", {
        "__init__.py": "from toy.cli import main\n",
        "__main__.py": "from toy.cli import main\n\nmain()\n",
        "io.py": "def save():\n    pass\n",
        "core/__init__.py": "",
        "core/a.py": "from . import b\nfrom toy.io import save\n\n\ndef _helper():\n    return save\n",
        "core/b.py": ("from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from toy.cli import main\n\n\n"
                      "def late():\n    from .a import _helper\n    return _helper()\n"),
        "core/c.py": "import toy.core.a as a\n\n\ndef f():\n    return a._helper()\n",
        "core/d.py": "from ..core import _impl\nimport toy.gone\nfrom toy import cli\n",
        "core/_impl.py": "X = 1\n",
        "cli.py": "from toy.core import a\nfrom toy.core.a import save\n\n\ndef main():\n    return a, save\n",
    }), "toy")

    # a -> b at the top, b -> a inside `late`. b's import of cli is under TYPE_CHECKING: no cycle through it.
    (cycle,) = cycles(tree)
    assert [(c.source, c.target, c.line, c.in_function) for c in cycle] == [
        ("toy.core.a", "toy.core.b", 1, False), ("toy.core.b", "toy.core.a", 8, True)]
    assert _cycle_text(cycle, tree).splitlines() == [
        "  toy.core.a -> toy.core.b -> toy.core.a",
        "      toy.core.a (toy/core/a.py:1): from . import b",
        "      toy.core.b (toy/core/b.py:8): from .a import _helper  (inside a function)"]

    assert sorted(private_violations(tree)) == [
        "toy.core.b (toy/core/b.py:8): from .a import _helper  [private name _helper of toy.core.a]",
        "toy.core.c (toy/core/c.py:5): a._helper  [private attribute toy.core.a._helper]",
        "toy.core.d (toy/core/d.py:1): from ..core import _impl  [private module toy.core._impl]"]

    assert sorted((i.source, i.line, i.target, why) for i, why in layer_violations(tree, TOY_LAYERS, TOY_FREE)) == [
        ("toy.core.b", 4, "toy.cli", "layer core imports up into layer cli"),
        ("toy.core.d", 2, "toy.gone", "imports toy.gone, which is in no layer"),
        ("toy.core.d", 3, "toy.cli", "layer core imports up into layer cli")]
    assert [(i.source, i.target) for i in unresolved(tree)] == [("toy.core.d", "toy.gone")]
    # A name imported from a module is no import of a submodule: `from toy.core.a import save` is toy.core.a's.
    assert ("toy.cli", 2, "toy.core.a", "save") in {(i.source, i.line, i.target, i.name) for i in tree.imports}


def test_a_package_that_keeps_the_rules_has_no_finding(tmp_path):
    tree = scan(_write(tmp_path / "toy", {
        "__init__.py": "from toy.cli import main\nfrom toy.core import a\n",
        "__main__.py": "from toy import main\n\nmain()\n",
        "io.py": "def save():\n    pass\n",
        "core/a.py": "from toy.io import save\nfrom . import b\n\n\ndef public():\n    return b.__name__, save\n",
        "core/b.py": "import toy.io\n\n\ndef late():\n    from toy.io import save\n    return toy.io.save, save\n",
        "cli.py": "from .core.a import public\n\n\ndef main():\n    return public()\n",
    }), "toy")
    assert len(tree.imports) == 8 and not tree.attributes
    assert not any(report(tree, TOY_LAYERS, TOY_FREE).values()), report(tree, TOY_LAYERS, TOY_FREE)


if __name__ == "__main__":
    findings = report(scan(PACKAGE_DIR))
    for kind, lines in findings.items():
        print(f"{kind}: {len(lines)}")
        print("\n".join(lines))
    sys.exit(1 if any(findings.values()) else 0)
