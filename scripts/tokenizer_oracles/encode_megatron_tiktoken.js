#!/usr/bin/env node
// encode_megatron_tiktoken.js --pattern v1|v2 [--num-special-tokens 1000] FILE...
// The oracle for TikTokenizer on cl100k_base.megatron.json (make_vocabularies.js):
// OpenAI's encoder (the npm tiktoken package) with cl100k_base's ranks and
// Megatron's split pattern and special tokens, as Megatron's
// tiktoken_tokenizer.py builds its tiktoken.Encoding; special-token strings
// in the text become their ids (Megatron encodes with allowed_special="all").
// Ids are then Megatron's: a special token's index, or the token's rank in
// the JSON vocabulary (single bytes in byte order, longer tokens cl100k's
// rank) plus the number of special tokens. Prints one JSON object
// {"FILE": [ids...], ...}, by the invalid-UTF-8 rule of ranks.js.
'use strict';
const { parseArgs, encodeBytes, printIds, loadEncoding, MEGATRON_PATTERNS, megatronSpecialTokens } = require('./ranks.js');
const { Tiktoken } = require('tiktoken');

const { options, files } = parseArgs(process.argv.slice(2), { pattern: 'v2', 'num-special-tokens': '1000' });
const pattern = MEGATRON_PATTERNS[options.pattern];
if (!pattern) throw new Error(`--pattern ${options.pattern}: v1 or v2`);
const numSpecial = Number.parseInt(options['num-special-tokens'], 10);

// Special tokens far above cl100k's ranks, so they collide with none.
const kSpecialBase = 1 << 24;
const specials = {};
megatronSpecialTokens(numSpecial).forEach((token, i) => { specials[token] = kSpecialBase + i; });
const cl100k = loadEncoding('cl100k_base');
const enc = new Tiktoken(cl100k.bpe_ranks, specials, pattern);

function megatronId(id) {
  if (id >= kSpecialBase) return id - kSpecialBase;
  const bytes = enc.decode_single_token_bytes(id);
  return (bytes.length === 1 ? bytes[0] : id) + numSpecial;
}
printIds(files, (bytes) =>
  encodeBytes(bytes, (text) => Array.from(enc.encode(text, 'all'), megatronId), (b) => megatronId(enc.encode_single_token(new Uint8Array([b])))));
