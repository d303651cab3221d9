#!/usr/bin/python3
"""Reads a moetrain checkpoint with h5py alone, as a user's script would.

    read_checkpoint.py CHECKPOINT.h5

Prints one JSON object: the root attributes (JSON strings such as `config`
parsed) and, for every dataset, its dtype, shape and L2 norm (float64).
Exits non-zero, naming the dataset, if one is not float32 or not a plain
array. Used by tests/launch/test_inspect.cpp to check that the file needs
no moetrain code to read.
"""

import json
import sys

import h5py
import numpy as np


def attribute(value):
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
            return parsed if isinstance(parsed, dict) else value
        except ValueError:
            return value
    if isinstance(value, np.generic):
        return value.item()
    return value


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: read_checkpoint.py CHECKPOINT.h5")
    out = {"attributes": {}, "datasets": {}}
    with h5py.File(sys.argv[1], "r") as f:
        for name, value in f.attrs.items():
            out["attributes"][name] = attribute(value)

        def visit(name, obj):
            if not isinstance(obj, h5py.Dataset):
                return
            if obj.dtype != np.float32:
                sys.exit(f"{name}: dtype {obj.dtype}, expected float32")
            data = obj[()]  # the whole tensor, in its stored (logical) shape
            if not isinstance(data, np.ndarray) or data.shape != obj.shape:
                sys.exit(f"{name}: read back as {type(data).__name__}, not an array of shape {obj.shape}")
            out["datasets"][name] = {
                "dtype": str(obj.dtype),
                "shape": list(obj.shape),
                "norm": float(np.linalg.norm(data.astype(np.float64).ravel())),
            }

        f.visititems(visit)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
