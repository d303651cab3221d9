#!/usr/bin/python3
"""Trains a SentencePiece model with Debian's python3-sentencepiece, reading
the files itself (a line a sentence) and with SentencePiece's own defaults
(nmt_nfkc normalization, extra spaces removed, no byte fallback) but for the
flags below: a model nobody here wrote, for moetrain's SentencePiece types to
reproduce the library's ids on (tests/tokenizer).

    train_sentencepiece.py --model-prefix P --vocab-size N [--model-type unigram|bpe]
                           [--bos-id I] [--eos-id I] [--pad-id I] FILE...

writes P.model and P.vocab. It runs under /usr/bin/python3, where Debian
installs sentencepiece.
"""
import argparse

import sentencepiece


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-prefix", required=True)
    parser.add_argument("--vocab-size", type=int, required=True)
    parser.add_argument("--model-type", choices=["unigram", "bpe"], default="unigram")
    # SentencePiece's reserved ids (its defaults); -1: the model has no such piece.
    parser.add_argument("--bos-id", type=int, default=1)
    parser.add_argument("--eos-id", type=int, default=2)
    parser.add_argument("--pad-id", type=int, default=-1)
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    sentencepiece.SentencePieceTrainer.train(input=",".join(args.files), model_prefix=args.model_prefix,
                                             vocab_size=args.vocab_size, model_type=args.model_type,
                                             bos_id=args.bos_id, eos_id=args.eos_id, pad_id=args.pad_id,
                                             num_threads=1, minloglevel=2)


if __name__ == "__main__":
    main()
