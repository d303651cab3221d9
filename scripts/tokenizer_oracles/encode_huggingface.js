#!/usr/bin/env node
// The Hugging Face oracle: encodes each FILE with the npm package
// @huggingface/tokenizers (tokenizers.js) and a tokenizer.json, and prints
// one JSON object {"FILE": [ids...], ...} (each path as given), the form
// scripts/compare_tokenizers.sh reads from every oracle.
//
// Usage: node encode_huggingface.js --tokenizer tokenizer.json FILE...
//
// As moetrain's HuggingFaceTokenizer (and Megatron's, which calls
// tokenizer(text)), the ids are those of encode() with the special tokens
// the post-processor adds (add_special_tokens true), and added tokens written
// in the text are split out as their ids.
//
// Two things are done here rather than by the package:
// - Invalid UTF-8, which JavaScript strings cannot hold, by moetrain's rule
//   for the byte-level tokenizers (docs/data.md): scanning from the start, a
//   byte that does not begin a complete, valid UTF-8 character (shortest
//   form, no surrogates, at most U+10FFFF) is invalid and becomes its own
//   single-byte token (the model's token_to_id of GPT-2's character for the
//   byte); each maximal run of valid text between invalid bytes is tokenized
//   on its own (tokenize(), no special tokens), and the post-processor adds
//   the special tokens once, around the whole document.
// - The ByteLevel pre-tokenizer's regex: the package writes tokenizers'
//   pattern as a JavaScript regex whose \s also matches U+FEFF and misses
//   U+0085, unlike tokenizers' Oniguruma (Unicode White_Space). It is
//   replaced by the same pattern with \s as \p{White_Space}, the rewrite the
//   package itself applies to Split patterns.
'use strict';

const fs = require('fs');
const { Tokenizer, ByteLevelPreTokenizer } = require('@huggingface/tokenizers');

const BYTE_LEVEL_REGEX =
  /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\p{White_Space}\p{L}\p{N}]+|\p{White_Space}+(?!\P{White_Space})|\p{White_Space}+/gu;

function fixByteLevelRegex(preTokenizer) {
  if (!preTokenizer) return;
  if (preTokenizer instanceof ByteLevelPreTokenizer) preTokenizer.pattern = BYTE_LEVEL_REGEX;
  for (const inner of preTokenizer.tokenizers ?? []) fixByteLevelRegex(inner);
}

// GPT-2's printable stand-ins for bytes (tokenizers' bytes_char).
function bytesToUnicode() {
  const table = new Array(256);
  let n = 0;
  for (let b = 0; b < 256; ++b) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    table[b] = String.fromCodePoint(printable ? b : 256 + n++);
  }
  return table;
}
const BYTE_CHAR = bytesToUnicode();

// The length of the valid UTF-8 character at bytes[i], or 0 when bytes[i]
// does not begin one.
function utf8CharLength(bytes, i) {
  const b = bytes[i];
  if (b < 0x80) return 1;
  let length, min;
  if (b >= 0xc2 && b <= 0xdf) [length, min] = [2, 0x80];
  else if (b >= 0xe0 && b <= 0xef) [length, min] = [3, 0x800];
  else if (b >= 0xf0 && b <= 0xf4) [length, min] = [4, 0x10000];
  else return 0;
  if (i + length > bytes.length) return 0;
  let cp = b & (0xff >> (length + 1));
  for (let k = 1; k < length; ++k) {
    if ((bytes[i + k] & 0xc0) !== 0x80) return 0;
    cp = (cp << 6) | (bytes[i + k] & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return length;
}

function tokenId(tokenizer, token) {
  const id = tokenizer.token_to_id(token);
  if (id === undefined) throw new Error(`token ${JSON.stringify(token)} has no id`);
  return id;
}

function encodeBytes(tokenizer, bytes) {
  const runs = [];  // strings (valid runs) and numbers (invalid bytes)
  let start = 0;
  for (let i = 0; i < bytes.length; ) {
    const length = utf8CharLength(bytes, i);
    if (length > 0) {
      i += length;
      continue;
    }
    if (start < i) runs.push(bytes.subarray(start, i).toString('utf8'));
    runs.push(bytes[i]);
    start = ++i;
  }
  if (runs.length === 0) return tokenizer.encode(bytes.toString('utf8')).ids;
  if (start < bytes.length) runs.push(bytes.subarray(start).toString('utf8'));
  let tokens = [];
  for (const run of runs) {
    if (typeof run === 'number') tokens.push(BYTE_CHAR[run]);
    else tokens.push(...tokenizer.tokenize(run));
  }
  if (tokenizer.post_processor) tokens = tokenizer.post_processor(tokens, null, true).tokens;
  return tokens.map((t) => tokenId(tokenizer, t));
}

function main() {
  const args = process.argv.slice(2);
  if (args[0] !== '--tokenizer' || args.length < 3) {
    process.stderr.write('usage: node encode_huggingface.js --tokenizer tokenizer.json FILE...\n');
    process.exit(2);
  }
  const tokenizer = new Tokenizer(JSON.parse(fs.readFileSync(args[1], 'utf8')), {});
  fixByteLevelRegex(tokenizer.pre_tokenizer);
  const out = {};
  for (const file of args.slice(2)) out[file] = encodeBytes(tokenizer, fs.readFileSync(file));
  process.stdout.write(JSON.stringify(out) + '\n');
}

main();
