"""The SentencePiece oracle of scripts/bench_tokenizer.sh: Debian's
python3-sentencepiece encoding every document of a JSON-lines corpus, timed.

    tokenizer_sentencepiece.py MODEL CORPUS.jsonl

Loads the model and reads the documents first (untimed: load_seconds is
the model's loading), then times sp.encode (the model's ids, as moetrain's
GPTSentencePieceTokenizer) of each document in turn, one thread. Prints
one JSON line: documents, tokens, id_sum (to check the ids against
moetrain's store), seconds, load_seconds.
"""

import json
import sys
import time

import sentencepiece


def main():
    model, corpus = sys.argv[1:]
    t0 = time.perf_counter()
    sp = sentencepiece.SentencePieceProcessor(model_file=model)
    load = time.perf_counter() - t0
    with open(corpus, encoding="utf-8") as f:
        docs = [json.loads(line)["text"] for line in f if line.strip()]
    encode = sp.encode
    t1 = time.perf_counter()
    ids = [encode(d) for d in docs]
    seconds = time.perf_counter() - t1
    print(json.dumps({"documents": len(docs), "tokens": sum(map(len, ids)), "id_sum": sum(map(sum, ids)),
                      "seconds": seconds, "load_seconds": load}))


if __name__ == "__main__":
    main()
