#!/usr/bin/env bash
# A run a Megatron-LM user would recognise, end to end: JSON lines made from
# this machine's documentation (one {"text": ...} a file), tokenized with
# GPT-4's cl100k_base as Megatron's preprocess_data.py would
# (--tokenizer-type TikTokenizer --json-keys text --append-eod --workers),
# a small MoE trained on them, and a prompt continued as text by generate,
# which takes the tokenizer from the checkpoint.
#
#   scripts/demo_tiktoken.sh [extra train flags...]    e.g. scripts/demo_tiktoken.sh --train-iters 50
#
# Env: MT_BUILD_DIR (build), MT_DEMO_TEXT_MB (8: the JSON lines' size cap).
# Writes under demo_out/tiktoken/ (git-ignored). Needs the vocabulary that
# scripts/install_deps.sh writes from the npm tiktoken package.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir="${MT_BUILD_DIR:-build}"
bin="$build_dir/moetrain"
out=demo_out/tiktoken
vocab=scripts/tokenizer_oracles/vocab/cl100k_base.tiktoken
bash scripts/install_deps.sh
MT_BUILD_TARGETS=moetrain bash scripts/build.sh "$build_dir"
rm -rf "$out" && mkdir -p "$out"

echo "==== JSON lines from /usr/share/doc and /usr/share/common-licenses -> $out/docs.jsonl"
/usr/bin/python3 - "$out/docs.jsonl" "${MT_DEMO_TEXT_MB:-8}" <<'PY'
import json, pathlib, sys
out, cap = sys.argv[1], int(sys.argv[2]) << 20
written = 0
with open(out, "w") as f:
    paths = sorted(pathlib.Path("/usr/share/common-licenses").glob("*")) + sorted(
        p for p in pathlib.Path("/usr/share/doc").rglob("*") if p.name in ("copyright", "README", "README.md", "NEWS"))
    for p in paths:
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if text.strip() and written < cap:
            f.write(json.dumps({"text": text, "source": str(p)}) + "\n")
            written += len(text)
print(f"{written / 1e6:.1f} MB of text")
PY

echo "==== prepare-data, as Megatron's preprocess_data.py"
"$bin" prepare-data --input "$out/docs.jsonl" --json-keys text --output-prefix "$out/docs" --append-eod \
    --tokenizer-type TikTokenizer --tokenizer-model "$vocab" --tiktoken-pattern cl100k_base --workers "$(nproc)"

echo "==== train: a small MoE over cl100k_base's 100,277 ids (padded to 100,352)"
export OMPI_MCA_btl_vader_single_copy_mechanism="${OMPI_MCA_btl_vader_single_copy_mechanism:-none}"
mpirun --allow-run-as-root --oversubscribe --bind-to none -np 1 "$bin" train \
    --tokenizer-type TikTokenizer --tokenizer-model "$vocab" --tiktoken-pattern cl100k_base \
    --num-layers 4 --hidden-size 128 --num-attention-heads 4 --num-query-groups 1 --ffn-hidden-size 256 \
    --num-experts 8 --moe-router-topk 2 --moe-aux-loss-coeff 0.01 --seq-length 128 \
    --micro-batch-size 4 --global-batch-size 8 --train-iters 300 --lr 2e-3 --min-lr 2e-4 \
    --lr-warmup-samples 160 --lr-decay-style cosine --weight-decay 0.1 --clip-grad 1.0 --log-interval 25 \
    --data-path "$out/docs_text_document" --save "$out/checkpoints" --metrics-file "$out/metrics.jsonl" \
    --sample-interval 100 --sample-prompt "This program is free software" "$@"

echo "==== generate: the tokenizer comes from the checkpoint"
"$bin" generate --load "$out/checkpoints" --prompt "This program is distributed in the hope that" \
    --temperature 0 --max-new-tokens 40
