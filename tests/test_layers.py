"""The layers of ARCHITECTURE.md, enforced: imports only run down, there are no import cycles, and only the
command-line modules import project modules inside functions (to start fast).

Every import of every project module is read from its AST (module level, inside functions and under
``if TYPE_CHECKING:`` alike), resolved to the project module it names, and checked against ``LAYERS``.
"""

from __future__ import annotations

import ast
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]

# Lowest first. A module may import its own unit and the units of lower layers; units that share a layer are
# independent of each other. A module belongs to the longest unit that names it. Keep ARCHITECTURE.md's table
# the same.
LAYERS: list[tuple[str, list[str]]] = [
    ("core, shipped pipelines", ["tessera.core", "tessera.models"]),
    ("models and the shapes world", ["tessera.tokenizer", "tessera.prior", "tessera.captioner",
                                     "tessera.pipelines.shapes"]),
    ("data", ["tessera.pipelines.data"]),
    ("tokenized datasets, evaluation", ["tessera.pipelines.tokens", "tessera.pipelines.evaluation"]),
    ("pipeline folder, call checks, outputs, reranking", ["tessera.pipelines.pipeline_folder",
                                                          "tessera.pipelines.call_checks",
                                                          "tessera.pipelines.outputs", "tessera.pipelines.reranking"]),
    ("inference", ["tessera.pipelines.text_to_image", "tessera.pipelines.image_to_text"]),
    ("editing", ["tessera.pipelines.editing"]),
    ("training", ["tessera.pipelines.training"]),
    ("commands", ["tessera.pipelines.cli", "train"]),
    # the package's public names, loaded lazily by name (only its TYPE_CHECKING block imports them), and
    # ``python -m tessera``
    ("public names", ["tessera", "tessera.__main__"]),
]
# Modules whose function-level project imports are allowed: command lines import their subcommands' code late.
LATE_IMPORTERS = ("tessera.pipelines.cli.command", "tessera.pipelines.cli.tools", "train")


def package_folders(root: Path) -> dict[str, str]:
    """Import package -> repository folder, from pyproject.toml's setuptools package-dir table."""
    table = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    return table["tool"]["setuptools"]["package-dir"]


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the project module imported
    path: Path
    line: int
    in_function: bool

    def where(self) -> str:
        return f"{self.path}:{self.line}: {self.source} imports {self.target}"


def project_modules(root: Path) -> dict[str, Path]:
    """Every project module by its import name (``tessera.tokenizer.model`` for tokenizer/model.py) and
    ``train`` (train.py, run from the repository root)."""
    modules = {"train": root / "train.py"} if (root / "train.py").is_file() else {}
    for package, folder in package_folders(root).items():
        for path in sorted((root / folder).rglob("*.py")) if (root / folder).is_dir() else []:
            parts = list(path.relative_to(root / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            name = ".".join([package, *parts])
            modules.setdefault(name, path)  # tessera/core/ is both tessera.core and a folder of tessera
    return modules


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest project module that ``name`` (a module or ``module.attribute``) lies in."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


class _ImportVisitor(ast.NodeVisitor):
    def __init__(self, source: str, path: Path, modules: dict[str, Path]):
        self.source, self.path, self.modules = source, path, modules
        self.depth = 0
        self.found: list[Import] = []

    def _add(self, name: str, node: ast.AST) -> None:
        target = _resolve(name, self.modules)
        if target is not None and target != self.source:
            self.found.append(Import(self.source, target, self.path, node.lineno, self.depth > 0))

    def visit_FunctionDef(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:  # relative import: resolve against the importing module's package
            package = self.source.split(".")
            if not self.path.name == "__init__.py":
                package = package[:-1]
            package = package[: len(package) - node.level + 1]
            base = ".".join(package + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        for alias in node.names:
            self._add(f"{base}.{alias.name}", node)  # a submodule, or an attribute of ``base``


def collect_imports(root: Path) -> list[Import]:
    modules = project_modules(root)
    found = []
    for name, path in modules.items():
        visitor = _ImportVisitor(name, path.relative_to(root), modules)
        visitor.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        found += visitor.found
    return found


def unit_of(module: str) -> tuple[int, str] | None:
    """(layer index, unit) of a module: the longest unit that names it; None for one outside every layer."""
    matches = [(len(unit), index, unit) for index, (_, units) in enumerate(LAYERS) for unit in units
               if module == unit or module.startswith(unit + ".")]
    if not matches:
        return None
    _, index, unit = max(matches)
    return index, unit


def layer_violations(imports: list[Import]) -> list[str]:
    problems = []
    for imp in imports:
        source, target = unit_of(imp.source), unit_of(imp.target)
        if source is None:
            problems.append(f"{imp.path}: module {imp.source} belongs to no layer; add it to LAYERS and ARCHITECTURE.md")
        elif target is None:
            problems.append(f"{imp.where()}, which belongs to no layer")
        elif source[1] == target[1]:
            continue
        elif target[0] > source[0]:
            problems.append(f"{imp.where()}: an upward import ({LAYERS[source[0]][0]} -> {LAYERS[target[0]][0]})")
        elif target[0] == source[0]:
            problems.append(f"{imp.where()}: {source[1]} and {target[1]} share the layer "
                            f"'{LAYERS[source[0]][0]}' and must stay independent")
    return sorted(set(problems))


def import_cycles(imports: list[Import]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        graph.setdefault(imp.source, set()).add(imp.target)
        graph.setdefault(imp.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def cycle_report(imports: list[Import]) -> list[str]:
    lines = []
    for cycle in import_cycles(imports):
        members = set(cycle)
        edges = [imp.where() for imp in imports if imp.source in members and imp.target in members]
        lines.append(f"import cycle {' <-> '.join(cycle)}:\n    " + "\n    ".join(sorted(set(edges))))
    return lines


def late_import_violations(imports: list[Import]) -> list[str]:
    return sorted({f"{imp.where()} inside a function; import it at the top of the module (only the command "
                   "lines import late, for start-up time)"
                   for imp in imports if imp.in_function and imp.source not in LATE_IMPORTERS})


def check(root: Path) -> list[str]:
    imports = collect_imports(root)
    return layer_violations(imports) + cycle_report(imports) + late_import_violations(imports)


def test_layers_imports_run_down_without_cycles():
    problems = check(ROOT)
    assert not problems, "\n" + "\n".join(problems)


def test_layers_every_module_belongs_to_a_layer():
    orphans = [name for name in project_modules(ROOT) if unit_of(name) is None]
    assert not orphans


@pytest.fixture()
def project_copy(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copy(ROOT / "train.py", tmp_path / "train.py")
    for folder in set(package_folders(ROOT).values()):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    assert check(tmp_path) == []
    return tmp_path


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text(encoding="utf-8") + text, encoding="utf-8")


def test_layers_fail_on_a_planted_upward_import(project_copy: Path):
    _append(project_copy / "tokenizer" / "model.py", "\nfrom tessera.pipelines.text_to_image import TextToImagePipeline\n")
    problems = check(project_copy)  # the upward import, and the cycle it closes
    assert any("tokenizer/model.py" in problem and "upward import" in problem for problem in problems)
    assert all("tokenizer/model.py" in problem for problem in problems)


def test_layers_fail_on_a_planted_sideways_import(project_copy: Path):
    _append(project_copy / "prior" / "config.py", "\nimport tessera.tokenizer.config\n")
    problems = check(project_copy)
    assert len(problems) == 1 and "must stay independent" in problems[0]


def test_layers_fail_on_a_planted_cycle(project_copy: Path):
    _append(project_copy / "tessera" / "core" / "io.py", "\nfrom tessera.core.config import JSONConfig\n")
    problems = check(project_copy)
    assert len(problems) == 1 and "import cycle" in problems[0] and "tessera.core.io" in problems[0]


def test_layers_fail_on_a_planted_function_level_import(project_copy: Path):
    _append(project_copy / "prior" / "sampling.py", "\n\ndef late():\n    from tessera.prior.config import PriorConfig\n")
    problems = check(project_copy)
    assert len(problems) == 1 and "inside a function" in problems[0]
