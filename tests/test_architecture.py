"""The package's architecture, read from its source: layers, import cycles, private names.

The rules are those of docs/DESIGN.md §2. Every import counts, including
imports inside functions; the scan reads the source, so it needs no build.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "diffbmp_jax"

# Layer -> the layers it may import (besides itself). Bottom up.
ALLOWED = {
    "validation": set(),
    "files": set(),
    "assets": set(),
    "scene": {"validation", "files"},
    "io": {"validation", "files", "scene"},
    "rendering": {"validation", "files", "scene"},
    "stamps": {"validation", "files", "scene", "io"},
    "fitting": {"validation", "files", "scene", "io", "rendering"},
    "clip": {"validation", "files", "io"},
    "tasks": {"validation", "files", "scene", "io", "rendering", "stamps", "fitting", "clip"},
    "export": {"validation", "files", "scene", "io", "rendering", "stamps"},
    "cli": {"validation", "files", "scene", "io", "rendering", "stamps", "fitting", "clip", "tasks", "export",
            "assets", "__init__"},
    "__main__": {"cli"},
    "__init__": {"validation", "files", "scene", "io", "rendering", "stamps", "fitting", "clip", "tasks",
                 "export"},
}


def module_name(path: pathlib.Path, root: pathlib.Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def package_modules() -> dict:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


MODULES = package_modules()


def imports_of(path: pathlib.Path):
    """``(node, imported module, names)`` for every import of the package in ``path``, at any depth."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "diffbmp_jax":
                    yield node, alias.name, []
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "diffbmp_jax":
            yield node, node.module, [a.name for a in node.names]


def edges(name: str, path: pathlib.Path) -> set:
    """Package modules that ``name`` imports (a ``from package import module`` counts as the module)."""
    out = set()
    for _, target, names in imports_of(path):
        hits = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
        out.update(hits or [target])
    out.discard(name)
    return out


def layer(name: str) -> str:
    parts = name.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def test_every_import_is_absolute():
    relative = [f"{module_name(p)}:{node.lineno}" for p in MODULES.values()
                for node in ast.walk(ast.parse(p.read_text())) if isinstance(node, ast.ImportFrom) and node.level]
    assert not relative, f"relative imports: {relative}"


def test_imports_only_go_down_the_layers():
    bad = []
    for name, path in MODULES.items():
        own = layer(name)
        for target in edges(name, path):
            other = layer(target)
            if other != own and other not in ALLOWED[own]:
                bad.append(f"{name} imports {target}")
    assert not bad, "\n".join(bad)


def test_the_library_never_imports_the_cli():
    bad = [f"{name} imports {t}" for name, path in MODULES.items() if layer(name) not in ("cli", "__main__")
           for t in edges(name, path) if layer(t) == "cli"]
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    graph = {name: edges(name, path) for name, path in MODULES.items()}
    state, stack, cycles = {}, [], []

    def visit(n):
        state[n] = "open"
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == "open":
                cycles.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = "done"

    for n in sorted(graph):
        if n not in state:
            visit(n)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def _private_uses(path: pathlib.Path, modules: dict):
    """Underscore names of package modules that ``path`` imports or reads as attributes."""
    tree = ast.parse(path.read_text(), filename=str(path))
    aliases = {}  # local name -> package module it stands for
    found = []
    for node, target, names in imports_of(path):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname:
                    aliases[a.asname] = a.name
            continue
        for a in node.names:
            full = f"{target}.{a.name}"
            if full in modules:
                aliases[a.asname or a.name] = full
                if a.name.startswith("_"):
                    found.append(f"{node.lineno}: module {full}")
            elif a.name.startswith("_"):
                found.append(f"{node.lineno}: {full}")
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            found.append(f"{node.lineno}: {aliases[node.value.id]}.{node.attr}")
    return found


@pytest.mark.parametrize("folder", ["diffbmp_jax", "tests", "benchmarks", "examples"])
def test_no_module_uses_another_modules_private_names(folder):
    bad = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        bad += [f"{path.relative_to(ROOT)}:{hit}" for hit in _private_uses(path, MODULES)]
    assert not bad, "\n".join(bad)


def test_package_inits_only_re_export():
    bad = []
    for name, path in MODULES.items():
        if path.name != "__init__.py":
            continue
        for node in ast.parse(path.read_text()).body:
            ok = isinstance(node, (ast.Import, ast.ImportFrom)) or (
                isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))  # docstrings
            if isinstance(node, ast.FunctionDef):  # lazy re-exports (PEP 562)
                ok = node.name in ("__getattr__", "__dir__")
            if isinstance(node, (ast.Assign, ast.AnnAssign)):  # __all__, __version__, constants
                ok = isinstance(node.value, (ast.List, ast.Tuple, ast.Dict, ast.Constant, ast.BinOp, ast.Call,
                                             ast.Attribute))
            if not ok:
                bad.append(f"{name}:{node.lineno} {type(node).__name__}")
    assert not bad, "\n".join(bad)


def test_the_scan_sees_real_imports():
    """The rules above cannot pass vacuously: the scan finds the imports it must find."""
    assert len(MODULES) > 40
    engine = edges("diffbmp_jax.fitting.engine", MODULES["diffbmp_jax.fitting.engine"])
    assert {"diffbmp_jax.fitting.loop", "diffbmp_jax.fitting.respawn", "diffbmp_jax.scene.atlas"} <= engine
    sample = ROOT / "tests" / "test_architecture.py"
    assert _private_uses(sample, MODULES) == []


def test_python_run_from_the_checkout_root_renders_with_the_compiled_kernels():
    """The source folder shadows the installed package there; the kernels live outside it."""
    import subprocess
    import sys
    script = ("import numpy as np, diffbmp_jax as db\n"
              "atlas = db.Atlas.from_arrays(np.ones((1, 4, 4), np.float32))\n"
              "params = db.Primitives.create(xy=[[4.0, 4.0]], scale=2.0)\n"
              "c, a = db.render(params, atlas, height=8, width=8, backend='cpu')\n"
              "print(db.__file__, float(a[4, 4]))\n")
    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=dict(env, JAX_PLATFORMS="cpu"),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    path, alpha = out.stdout.split()
    assert pathlib.Path(path).resolve() == PACKAGE / "__init__.py"  # the source folder, not site-packages
    assert float(alpha) > 0.4


def test_the_package_and_the_cli_parser_load_without_jax():
    """``import diffbmp_jax`` and ``diffbmp-jax --help`` import no JAX, Flax, transformers or torch;
    every public name still resolves on first use."""
    script = ("import sys\n"
              "import diffbmp_jax as db\n"
              "from diffbmp_jax.cli import app\n"
              "app.build_parser()\n"
              "heavy = [m for m in ('jax', 'flax', 'transformers', 'torch') if m in sys.modules]\n"
              "names = [n for n in db.__all__ if getattr(db, n, None) is None]\n"
              "print('HEAVY', heavy, 'MISSING', names, callable(db.render), db.Atlas.__name__)\n")
    out = _python_in_checkout(script)
    assert "HEAVY [] MISSING [] True Atlas" in out, out


def test_fits_other_than_text_need_no_flax():
    """Flax is the ``clip`` extra's: image, video and regions fits import without it, and text guidance
    says which extra to install."""
    script = ("import sys\n"
              "sys.modules['flax'] = None  # as if the clip extra were not installed\n"
              "import diffbmp_jax as db\n"
              "from diffbmp_jax.cli import app, video, batch\n"
              "found = [f.__name__ for f in (db.fit, db.fit_batch, db.fit_video, db.fit_regions)]\n"
              "try:\n"
              "    db.fit_text\n"
              "except ImportError as e:\n"
              "    found.append(str(e))\n"
              "print('FOUND', found)\n")
    out = _python_in_checkout(script)
    assert "FOUND ['fit', 'fit_batch', 'fit_video', 'fit_regions', " in out, out
    assert "needs flax and transformers: pip install 'diffbmp-jax[clip]'" in out, out


def test_a_fit_runs_without_optax():
    """The fitting engine's Adam is its own: a fit (and the video and batch fits' modules) import and
    run with Optax absent, which only the examples and tests use."""
    script = ("import sys\n"
              "sys.modules['optax'] = None  # as if Optax were not installed\n"
              "import numpy as np\n"
              "import diffbmp_jax as db\n"
              "from diffbmp_jax.fitting import batch\n"
              "from diffbmp_jax.tasks import video\n"
              "target = np.zeros((24, 24, 3), np.float32); target[6:18, 6:18] = 1.0\n"
              "yy, xx = np.mgrid[-1:1:16j, -1:1:16j]\n"
              "atlas = db.Atlas.from_arrays((xx ** 2 + yy ** 2 < 0.85).astype(np.float32)[None])\n"
              "r = db.fit(target, atlas, num_primitives=8, steps=4, key=0, progress=False, backend='reference')\n"
              "print('PSNR', np.isfinite(r.psnr), len(r.history['loss']))\n")
    out = _python_in_checkout(script)
    assert "PSNR True" in out, out


def _python_in_checkout(script: str) -> str:
    """``script`` run by a fresh interpreter from the checkout's root (its source shadows an installed
    copy): what it printed, then the tail of its stderr."""
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    return out.stdout + out.stderr[-2000:]
