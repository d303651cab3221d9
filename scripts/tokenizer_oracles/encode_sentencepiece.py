#!/usr/bin/python3
"""The SentencePiece oracle: the ids Debian's python3-sentencepiece gives each
file, with Megatron-LM's handling of each SentencePiece --tokenizer-type
(docs/data.md), to compare with moetrain's (tests/tokenizer,
scripts/compare_tokenizers.sh).

    encode_sentencepiece.py --model M.model [--add-bos] [--tokenizer-type T] [--decode] FILE...

prints one JSON object {"FILE": [ids...], ...}, each file read as bytes and
given to SentencePiece as they are (as moetrain does; it turns each byte that
does not start a valid UTF-8 character into U+FFFD). --tokenizer-type:
  GPTSentencePieceTokenizer (the default): the model's ids;
  Llama2Tokenizer (or --add-bos): the model's BOS, then its ids;
  SentencePieceTokenizer: Megatron's special tokens (<CLS>, <SEP>, <EOD>,
    <MASK>, the pad, BOS and EOS pieces, those the model lacks numbered after
    its pieces) cut the text where they occur, earliest first, and each
    stands for its id.
--decode prints, for each file, the text SentencePiece decodes its ids to
(the model's ids alone; a JSON string, with U+FFFD for bytes that are no
characters).

It runs under /usr/bin/python3, where Debian installs sentencepiece.
"""
import argparse
import json
import sys

import sentencepiece

TYPES = ["GPTSentencePieceTokenizer", "Llama2Tokenizer", "SentencePieceTokenizer"]


def special_tokens(sp):
    """Megatron's special tokens of SentencePieceTokenizer, in the order it
    adds them, each with its id."""
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    size = len(vocab)
    tokens = {}

    def reserved(piece_id, fallback):
        return sp.id_to_piece(piece_id) if piece_id >= 0 else fallback

    for token in ["<CLS>", "<SEP>", "<EOD>", "<MASK>", reserved(sp.pad_id(), "<PAD>"),
                  reserved(sp.bos_id(), "<BOS>"), reserved(sp.eos_id(), "<EOS>")]:
        if token not in vocab:
            vocab[token] = size
            size += 1
        tokens.setdefault(token.encode(), vocab[token])
    return tokens


def encode_with_specials(sp, tokens, data):
    ids = []
    at = 0
    while True:
        found = [(data.find(t, at), order, t) for order, t in enumerate(tokens)]
        found = [f for f in found if f[0] >= 0]
        if not found:
            break
        where, _, token = min(found)
        ids += sp.encode(data[at:where])
        ids.append(tokens[token])
        at = where + len(token)
    return ids + sp.encode(data[at:])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--add-bos", action="store_true", help="as --tokenizer-type Llama2Tokenizer")
    parser.add_argument("--tokenizer-type", choices=TYPES, default="GPTSentencePieceTokenizer")
    parser.add_argument("--decode", action="store_true")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    if args.add_bos:
        args.tokenizer_type = "Llama2Tokenizer"

    sp = sentencepiece.SentencePieceProcessor(model_file=args.model)
    tokens = special_tokens(sp)
    result = {}
    for path in args.files:
        with open(path, "rb") as f:
            data = f.read()
        if args.decode:
            result[path] = sp.decode(sp.encode(data))
        elif args.tokenizer_type == "SentencePieceTokenizer":
            result[path] = encode_with_specials(sp, tokens, data)
        elif args.tokenizer_type == "Llama2Tokenizer":
            result[path] = [sp.bos_id()] + sp.encode(data)
        else:
            result[path] = sp.encode(data)
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
