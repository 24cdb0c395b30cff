"""The shape of the package: a core a student reads that imports nothing of the machinery around
it, imports without cycles, a training core that needs no plotting or widget library, and a
command line whose help is fast."""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest

from lab2.config import TrainConfig, setting
from lab2.ops import cli

PACKAGE = Path(__file__).resolve().parent.parent / "lab2"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    relative = Path(*name.split("."))
    return (PACKAGE.parent / relative).with_suffix(".py").is_file() or \
        (PACKAGE.parent / relative / "__init__.py").is_file()


def import_graph(package: Path = PACKAGE, *, outside: bool = False) -> dict[str, set[str]]:
    """Module → the lab2 modules it imports anywhere in its text (also inside functions); with
    ``outside``, the top-level names of the other packages it imports instead."""
    graph: dict[str, set[str]] = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package_of = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
                targets |= ({n.partition(".")[0] for n in names if not n.startswith("lab2")}
                            if outside else {n for n in names if n.startswith("lab2")})
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package_of.split(".")[:len(package_of.split(".")) - node.level + 1]
                    base = ".".join(base + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                if outside:
                    if not base.startswith("lab2") and base != "__future__":
                        targets.add(base.partition(".")[0])
                    continue
                if not base.startswith("lab2"):
                    continue
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.add(sub if is_module(sub) else base)
        graph[name] = targets - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


@pytest.mark.core
def test_the_graph_sees_real_imports():
    graph = import_graph()
    assert "lab2.train" in graph["lab2.ops.trainer"]
    assert "lab2.ops.loaders" in graph["lab2.ops.evaluation"]
    assert "lab2.ops.atomic" in graph["lab2.ops.cache"]        # from . import atomic
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert "torch" in import_graph(outside=True)["lab2.train"]


# ---- the rule: the core imports nothing of the machinery ----------------------------------------

#: The packages of the field the core may import, besides the standard library and itself.
FIELD_PACKAGES = {"torch", "torchvision", "albumentations", "cv2", "numpy", "PIL", "matplotlib",
                  "tqdm"}


def is_core(module: str) -> bool:
    """The core is every module of lab2 but the machinery (``lab2.ops``) and the entry point of
    ``python -m lab2`` (the command line's)."""
    return not (module == "lab2.ops" or module.startswith("lab2.ops.")
                or module == "lab2.__main__")


def rule_breaks(graph: dict[str, set[str]], outside: dict[str, set[str]]) -> list[str]:
    """Each import of a core module that the rule forbids: of the machinery, or of a package
    that is neither the standard library nor one of :data:`FIELD_PACKAGES`."""
    allowed = FIELD_PACKAGES | set(sys.stdlib_module_names)
    return sorted([f"{m} imports {t}" for m, targets in graph.items() if is_core(m)
                   for t in targets if not is_core(t)]
                  + [f"{m} imports {t}" for m, targets in outside.items() if is_core(m)
                     for t in targets if t not in allowed])


@pytest.mark.core
def test_no_core_module_imports_the_machinery_or_a_package_outside_the_field():
    assert rule_breaks(import_graph(), import_graph(outside=True)) == []


@pytest.mark.core
@pytest.mark.parametrize("added", ["from .ops.atomic import write_json",
                                   "import lab2.ops.locks", "import filelock"])
def test_the_rule_finds_an_import_that_breaks_it_even_inside_a_function(tmp_path, added):
    import shutil
    copy = tmp_path / "lab2"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    metrics = copy / "metrics.py"
    metrics.write_text(metrics.read_text(encoding="utf-8") + f"\n\ndef later():\n    {added}\n",
                       encoding="utf-8")
    target = added.split()[1].replace(".ops", "lab2.ops") if added.startswith("from") \
        else added.split()[1]
    assert rule_breaks(import_graph(copy), import_graph(copy, outside=True)) == [
        f"lab2.metrics imports {target.partition('.')[0] if target == 'filelock' else target}"]


@pytest.mark.core
def test_no_module_imports_one_that_imports_it_back():
    assert find_cycle(import_graph()) is None


def test_evaluation_does_not_depend_on_training():
    graph = import_graph()
    assert "lab2.ops.trainer" not in graph["lab2.ops.evaluation"]
    assert not any(t.startswith("lab2.report") for t in graph["lab2.data.dataset"])
    assert "lab2.data.summary" not in graph["lab2.data.dataset"]


def loaded_after(imports: str, modules: tuple[str, ...]) -> list[str]:
    """Which of ``modules`` a fresh interpreter has loaded after running ``imports``."""
    code = f"import sys\n{imports}\nprint(sorted(m for m in {modules!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    return ast.literal_eval(out.stdout.strip())


def test_the_training_core_imports_neither_matplotlib_nor_ipywidgets():
    assert loaded_after("import lab2.ops.cli, lab2.ops.trainer, lab2.ops.evaluation, "
                        "lab2.ops.experiment, lab2.predict, lab2.ops.runs, lab2.ops.loaders, "
                        "lab2.ops.runner",
                        ("matplotlib", "ipywidgets")) == []


def test_help_does_not_import_torch():
    code = ("import sys\n"
            "from lab2.ops import cli\n"
            "for command in ([], ['train'], ['experiment']):\n"
            "    try:\n"
            "        cli.main(command + ['--help'])\n"
            "    except SystemExit:\n"
            "        pass\n"
            "print('torch' in sys.modules, file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert "--batch-size" in out.stdout and out.stderr.strip() == "False"


def test_cache_and_audit_workers_import_neither_torch_nor_albumentations():
    """Under spawn (Windows, macOS) each pool worker imports its module afresh: with PyTorch it
    took 436 MiB instead of 42 (benchmarks/worker_memory.py)."""
    assert loaded_after("import lab2.ops.cache, lab2.ops.audit",
                        ("torch", "albumentations")) == []


def test_a_new_config_field_is_a_flag_without_a_second_edit(monkeypatch, capsys):
    @dataclasses.dataclass
    class Extended(TrainConfig):
        label_smoothing: float = setting(0.0, "cross-entropy label smoothing", minimum=0)
        scheduler: Literal["multistep", "cosine"] = setting("multistep", "learning-rate schedule")

    monkeypatch.setattr(cli, "TrainConfig", Extended)
    parser = cli.build_parser()
    args = parser.parse_args(["train", "--out", "x", "--model", "unet", "--label-smoothing", "0.1",
                              "--scheduler", "cosine", "--milestones", "5", "8", "--no-augment"])
    assert cli._overrides(args) == {"model": "unet", "label_smoothing": 0.1,
                                    "scheduler": "cosine", "milestones": (5, 8),
                                    "augment": False}
    with pytest.raises(SystemExit):
        parser.parse_args(["experiment", "--help"])
    shown = capsys.readouterr().out
    assert "--label-smoothing" in shown and "cross-entropy label smoothing" in shown
    assert "{multistep,cosine}" in shown
    assert "--model" not in shown          # the experiment trains every model itself
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["train", "--out", "x", "--label-smoothing", "-1"])
    assert exit_info.value.code == 2
    assert "must be at least 0" in capsys.readouterr().err


def test_environment_yml_parses_and_installs_this_package():
    import re

    import yaml
    root = PACKAGE.parent
    env = yaml.safe_load((root / "environment.yml").read_text(encoding="utf-8"))
    assert env["name"] == "lab2"
    deps = env["dependencies"]
    python = next(d for d in deps if isinstance(d, str) and d.startswith("python"))
    pyproject = (root / "pyproject.toml").read_text(encoding="utf-8")
    minimum = re.search(r'requires-python = "(.+)"', pyproject)[1]
    wanted = tuple(int(x) for x in re.findall(r"\d+", python)[:2])
    assert wanted >= tuple(int(x) for x in re.findall(r"\d+", minimum)[:2])
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    assert "-e .[dev]" in pip and "pip" in deps
    # the locked versions, which pin the Python they were made with
    assert "-c requirements-lock.txt" in pip and wanted == (3, 11)
    locked = (root / "requirements-lock.txt").read_text(encoding="utf-8").splitlines()
    pins = dict(line.split("==") for line in locked if line and not line.startswith("#"))
    assert {"torch", "torchvision", "albumentations", "nbval"} <= set(pins)


def test_every_link_of_the_docs_leads_to_a_file_of_the_repository():
    """The project stands alone: each relative link of its Markdown pages (README, docs/,
    benchmarks/) and notebooks names a file that a clone holds, not one beside the clone."""
    import re
    import subprocess as sp
    root = PACKAGE.parent
    files = sp.run(["git", "ls-files"], cwd=root, capture_output=True, text=True).stdout.split()
    checked = 0
    for name in files:
        if not name.endswith((".md", ".ipynb")):
            continue
        text = (root / name).read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)#\s]+)", text):
            if "://" in target or target.startswith("mailto:"):
                continue
            path = ((root / name).parent / target).resolve()
            assert path.is_relative_to(root) and path.exists(), (name, target)
            checked += 1
    assert checked >= 5           # the README links to docs/ and benchmarks/


def binary_mode(mode: ast.expr | None) -> bool:
    """Whether an ``open`` mode is binary: ``"rb"``, or ``"ab" if ... else "wb"``."""
    if isinstance(mode, ast.IfExp):
        return binary_mode(mode.body) and binary_mode(mode.orelse)
    return isinstance(mode, ast.Constant) and "b" in mode.value


def text_calls_without_encoding(source: str) -> list[int]:
    """Lines of ``open``, ``.read_text`` and ``.write_text`` calls in text mode with no
    ``encoding`` (lab2's own ``atomic.write_text`` writes UTF-8)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or any(k.arg == "encoding" for k in node.keywords):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in ("read_text", "write_text"):
            if not (isinstance(func.value, ast.Name) and func.value.id == "atomic"):
                lines.append(node.lineno)
        elif isinstance(func, ast.Name) and func.id == "open":
            mode = node.args[1] if len(node.args) > 1 else next(
                (k.value for k in node.keywords if k.arg == "mode"), None)
            if not binary_mode(mode):
                lines.append(node.lineno)
    return lines


def test_the_check_for_text_encodings_finds_each_kind_of_call():
    source = ('open(p)\nopen(p, "w")\nopen(p, "rb")\nopen(p, mode="wb")\np.read_text()\n'
              'p.write_text(t)\natomic.write_text(p, t)\np.read_text(encoding="utf-8")\n'
              'open(p, "ab" if a else "wb")\nopen(p, "ab" if a else "w")\n')
    assert text_calls_without_encoding(source) == [1, 2, 5, 6, 10]


def test_text_files_are_read_and_written_as_utf8():
    """Without ``encoding``, Windows reads and writes text in its legacy code page (cp1252):
    Table 1's "−" came back as "âˆ’". Every text file lab2 and its tests touch is UTF-8."""
    root = PACKAGE.parent
    sources = {path: path.read_text(encoding="utf-8")
               for folder in ("lab2", "benchmarks", "tests", "notebooks")
               for path in sorted((root / folder).rglob("*.py"))}
    for notebook in sorted((root / "notebooks").glob("*.ipynb")):   # cell by cell, magics out
        cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
        for number, cell in enumerate(cells):
            if cell["cell_type"] == "code":
                sources[Path(f"{notebook}, cell {number}")] = "".join(
                    line for line in cell["source"] if not line.startswith(("%", "!")))
    found = [f"{path.relative_to(root)}:{line}" for path, source in sources.items()
             for line in text_calls_without_encoding(source)]
    assert not found, f"add encoding=\"utf-8\" to: {', '.join(found)}"


def test_importing_lab2_opens_no_network_connection():
    # albumentations checks pypi.org for updates on import unless told not to (lab2/__init__.py).
    code = ("import sys\n"
            "calls = []\n"
            "sys.addaudithook(lambda event, args: calls.append(event) if event in "
            "('socket.connect', 'socket.getaddrinfo') else None)\n"
            "import lab2.augment, lab2.ops.trainer, lab2.ops.cli\n"
            "print(calls)")
    env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout
