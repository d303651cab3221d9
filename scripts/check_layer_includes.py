#!/usr/bin/env python3
"""Fails when a layer folder includes a header of a layer its CMakeLists.txt
does not declare: each folder's `mt_add_layer(mt_NAME deps...)` must list
every project layer whose headers its .h and .cpp files include, so the
dependency graph CMake builds is the one the code has.

    scripts/check_layer_includes.py [SOURCE_ROOT]
"""
import pathlib
import re
import sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).resolve().parent.parent)
layer_call = re.compile(r"mt_add_layer\(\s*mt_(\w+)([^)]*)\)", re.S)
include = re.compile(r'^\s*#\s*include\s+"(\w+)/', re.M)

declared = {}
for cmake in sorted(root.glob("*/CMakeLists.txt")):
    m = layer_call.search(cmake.read_text())
    if m:
        declared[m.group(1)] = {m.group(1)} | set(re.findall(r"\bmt_(\w+)", m.group(2)))

problems = []
for layer, allowed in sorted(declared.items()):
    for source in sorted((root / layer).glob("*.[ch]*")):
        for used in include.findall(source.read_text()):
            if used in declared and used not in allowed:
                problems.append(f"{source.relative_to(root)} includes {used}/ but {layer}/CMakeLists.txt "
                                f"does not declare mt_{used} in mt_add_layer(mt_{layer} ...)")

for p in problems:
    print("layer_includes: " + p, file=sys.stderr)
print(f"layer_includes: {len(declared)} layers, {len(problems)} undeclared includes")
sys.exit(1 if problems else 0)
