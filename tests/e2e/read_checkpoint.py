#!/usr/bin/python3
"""Reads a moetrain checkpoint with h5py alone, as a user's script would.

    read_checkpoint.py CHECKPOINT.h5

Prints one JSON object: the root attributes (JSON strings such as `config`
parsed), for every tensor its dtype, shape and L2 norm (float64), and the
number of blocks whose bytes hash (XXH3-64 from the python3-xxhash package,
as docs/checkpoint-format.md defines it) to what the `checksums` table
records. Exits non-zero, naming the dataset, if a tensor is not float32 or
not a plain array, or a block does not match its checksum. Used by tests/e2e/test_inspect.cpp to check that the file
needs no moetrain code to read or check.
"""

import json
import sys

import h5py
import numpy as np
import xxhash


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
            if not isinstance(obj, h5py.Dataset) or name == "checksums":
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
        out["checksums_verified"] = verify_checksums(f)
    print(json.dumps(out))


CHUNK = 1 << 20


def checksum(data):
    """The block checksum of docs/checkpoint-format.md: XXH3-64 of the bytes,
    or, past one chunk of 1 MiB, of the chunks' XXH3-64 values."""
    if len(data) <= CHUNK:
        return xxhash.xxh3_64_intdigest(data)
    chunks = b"".join(xxhash.xxh3_64_intdigest(data[at:at + CHUNK]).to_bytes(8, "little")
                      for at in range(0, len(data), CHUNK))
    return xxhash.xxh3_64_intdigest(chunks)


def verify_checksums(f):
    """Hashes every block the table records; returns how many matched."""
    table = f["checksums"]
    names = json.loads(attribute(table.attrs["datasets"]))
    for row in table[()].astype(np.uint64):
        dset = f[names[int(row[0])]]
        rank = len(dset.shape)
        offset, count = row[1:1 + rank], row[5:5 + rank]
        block = dset[tuple(slice(int(o), int(o + c)) for o, c in zip(offset, count))]
        if checksum(np.ascontiguousarray(block).tobytes()) != int(row[9]):
            sys.exit(f"{dset.name}: block at {offset.tolist()} of shape {count.tolist()} does not match its checksum")
    return len(table)


if __name__ == "__main__":
    main()
