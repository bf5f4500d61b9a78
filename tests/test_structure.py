"""The package's shape, as docs/architecture.md draws it, checked from the source.

Imports are read from each module's syntax tree (nothing is imported), so a
circle or a stray SQLAlchemy import fails here with the modules named.
Imports under ``if TYPE_CHECKING:`` are left out: they never run. The web
client's JavaScript modules are held to their own rules (docs/clients.md, "Web
client layout"), read from their text.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests import webmodules

PACKAGE = Path(__file__).resolve().parent.parent / "chateau"
# Past this many lines a module must say, in its docstring, that it is one concern.
MAX_LINES = 500
# Only storage may speak SQL.
STORAGE = ("chateau.store", "chateau.migrations")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _runtime_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, except those guarded by ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def imported_names(path: Path, name: str) -> set[str]:
    """The fully qualified modules (and names) *path* imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names: set[str] = set()
    for node in _runtime_imports(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        names.add(base)
        names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports."""
    known = modules()
    return {
        name: {target for target in imported_names(path, name) if target in known and target != name}
        for name, path in known.items()
    }


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_the_finder_sees_a_circle_when_there_is_one() -> None:
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_the_package_has_no_import_circle() -> None:
    graph = import_graph()
    assert "chateau.handlers.dispatch" in graph and graph["chateau.protocol"], "nothing was read"
    assert circles(graph) == []


def test_the_layers_point_one_way() -> None:
    """Handlers never import the wire layer; storage and the registry import neither."""
    graph = import_graph()

    def reaches(start: str) -> set[str]:
        seen: set[str] = set()
        todo = [start]
        while todo:
            for target in graph.get(todo.pop(), ()):
                if target not in seen:
                    seen.add(target)
                    todo.append(target)
        return seen

    for name in graph:
        if name.startswith("chateau.handlers"):
            assert not reaches(name) & {"chateau.protocol", "chateau.service", "chateau.web"}, name
    for name in ("chateau.registry", "chateau.store", "chateau.delivery"):
        assert not any(t.startswith("chateau.handlers") for t in reaches(name)), name
        assert "chateau.protocol" not in reaches(name), name
    assert not any(t.startswith(("chateau.handlers", "chateau.delivery", "chateau.catchup"))
                   for t in reaches("chateau.store")), "storage must not know the chat"


def test_only_storage_imports_sqlalchemy() -> None:
    offenders = [
        name for name, path in modules().items()
        if not name.startswith(STORAGE)
        and any(t == "sqlalchemy" or t.startswith("sqlalchemy.") for t in imported_names(path, name))
    ]
    assert offenders == []


def test_long_modules_say_they_are_one_concern() -> None:
    long = []
    for name, path in modules().items():
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > MAX_LINES:
            docstring = ast.get_docstring(ast.parse(text)) or ""
            if "one concern" not in docstring.lower():
                long.append(f"{name}: {text.count(chr(10))} lines")
    assert long == []


def test_the_import_pattern_reads_every_form() -> None:
    source = """import { a, b } from "./one.js";
import * as two from './two.js';
import "./three.js";
export { c } from "./four.js";
const five = await import("./five.js");
// important("./not.js") and the word import in text are no imports
"""
    assert webmodules.imports(source) == ["./one.js", "./two.js", "./three.js", "./four.js", "./five.js"]


def test_the_web_client_modules_import_files_beside_them_without_a_circle() -> None:
    sources = webmodules.modules()
    assert "app.js" in sources and len(sources) > 1, "nothing was read"
    graph: dict[str, set[str]] = {}
    for name, source in sources.items():
        targets = webmodules.imports(source)
        assert all(t.startswith("./") and t[2:] in sources for t in targets), (name, targets)
        graph[name] = {t[2:] for t in targets}
    assert circles(graph) == []
    # Every module is reached from the page's one script.
    reached, todo = set(), ["app.js"]
    while todo:
        name = todo.pop()
        if name not in reached:
            reached.add(name)
            todo.extend(graph[name])
    assert reached == set(sources)


def test_the_web_client_puts_server_text_in_as_text_and_keeps_no_module_state() -> None:
    """Text reaches the page through textContent and the like, never as markup;
    state lives in the one state object app.js makes, not in module variables."""
    markup = re.compile(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|DOMParser"
                        r"|createContextualFragment|\beval\(|new Function|srcdoc")
    for name, source in webmodules.modules().items():
        assert not markup.search(source), (name, markup.search(source))
        assert not re.search(r"^(?:export )?(?:let|var) ", source, re.M), name
    page = (webmodules.STATIC / "index.html").read_text(encoding="utf-8")
    assert re.findall(r"<script\b[^>]*>", page) == ['<script type="module" src="app.js">']
