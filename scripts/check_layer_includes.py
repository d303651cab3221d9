#!/usr/bin/env python3
"""Fails when the layers' includes break their one-way order
(docs/design.md section 1):

  - a layer folder includes a header of a layer it may not depend on
    (LAYERS below: each layer and the layers beneath it);
  - a folder's CMakeLists.txt declares a layer it may not depend on in
    `mt_add_layer(mt_NAME deps...)`, or misses one whose headers it includes,
    so the graph CMake builds is the one the code has;
  - a layer folder is not in LAYERS.

    scripts/check_layer_includes.py [SOURCE_ROOT]
    scripts/check_layer_includes.py --self-test [SOURCE_ROOT]

--self-test copies the tree's layers to a temporary directory, plants a
wrong include (planner/ including launch/), and fails unless the check
catches it and passes the unchanged copy.
"""
import pathlib
import re
import shutil
import sys
import tempfile

# Each layer with the layers it may include, in dependency order.
LAYERS = {
    "runtime": [],
    "parallel": ["runtime"],
    "model": ["parallel", "runtime"],
    "optim": ["model", "parallel", "runtime"],
    "tokenizer": ["runtime"],
    "checkpoint": ["optim", "model", "parallel", "tokenizer", "runtime"],
    "data": ["tokenizer", "runtime"],
    "generation": ["model", "parallel", "data", "tokenizer", "runtime"],
    "training": ["checkpoint", "generation", "optim", "model", "data", "parallel", "tokenizer", "runtime"],
    "planner": ["model", "parallel", "data", "runtime"],
    "launch": ["training", "planner", "generation", "checkpoint", "optim", "model", "data", "parallel",
               "tokenizer", "runtime"],
}

LAYER_CALL = re.compile(r"mt_add_layer\(\s*mt_(\w+)([^)]*)\)", re.S)
INCLUDE = re.compile(r'^\s*#\s*include\s+"(\w+)/', re.M)


def problems_of(root):
    declared = {}
    for cmake in sorted(root.glob("*/CMakeLists.txt")):
        m = LAYER_CALL.search(cmake.read_text())
        if m:
            declared[m.group(1)] = set(re.findall(r"\bmt_(\w+)", m.group(2)))
    problems = []
    for layer in sorted(set(declared) - set(LAYERS)):
        problems.append(f"{layer}/ is a layer that LAYERS in scripts/check_layer_includes.py does not place")
    for layer, deps in sorted(declared.items()):
        allowed = set(LAYERS.get(layer, []))
        for dep in sorted(deps - allowed):
            if dep in LAYERS:
                problems.append(f"{layer}/CMakeLists.txt declares mt_{dep}, a layer {layer}/ may not depend on")
        for source in sorted((root / layer).glob("*.[ch]*")):
            for used in sorted(set(INCLUDE.findall(source.read_text()))):
                if used == layer or used not in LAYERS:
                    continue
                where = source.relative_to(root)
                if used not in allowed:
                    problems.append(f"{where} includes {used}/, which {layer}/ may not depend on "
                                    f"(it may include {', '.join(LAYERS[layer]) or 'no other layer'})")
                elif used not in deps:
                    problems.append(f"{where} includes {used}/ but {layer}/CMakeLists.txt does not declare "
                                    f"mt_{used} in mt_add_layer(mt_{layer} ...)")
    return declared, problems


def check(root):
    declared, problems = problems_of(root)
    for p in problems:
        print("layer_includes: " + p, file=sys.stderr)
    print(f"layer_includes: {len(declared)} layers, {len(problems)} problems")
    return 1 if problems else 0


def self_test(root):
    with tempfile.TemporaryDirectory() as tmp:
        copy = pathlib.Path(tmp)
        for layer in LAYERS:
            shutil.copytree(root / layer, copy / layer)
        if problems_of(copy)[1]:
            print("layer_includes self-test: the unchanged tree already fails", file=sys.stderr)
            return 1
        planted = copy / "planner" / "plan.cpp"
        planted.write_text('#include "launch/options.h"\n' + planted.read_text())
        found = [p for p in problems_of(copy)[1] if "planner/plan.cpp includes launch/" in p]
        if not found:
            print("layer_includes self-test: planner/ including launch/ went unnoticed", file=sys.stderr)
            return 1
        print(f"layer_includes self-test: caught: {found[0]}")
        return 0


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--self-test"]
    tree = pathlib.Path(args[0] if args else pathlib.Path(__file__).resolve().parent.parent)
    sys.exit(self_test(tree) if "--self-test" in sys.argv else check(tree))
