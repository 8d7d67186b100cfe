#!/usr/bin/env python3
"""Fails when a file includes a layer it may not see (docs/design.md, "Layers").

The compiler already refuses most such includes (each library exports only its own include
root), but a header that no translation unit of its own library compiles would slip through;
this scans every tracked C++/CUDA file, headers included.

    python3 scripts/check_layers.py [SOURCE_DIR]
"""
import pathlib
import re
import subprocess
import sys

# folder -> the folders its files may include (besides its own). Transitive closure is spelled
# out: a layer may include what the layers below it export.
BASE = {"base"}
ALLOWED = {
    "base": set(),
    "kernels": BASE,
    "memory": BASE,
    "sampling": BASE,
    "model": BASE | {"kernels", "memory", "sampling"},
    "scheduler": BASE | {"memory", "sampling"},
    "executor": BASE | {"kernels", "memory", "sampling", "model", "scheduler"},
    "serving": BASE | {"kernels", "memory", "sampling", "model", "scheduler", "executor"},
    "frontends/common": BASE | {"kernels", "memory", "sampling", "model", "scheduler", "executor",
                                "serving"},
    "eval": BASE | {"kernels", "memory", "sampling", "model"},
}
FRONTEND_DEPS = ALLOWED["frontends/common"] | {"frontends/common"}
ALLOWED["frontends/http"] = FRONTEND_DEPS
# lightserve/v1/*.pb.h and the standard grpc/health, grpc/reflection ones (proto/)
ALLOWED["frontends/grpc"] = FRONTEND_DEPS | {"lightserve", "grpc"}
# tests/frontends/*_test.cpp compare the two frontends (no sources live in frontends/ itself).
ALLOWED["frontends"] = FRONTEND_DEPS | {"frontends/http", "frontends/grpc", "lightserve"}
ALLOWED["app"] = set(ALLOWED) | {"frontends/http", "frontends/grpc", "lightserve"}
ALLOWED["bench"] = BASE | {"kernels", "memory", "sampling", "model"}
# A client of the server: its wire contract (proto/) and base/ only.
ALLOWED["loadtest"] = BASE | {"lightserve"}

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
SOURCE = re.compile(r"\.(h|hpp|cpp|cc|cu|cuh|inc)$")


def layer_of(path: str):
    """The layer a path (a file or an include) belongs to, or None (tests, proto, third party)."""
    for name in sorted(ALLOWED, key=len, reverse=True):
        if path == name or path.startswith(name + "/"):
            return name
    return None


def main() -> int:
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
    files = subprocess.check_output(["git", "ls-files"], cwd=root, text=True).split()
    problems = []
    for f in files:
        if not SOURCE.search(f):
            continue
        # tests/<layer>/ sees what <layer> sees, plus tests/ (its helpers in tests/support/).
        is_test = f.startswith("tests/") and not f.startswith("tests/support/")
        layer = layer_of(f[len("tests/"):] if is_test else f)
        if layer is None:
            continue
        text = (root / f).read_text(errors="replace")
        for m in INCLUDE.finditer(text):
            target = m.group(1)
            if "/" not in target:  # same-folder include, e.g. "ops_impl.inc"
                continue
            to = layer_of(target) or target.split("/")[0]
            if to == layer or to in ALLOWED[layer] or (is_test and to == "tests"):
                continue
            line = text.count("\n", 0, m.start()) + 1
            problems.append(f"{f}:{line}: {layer}/ may not include \"{target}\" ({to}/)")
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} include(s) break the layering (docs/design.md, Layers)")
        return 1
    print(f"layering holds over {len(files)} tracked files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
