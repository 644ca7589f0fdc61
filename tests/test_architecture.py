"""The shape of the code: imports run one way, no module imports itself in a circle, and no
application file grows past what one reader can hold.

Imports run ``autoglm_site <- tenants <- chat <- workers -> engine``: a package may import the
packages to its left, ``engine`` (torch, no Django) imports none of ours, and the web side
(autoglm_site, tenants, chat) never imports workers or engine, so a web process never loads
torch. ``devtools`` (local services for make run/test/bench) stands alone. Lazy imports inside
functions count too: they are arrows all the same. One module of the engine is a shared leaf
that any package may import: ``engine.model_files`` (where a model's files are; it imports no
torch and nothing of ours, which a test below holds).
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# package -> the packages of ours it may import (besides itself)
ALLOWED = {
    "autoglm_site": set(),
    "tenants": {"autoglm_site"},
    "chat": {"autoglm_site", "tenants"},
    "workers": {"autoglm_site", "tenants", "chat", "engine"},
    "engine": set(),
    "devtools": set(),
    # the plugins that ship with autoglm: they see only the host's interfaces
    "autoglm_plugins": {"autoglm_site", "tenants"},
}
# Modules any package may import: torch-free leaves.
SHARED_LEAVES = {"engine.model_files"}
MAX_LINES = 500


def _application_files(root: Path = ROOT) -> list[Path]:
    files = []
    for package in ALLOWED:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).parts
            if "tests" in parts or "migrations" in parts or path.name.startswith("test_"):
                continue
            files.append(path)
    return files


def _module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, root: Path = ROOT, *, expand: bool = True) -> set[str]:
    """Every module of ours that ``path`` imports, at module level or inside a function.

    With ``expand``, ``from chat import events`` also yields ``chat.events`` (which may be a
    module), for the module graph."""
    module = _module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            if expand:
                found.update(f"{target}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in ALLOWED}


def _graph(root: Path) -> dict[str, set[str]]:
    files = _application_files(root)
    modules = {_module_name(path, root) for path in files}
    graph = {}
    for path in files:
        name = _module_name(path, root)
        graph[name] = {target for target in _imports(path, root) if target in modules} - {name}
    return graph


def upward_imports(root: Path = ROOT) -> list[str]:
    wrong = []
    for path in _application_files(root):
        package = _module_name(path, root).split(".")[0]
        for name in sorted(_imports(path, root, expand=False)):
            target = name.split(".")[0]
            if target != package and target not in ALLOWED[package] and name not in SHARED_LEAVES:
                wrong.append(f"{path.relative_to(root)} imports {name}")
    return wrong


def import_circles(root: Path = ROOT) -> list[list[str]]:
    """Tarjan's strongly connected components: a component of two or more modules is a circle."""
    graph = _graph(root)
    circles = []
    index, low, stack, on_stack, counter = {}, {}, [], set(), [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for succ in graph[node]:
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return circles


def test_it_imports_only_downward():
    assert upward_imports() == []


def test_the_shared_leaves_import_no_torch_and_nothing_of_ours():
    for module in SHARED_LEAVES:
        path = ROOT / (module.replace(".", "/") + ".py")
        tree = ast.parse(path.read_text())
        top_level = set()
        for node in tree.body:  # module level only: lazy imports run in the worker
            if isinstance(node, ast.Import):
                top_level.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level:
                top_level.add((node.module or "").split(".")[0])
        assert not top_level & {"torch", "transformers"}, module
        assert _imports(path) == set(), module


def test_it_has_no_import_circle():
    assert import_circles() == []


def test_it_keeps_application_files_small():
    big = [
        f"{path.relative_to(ROOT)} ({count} lines)"
        for path in _application_files()
        if (count := len(path.read_text().splitlines())) > MAX_LINES
    ]
    assert big == []


def test_the_checks_catch_an_upward_import_and_a_circle(tmp_path):
    for package in ("chat", "workers"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "chat" / "services.py").write_text(
        "def enqueue():\n    from workers.tasks import run\n"
    )
    (tmp_path / "workers" / "tasks.py").write_text("from chat import services\n")
    (tmp_path / "chat" / "a.py").write_text("from . import b\n")
    (tmp_path / "chat" / "b.py").write_text("from .a import x\n")
    assert upward_imports(tmp_path) == ["chat/services.py imports workers.tasks"]
    assert sorted(import_circles(tmp_path)) == [
        ["chat.a", "chat.b"],
        ["chat.services", "workers.tasks"],
    ]
