"""Prompts for scripts/bench_generate.sh: prints N JSON lines,
{"prompt": ..., "max_new_tokens": ...}, pieces of the first four licenses
of /usr/share/common-licenses of 8 to 160 bytes, each with its own output
length (8 to 96 tokens), the same on every run (a fixed seed).

    generate_prompts.py N
"""

import glob
import json
import random
import sys


def main():
    rng = random.Random(7)
    text = " ".join(open(f, errors="replace").read() for f in sorted(glob.glob("/usr/share/common-licenses/*"))[:4])
    text = " ".join(text.split())
    for _ in range(int(sys.argv[1])):
        n = rng.randint(8, 160)
        at = rng.randrange(0, len(text) - n)
        print(json.dumps({"prompt": text[at:at + n], "max_new_tokens": rng.randint(8, 96)}))


if __name__ == "__main__":
    main()
