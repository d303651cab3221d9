#!/usr/bin/env bash
# Tokenizer benchmark: tokens/s of `moetrain prepare-data` with one worker
# against an implementation nobody here wrote, on the same text in the same
# run, and prepare-data with WORKERS workers against one (target in the
# issue: at least the oracle's rate on one thread, and at least 1.8x with
# two workers). Three tokenizers:
#   cl100k_base  TikTokenizer on cl100k_base.tiktoken  vs npm tiktoken (OpenAI's Rust core as WASM)
#   gpt2         GPT2BPETokenizer (encoder.json, vocab.bpe)  vs npm tiktoken's gpt2
#   sentencepiece GPTSentencePieceTokenizer on a BPE model of 8000 pieces
#                trained on the corpus (moetrain train-tokenizer)  vs Debian's python3-sentencepiece
# The text: about MT_BENCH_MB megabytes of files on the machine, equal bytes
# of prose (/usr/share/common-licenses, /usr/share/doc/*/copyright), code
# (/usr/include, C++ headers first) and the repository's sources, one
# document a file, as JSON lines {"text": ...}
# (scripts/bench_py/tokenizer_corpus.py). MT_BENCH_ROUNDS (3) interleaved
# rounds, medians. What each figure times:
#   - moetrain: the wall time of `prepare-data --no-append-eod` (reading
#     the JSON lines, tokenizing, writing the store) less that of the same
#     command on a one-document input (process start-up and the tokenizer's
#     construction; median over the rounds). Reading the lines and writing
#     the store stay in, on one thread whatever the workers; the workers
#     parse the JSON and tokenize (prepare-data's own
#     tokens/s, which counts the construction but not the start-up, is in the
#     JSON too);
#   - the oracles: encode_ordinary (tiktoken) or sp.encode (sentencepiece)
#     of every document in turn in one process, after the vocabulary is
#     loaded and the documents read and parsed.
# The token counts and the sum of the ids must be moetrain's (its store has
# exactly the ids without --append-eod), and the WORKERS-worker store the
# same bytes as the one-worker store, or the summary fails.
#
#   scripts/bench_tokenizer.sh [WORKERS]       WORKERS defaults to 2
#
# Prints a table and writes bench_out/tokenizer.json (everything lands in
# bench_out/tokenizer_*; the summary is scripts/bench_py/tokenizer_summary.py).
#
# Env: MT_BUILD_DIR (build), MT_BENCH_SKIP_BUILD=1 to reuse an existing
# build, MT_BENCH_MB (32, the corpus), MT_BENCH_ROUNDS (3),
# MT_BENCH_MAX_LOAD (0.5) and MT_BENCH_LOAD_WAIT_S (300) as in
# scripts/bench_common.sh. Needs scripts/install_deps.sh's tokenizer oracles
# (node with scripts/tokenizer_oracles/node_modules and vocab/, and Debian's
# python3-sentencepiece).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench_common.sh

workers="${1:-2}"
bench_positive WORKERS "$workers"
(( workers >= 2 )) || die "WORKERS must be at least 2 (the runs compared with one worker), got $workers"
bench_rounds 3
mb="${MT_BENCH_MB:-32}"
bench_positive MT_BENCH_MB "$mb"
oracles=scripts/tokenizer_oracles
vocab=$oracles/vocab
for f in cl100k_base.tiktoken gpt2-encoder.json gpt2-vocab.bpe; do
    [[ -f "$vocab/$f" ]] || die "no $vocab/$f (scripts/install_deps.sh makes the tokenizer oracles)"
done
[[ -d "$oracles/node_modules/tiktoken" ]] || die "no $oracles/node_modules/tiktoken (scripts/install_deps.sh)"
command -v node > /dev/null || die "no node (scripts/install_deps.sh)"
"$py" -c 'import sentencepiece' 2> /dev/null || die "no sentencepiece in $py (Debian's python3-sentencepiece)"

echo "bench: tokenizers, $rounds rounds, 1 worker and $workers workers, corpus of $mb MB"

bench_build "${MT_BUILD_DIR:-build}" moetrain

rm -f "$out"/tokenizer_* "$out/tokenizer.json"
corpus="$out/tokenizer_corpus.jsonl"
tiny="$out/tokenizer_tiny.jsonl"
times="$out/tokenizer_times.tsv"
"$py" scripts/bench_py/tokenizer_corpus.py "$mb" "$corpus"
echo '{"text": "Hello, world."}' > "$tiny"
echo "bench: training the SentencePiece model (bpe, 8000 pieces) on the corpus"
bench_logged "$out/tokenizer_train_sp.log" "train-tokenizer" "$bin" train-tokenizer --input "$corpus" \
    --vocab-size 8000 --model-type bpe --output-prefix "$out/tokenizer_sp" --threads "$(nproc)"
tail -n 1 "$out/tokenizer_train_sp.log" | sed 's/^/    /'

names=(cl100k_base gpt2 sentencepiece)
declare -A flags=(
    [cl100k_base]="--tokenizer-type TikTokenizer --tokenizer-model $vocab/cl100k_base.tiktoken --tiktoken-pattern cl100k_base"
    [gpt2]="--tokenizer-type GPT2BPETokenizer --vocab-file $vocab/gpt2-encoder.json --merge-file $vocab/gpt2-vocab.bpe"
    [sentencepiece]="--tokenizer-type GPTSentencePieceTokenizer --tokenizer-model $out/tokenizer_sp.model"
)
declare -A oracle_names=([cl100k_base]="tiktoken cl100k_base" [gpt2]="tiktoken gpt2"
                         [sentencepiece]="python3-sentencepiece")

# The tiktoken oracle: NODE_MODULES ENCODING CORPUS -> one JSON line.
# shellcheck disable=SC2016  # JavaScript
tiktoken_js='"use strict";
const [modules, encoding, corpus] = process.argv.slice(2);
const fs = require("fs");
const now = () => Number(process.hrtime.bigint()) / 1e9;
const t0 = now();
const enc = require(require("path").resolve(modules, "tiktoken")).get_encoding(encoding);
const load = now() - t0;
const docs = fs.readFileSync(corpus, "utf8").split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l).text);
const ids = new Array(docs.length);
const t1 = now();
for (let i = 0; i < docs.length; ++i) ids[i] = enc.encode_ordinary(docs[i]);
const seconds = now() - t1;
let tokens = 0, idSum = 0;
for (const a of ids) { tokens += a.length; for (const x of a) idSum += x; }
console.log(JSON.stringify({ documents: docs.length, tokens, id_sum: idSum, seconds, load_seconds: load }));'

# run_oracle NAME LOG: the oracle of NAME on the corpus, its JSON line into LOG.
run_oracle() {
    case "$1" in
        cl100k_base|gpt2) bench_logged "$2" "tiktoken ($1)" node -e "$tiktoken_js" - "$oracles/node_modules" "$1" "$corpus" ;;
        sentencepiece) bench_logged "$2" "python3-sentencepiece" "$py" scripts/bench_py/tokenizer_sentencepiece.py \
                           "$out/tokenizer_sp.model" "$corpus" ;;
    esac
}

# timed_prepare NAME RUN ROUND INPUT WORKERS: prepare-data into
# tokenizer_NAME_RUN (a store a run, overwritten each round), its log
# tokenizer_NAME_RUN_ROUND.log and its wall clock a line of $times.
timed_prepare() {
    local name=$1 run=$2 r=$3 input=$4 w=$5 t0 t1
    t0=$EPOCHREALTIME
    # shellcheck disable=SC2086  # a flag list
    bench_logged "$out/tokenizer_${name}_${run}_$r.log" "prepare-data ($name, $run)" "$bin" prepare-data \
        --input "$input" --output-prefix "$out/tokenizer_${name}_$run" ${flags[$name]} --no-append-eod --workers "$w"
    t1=$EPOCHREALTIME
    echo "$name $run $r $t0 $t1" >> "$times"
}

bench_wait_for_quiet_machine 300
for (( r = 1; r <= rounds; r++ )); do
    for name in "${names[@]}"; do
        echo "bench: round $r/$rounds: $name"
        timed_prepare "$name" tiny "$r" "$tiny" 1
        timed_prepare "$name" w1 "$r" "$corpus" 1
        timed_prepare "$name" "w$workers" "$r" "$corpus" "$workers"
        for run in w1 "w$workers"; do
            grep '^wrote' "$out/tokenizer_${name}_${run}_$r.log" | sed "s/^.*; /    moetrain $run: /"
        done
        run_oracle "$name" "$out/tokenizer_${name}_oracle_$r.json"
        sed "s/^/    ${oracle_names[$name]}: /" "$out/tokenizer_${name}_oracle_$r.json"
    done
done
load_after=$(uptime)
echo "bench: load after: $load_after"

bench_cpu_model
summary_args=()
for name in "${names[@]}"; do summary_args+=("$name" "${oracle_names[$name]}" "${flags[$name]}"); done
"$py" scripts/bench_py/tokenizer_summary.py "$out" "$rounds" "$workers" "$mb" "$load_before" "$load_after" \
    "$waited" "$cpu_model" "$(nproc)" "${summary_args[@]}"
