#!/usr/bin/env bash
# Build moetrain and train the workstation MoE on a small real corpus made from
# files already on this machine, with a SentencePiece vocabulary trained on
# that corpus (moetrain train-tokenizer); then plot the loss curve and the
# experts' load (a per-layer, per-expert heat map over the steps) and
# continue a prompt with the trained model, printed as text.
#
#   scripts/demo.sh [extra train flags...]     e.g. scripts/demo.sh --train-iters 50
#
# Env: MT_DEMO_RANKS   MPI ranks for training (default 1)
#      MT_DEMO_CONFIG  config file (default configs/workstation-moe.toml)
#      MT_DEMO_TEXT_KB / MT_DEMO_CODE_KB   corpus size caps (default 3072 each)
#      MT_DEMO_VOCAB   the trained vocabulary's size (default 4096)
#      MT_BUILD_DIR    build directory (default build)
# Everything is written under demo_out/ (git-ignored); each run starts afresh.
set -euo pipefail
cd "$(dirname "$0")/.."

ranks="${MT_DEMO_RANKS:-1}"
config="${MT_DEMO_CONFIG:-configs/workstation-moe.toml}"
text_kb="${MT_DEMO_TEXT_KB:-3072}"
code_kb="${MT_DEMO_CODE_KB:-3072}"
vocab="${MT_DEMO_VOCAB:-4096}"
build_dir="${MT_BUILD_DIR:-build}"
out=demo_out
bin="$build_dir/moetrain"

stage_no=0
stage() {
    stage_no=$((stage_no + 1))
    printf '\n==== [%d/6] %s ====\n' "$stage_no" "$*"
}
die() {
    echo "demo.sh: error: $*" >&2
    exit 1
}

start=$SECONDS

# ---------------------------------------------------------------------------
stage "Dependencies (apt packages)"
bash scripts/install_deps.sh

# ---------------------------------------------------------------------------
stage "Build the moetrain binary ($build_dir, Release)"
MT_BUILD_TARGETS=moetrain bash scripts/build.sh "$build_dir"
[[ -x "$bin" ]] || die "build finished but $bin does not exist"

# ---------------------------------------------------------------------------
stage "Corpus: text and code from this machine -> $out/data/"
staging="$out/staging"
rm -rf "$staging" "$out/data"
mkdir -p "$staging/text" "$staging/code" "$out/data"

declare -A seen_hash=()
staged_files=0   # running number over all staged files
last_used=0      # bytes staged by the last stage_files call

# stage_files LABEL DEST BUDGET_BYTES MAX_FILE_BYTES FIND_ARGS...
# Copies regular files found by `find FIND_ARGS...`, in sorted path order, into
# DEST until BUDGET_BYTES are used. Files larger than MAX_FILE_BYTES, empty
# files and exact duplicates (same content) are skipped. When the eligible files
# add up to more than the budget, every k-th file is taken so that the subset
# spans the whole sorted list rather than its first directories only. Names in
# DEST keep the source path (and its extension), prefixed by a running number.
stage_files() {
    local label=$1 dest=$2 budget=$3 maxfile=$4
    shift 4
    local -a paths=() sizes=()
    local size path total=0 stride i used=0 copied=0 hash name
    while IFS=$'\t' read -r -d '' size path; do
        (( size > 0 && size <= maxfile )) || continue
        paths+=("$path")
        sizes+=("$size")
        total=$((total + size))
    done < <(find "$@" -type f -printf '%s\t%p\0' 2>/dev/null | LC_ALL=C sort -z -t $'\t' -k 2)
    last_used=0
    (( ${#paths[@]} > 0 )) || return 0
    stride=$(( total > budget ? (total + budget - 1) / budget : 1 ))
    for (( i = 0; i < ${#paths[@]}; i += stride )); do
        (( used + sizes[i] <= budget )) || continue
        path=${paths[i]}
        [[ -r "$path" ]] || continue
        hash=$(md5sum < "$path") || continue
        hash=${hash%% *}
        [[ -z "${seen_hash[$hash]:-}" ]] || continue
        seen_hash[$hash]=1
        name=${path#/}
        name=${name//\//__}
        printf -v name '%05d_%s' "$staged_files" "$name"
        cp -- "$path" "$dest/$name" || continue
        used=$((used + sizes[i]))
        copied=$((copied + 1))
        staged_files=$((staged_files + 1))
    done
    last_used=$used
    printf '  %-28s %5d files, %6d KiB\n' "$label" "$copied" $((used / 1024))
}

text_budget=$((text_kb * 1024))
code_budget=$((code_kb * 1024))

echo "Text: licenses and plain-text docs (cap ${text_kb} KiB), code: C/C++ headers (cap ${code_kb} KiB)"
# All of the common licenses first (they are small), then README*, copyright and
# *.txt files of the installed packages' documentation (compressed files skipped).
stage_files "/usr/share/common-licenses" "$staging/text" "$text_budget" $((256 * 1024)) \
    /usr/share/common-licenses
stage_files "/usr/share/doc" "$staging/text" $((text_budget - last_used)) $((256 * 1024)) \
    /usr/share/doc \( -name 'README*' -o -name copyright -o -name '*.txt' \) ! -name '*.gz'
stage_files "/usr/include" "$staging/code" "$code_budget" $((128 * 1024)) \
    /usr/include \( -name '*.h' -o -name '*.hpp' \)

n_text=$(find "$staging/text" -type f | wc -l)
n_code=$(find "$staging/code" -type f | wc -l)
(( n_text > 0 )) || die "found no text files under /usr/share/common-licenses or /usr/share/doc"
(( n_code > 0 )) || die "found no C/C++ headers under /usr/include"
echo "Staged $n_text text and $n_code code documents under $staging/"

echo "-- train-tokenizer: a SentencePiece BPE vocabulary of $vocab pieces on text and code"
"$bin" train-tokenizer --input "$staging/text" "$staging/code" --vocab-size "$vocab" \
    --output-prefix "$out/data/tokenizer" --threads "$(nproc)"
tokenizer=(--tokenizer-type GPTSentencePieceTokenizer --tokenizer-model "$out/data/tokenizer.model")
echo "-- prepare-data: text"
"$bin" prepare-data --input "$staging/text" --output-prefix "$out/data/text" "${tokenizer[@]}" --workers "$(nproc)"
echo "-- prepare-data: code"
"$bin" prepare-data --input "$staging/code" --output-prefix "$out/data/code" --extensions .h,.hpp \
    "${tokenizer[@]}" --workers "$(nproc)"
ls -l "$out/data/"

# ---------------------------------------------------------------------------
stage "Train ($ranks MPI rank(s), $config)"
[[ -f "$config" ]] || die "config $config not found"
rm -rf "$out/checkpoints" "$out/metrics.jsonl" "$out/loss.png"
# Containers often forbid the cross-memory attach OpenMPI uses by default.
export OMPI_MCA_btl_vader_single_copy_mechanism="${OMPI_MCA_btl_vader_single_copy_mechanism:-none}"
# --bind-to none: with few ranks OpenMPI pins each rank to one core, which would
# squeeze the rank's OpenMP/BLAS threads onto that core.
# The config blends the two sources: text seen twice, code four times.
train_cmd=(mpirun --allow-run-as-root --oversubscribe --bind-to none -np "$ranks"
    "$bin" train --config "$config" "${tokenizer[@]}"
    --save "$out/checkpoints" --metrics-file "$out/metrics.jsonl"
    --sample-interval 50 --sample-prompt "The " "$@")
echo "+ ${train_cmd[*]}"
"${train_cmd[@]}"

# ---------------------------------------------------------------------------
stage "Plot the loss curve and the experts' load"
[[ -s "$out/metrics.jsonl" ]] || die "training wrote no metrics to $out/metrics.jsonl"
/usr/bin/python3 scripts/plot_metrics.py "$out/metrics.jsonl" "$out/loss.png" \
    --title "moetrain demo: workstation MoE, $ranks rank(s)"

# ---------------------------------------------------------------------------
stage "Generate: the trained model continues a prompt (its tokenizer from the checkpoint)"
"$bin" generate --load "$out/checkpoints" --prompt "The GNU General Public License " --temperature 0 \
    --max-new-tokens 60

echo
echo "Demo finished in $((SECONDS - start)) s."
echo "  loss plot:   $out/loss.png (the experts' load heat map at the bottom)"
echo "  metrics:     $out/metrics.jsonl"
echo "  checkpoints: $out/checkpoints"
echo "  evaluate:    $bin eval --load $out/checkpoints --data-path $out/data/text --eval-samples 64"
echo "  generate:    $bin generate --load $out/checkpoints --prompt 'The ' --temperature 0.8 --max-new-tokens 80"
