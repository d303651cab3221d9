"""The text of scripts/bench_tokenizer.sh: JSON lines {"text": ...}, one
document a file, about MB megabytes of mixed prose and code from files on
the machine, in a fixed order:

    tokenizer_corpus.py MB OUT.jsonl

  prose: /usr/share/common-licenses, /usr/share/doc/*/copyright;
  code:  /usr/include/c++ (every version), then the rest of /usr/include;
  repo:  the repository's own tracked sources (.cpp .h .py .sh .md .toml .js .txt).
Each source in sorted path order; the next document comes from the source
that has given the fewest bytes so far, so the three are equal in bytes as
far as each lasts. Files that are empty, not UTF-8 or hold a NUL byte are
left out (the oracles get the same documents as text, without moetrain's
invalid-UTF-8 rule to follow). Prints the documents and bytes of each
source on one line.
"""

import json
import os
import subprocess
import sys

REPO_EXTENSIONS = (".cpp", ".h", ".py", ".sh", ".md", ".toml", ".js", ".txt")


def walk(top):
    """The files under top, recursively, in sorted path order."""
    found = []
    for d, dirs, names in os.walk(top):
        dirs.sort()
        found += [os.path.join(d, n) for n in names]
    return sorted(found)


def sources():
    doc = "/usr/share/doc"
    prose = walk("/usr/share/common-licenses") + sorted(
        os.path.join(doc, p, "copyright") for p in os.listdir(doc) if os.path.isfile(os.path.join(doc, p, "copyright")))
    cxx = walk("/usr/include/c++")
    code = cxx + [f for f in walk("/usr/include") if not f.startswith("/usr/include/c++/")]
    tracked = subprocess.run(["git", "ls-files", "-z"], check=True, capture_output=True).stdout.decode().split("\0")
    repo = sorted(f for f in tracked if f.endswith(REPO_EXTENSIONS))
    return {"prose": prose, "code": code, "repo": repo}


def text_of(path):
    """The file's text, or None if it is to be left out."""
    if os.path.islink(path) and not os.path.exists(path) or not os.path.isfile(path):
        return None
    try:
        with open(path, "rb") as f:
            data = f.read()
        if not data or b"\0" in data:
            return None
        return data.decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def main():
    mb, out = sys.argv[1:]
    target = float(mb) * 1e6
    lists = sources()
    at = {k: 0 for k in lists}
    taken = {k: [0, 0] for k in lists}  # documents, bytes
    seen = set()  # a file reached by two paths (links) once
    total = 0
    with open(out, "w", encoding="utf-8") as f:
        while total < target:
            live = [k for k in lists if at[k] < len(lists[k])]
            if not live:
                break
            k = min(live, key=lambda s: taken[s][1])
            path = lists[k][at[k]]
            at[k] += 1
            real = os.path.realpath(path)
            if real in seen:
                continue
            seen.add(real)
            text = text_of(path)
            if text is None:
                continue
            f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
            size = len(text.encode("utf-8"))
            taken[k][0] += 1
            taken[k][1] += size
            total += size
    parts = ", ".join(f"{k} {d} documents {b / 1e6:.1f} MB" for k, (d, b) in taken.items())
    short = "" if total >= target else f" (all there is; MT_BENCH_MB asked for {mb})"
    print(f"bench: corpus {out}: {sum(d for d, _ in taken.values())} documents, {total / 1e6:.1f} MB{short}: {parts}")


if __name__ == "__main__":
    main()
