#!/usr/bin/env python3
"""Keeps the docs, and the comments, true to the tree. Fails when

  - a source file of a layer folder (runtime/ ... launch/) is missing from
    the layout table of docs/design.md section 1, or its row has no purpose;
  - that table names a file that does not exist;
  - README.md, a page of docs/, or a source, script or build file names a
    file of the repository that does not exist (`model/router.h`,
    `scripts/demo.sh`, `model/router.{h,cpp}`), from the root or from the
    naming file's folder.

    scripts/check_docs.py [SOURCE_ROOT]
"""
import pathlib
import re
import subprocess
import sys

LAYER_FOLDERS = ["runtime", "parallel", "model", "optim", "checkpoint", "data", "generation", "training",
                 "planner", "launch"]
TOP_FOLDERS = LAYER_FOLDERS + ["tests", "bench", "scripts", "configs", "fuzz", "docs", ".ci"]
# A path of the repository as the docs write it: FOLDER/.../NAME.EXT or NAME.{h,cpp}.
PATH = re.compile(r"(?<![\w./-])((?:%s)/[\w./-]*?[\w-]+\.(?:\{[\w,]+\}|[a-z0-9]+))(?!\.?[\w{])"
                  % "|".join(re.escape(f) for f in TOP_FOLDERS))


def expand(path):
    """model/router.{h,cpp} -> model/router.h, model/router.cpp"""
    m = re.match(r"(.*)\.\{([\w,]+)\}$", path)
    return [f"{m.group(1)}.{ext}" for ext in m.group(2).split(",")] if m else [path]


def layout_section(design):
    start = design.index("## 1. Layout")
    end = design.index("\n## ", start + 1)
    return design[start:end]


def check_layout_table(root, problems):
    rows = [line for line in layout_section((root / "docs/design.md").read_text()).splitlines()
            if line.startswith("| `")]
    listed = set()
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        names = re.findall(r"`([^`]+)`", cells[0])
        if len(cells) < 2 or not cells[1]:
            problems.append(f"docs/design.md section 1: the row of {cells[0]} has no purpose")
        for name in names:
            for path in expand(name):
                if path.split("/")[0] not in LAYER_FOLDERS:
                    continue
                listed.add(path)
                if not (root / path).is_file():
                    problems.append(f"docs/design.md section 1 names {path}, which does not exist")
    for folder in LAYER_FOLDERS:
        for source in sorted((root / folder).glob("*.[ch]*")):
            path = f"{folder}/{source.name}"
            if path not in listed:
                problems.append(f"{path} is missing from the layout table of docs/design.md section 1")


NAMING_FILE = re.compile(r"(\.(md|cpp|h|py|sh|txt|toml|sbatch)|CMakeLists\.txt)$")


# The repository's files: git's list, or outside a checkout every file but
# build outputs.
def naming_files(root):
    git = subprocess.run(["git", "-C", str(root), "ls-files", "--cached", "--others", "--exclude-standard"],
                         capture_output=True, text=True)
    if git.returncode == 0:
        listed = git.stdout.split()
    else:
        listed = [str(f.relative_to(root)) for f in root.rglob("*")
                  if not any(part.startswith(("build", ".git", "demo_out", "bench_out"))
                             for part in f.relative_to(root).parts)]
    return [root / f for f in listed if NAMING_FILE.search(f) and (root / f).is_file()]


def check_named_paths(root, problems):
    for page in naming_files(root):
        for number, line in enumerate(page.read_text(errors="replace").splitlines(), 1):
            for name in PATH.findall(line):
                for path in expand(name.rstrip(".")):
                    if not (root / path).exists() and not (page.parent / path).exists():
                        problems.append(f"{page.relative_to(root)}:{number} names {path}, which does not exist")


def main():
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).resolve().parent.parent)
    problems = []
    check_layout_table(root, problems)
    check_named_paths(root, problems)
    for p in problems:
        print("check_docs: " + p, file=sys.stderr)
    print(f"check_docs: {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
