"""The CUDA kernels' machine code, read without a GPU.

Compiles ``cuda/gpu/render.cu`` for one architecture (``nvcc -cubin``, as the package's build
does, CUDA kernels only) and prints, per kernel, what ptxas chose (registers, stack frame,
spills, shared memory) and how many SASS instructions it emitted; ``--sass REGEX`` prints the
SASS of the kernels whose name matches, ``--compare REV`` builds a git revision's ``cuda/``
the same way and puts its figures beside this tree's. Static counts say where code grew or a
value went to local memory, not how long a kernel runs: time kernels with
``profile_step.py --timeline`` on a GPU. Examples::

    python benchmarks/sass_static.py
    python benchmarks/sass_static.py --compare HEAD~1
    python benchmarks/sass_static.py --sass "forward_kernel<float>" > fwd.sass

Needs ``nvcc``, and ``cuobjdump`` with ``nvdisasm`` from a CUDA toolkit or from PyPI
(``pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm``: they land in
``site-packages/nvidia/cu*/bin``, where this script also looks). Stop 32 of
``benchmarks/RESULTS.md`` found its kernel changes this way.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def find_tool(name: str) -> str:
    """Path of a CUDA tool: on PATH, or in a PyPI ``nvidia-cuda-*`` wheel's ``bin`` folder."""
    found = shutil.which(name)
    if found:
        return found
    site = sysconfig.get_paths()["purelib"]
    for path in sorted(glob.glob(os.path.join(site, "nvidia", "*", "bin", name))):
        if os.access(path, os.X_OK):
            return path
    sys.exit(f"{name} not found: install a CUDA toolkit, or `pip install nvidia-cuda-cuobjdump "
             f"nvidia-cuda-nvdisasm` for cuobjdump and nvdisasm")


def short_name(mangled: str) -> str:
    """``backward_kernel<float>`` for a mangled kernel name (c++filt where available)."""
    filt = shutil.which("c++filt")
    text = mangled
    if filt:
        text = subprocess.run([filt, mangled], capture_output=True, text=True).stdout.strip() or mangled
    text = re.sub(r"\(anonymous namespace\)::|[A-Za-z_]\w*::", "", text)
    return re.sub(r"^void ", "", text.split("(", 1)[0])


def compile_cubin(tree: Path, arch: str, out: Path) -> str:
    """Compiles ``tree``'s render.cu to ``out``; returns ptxas' report (``-Xptxas -v``)."""
    import jax  # only for the FFI headers

    cmd = [find_tool("nvcc"), "-std=c++17", f"-arch={arch}", "-O3", "-cubin",
           str(tree / "cuda" / "gpu" / "render.cu"), "-I", str(tree / "cuda" / "common"),
           "-I", str(tree / "cuda" / "gpu"), "-I", jax.ffi.include_dir(), "-o", str(out), "-Xptxas", "-v"]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"nvcc failed for {tree}:\n{run.stderr[-4000:]}")
    return run.stderr


def ptxas_table(report: str) -> dict[str, dict]:
    """Per kernel (mangled name): registers, stack, spill stores/loads, shared memory bytes."""
    kernels: dict[str, dict] = {}
    entry = props = None
    for line in report.splitlines():
        if m := re.search(r"Compiling entry function '([^']+)'", line):
            entry = m.group(1)
            kernels.setdefault(entry, {})
        elif m := re.search(r"Function properties for (\S+)", line):
            props = m.group(1)
        elif (m := re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)) \
                and props in kernels:
            kernels[props].update(stack=int(m.group(1)), spill_st=int(m.group(2)), spill_ld=int(m.group(3)))
        elif (m := re.search(r"Used (\d+) registers", line)) and entry:
            smem = re.search(r"(\d+) bytes smem", line)
            kernels[entry].update(regs=int(m.group(1)), smem=int(smem.group(1)) if smem else 0)
    return kernels


def sass_by_kernel(cubin: Path) -> dict[str, list[str]]:
    """SASS lines (address, instruction) of every function in ``cubin``."""
    env = dict(os.environ, PATH=os.path.dirname(find_tool("nvdisasm")) + os.pathsep + os.environ.get("PATH", ""))
    text = subprocess.run([find_tool("cuobjdump"), "-sass", str(cubin)], capture_output=True, text=True,
                          env=env, check=True).stdout
    out: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if m := re.search(r"Function : (\S+)", line):
            current = m.group(1)
            out[current] = []
        elif current and (m := re.search(r"/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;", line)):
            out[current].append(f"{m.group(1)}  {m.group(2)}")
    return out


def figures(tree: Path, arch: str, work: Path, tag: str) -> tuple[dict[str, dict], dict[str, list[str]]]:
    """ptxas figures and SASS of ``tree``'s kernels, by short name."""
    cubin = work / f"{tag}.cubin"
    table = ptxas_table(compile_cubin(tree, arch, cubin))
    sass = sass_by_kernel(cubin)
    named, code = {}, {}
    for mangled, row in table.items():
        name = short_name(mangled)
        named[name] = dict(row, sass=len(sass.get(mangled, [])))
        code[name] = sass.get(mangled, [])
    return named, code


def export_revision(rev: str, dest: Path) -> Path:
    """``rev``'s ``cuda/`` folder, written under ``dest``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "cuda"], capture_output=True, check=False)
    if archive.returncode != 0:
        sys.exit(f"git archive {rev} failed: {archive.stderr.decode()[-400:]}")
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


def row_text(row: dict | None) -> str:
    if not row:
        return f"{'-':>5s} {'-':>6s} {'-':>9s} {'-':>6s} {'-':>6s}"
    spill = f"{row.get('spill_st', 0)}/{row.get('spill_ld', 0)}"
    return f"{row.get('regs', 0):5d} {row.get('stack', 0):6d} {spill:>9s} {row.get('smem', 0):6d} {row['sass']:6d}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="sm_90", help="nvcc -arch (default sm_90, the H100/H200)")
    ap.add_argument("--compare", default="", metavar="REV", help="a git revision to put beside this tree")
    ap.add_argument("--sass", default="", metavar="REGEX", help="print the SASS of the kernels whose name matches")
    ap.add_argument("--all", action="store_true", help="list every kernel (default: the tile and set-up kernels)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        here, code = figures(ROOT, args.arch, work, "tree")
        there = {}
        if args.compare:
            there, _ = figures(export_revision(args.compare, work / "rev"), args.arch, work, "rev")

    if args.sass:
        pattern = re.compile(args.sass)
        for name, lines in code.items():
            if pattern.search(name):
                print(f"// {name}: {len(lines)} instructions")
                print("\n".join(lines))
        return

    cols = f"{'regs':>5s} {'stack':>6s} {'spill B':>9s} {'smem':>6s} {'SASS':>6s}"
    print(f"{'kernel':46s} {cols}" + (f"   | {args.compare}: {cols}" if args.compare else ""))
    for name in sorted(set(here) | set(there)):
        if not args.all and not re.search(r"(forward|backward|setup)_kernel", name):
            continue
        line = f"{name[:46]:46s} {row_text(here.get(name))}"
        if args.compare:
            line += f"   | {' ' * len(args.compare)}  {row_text(there.get(name))}"
        print(line)


if __name__ == "__main__":
    main()
