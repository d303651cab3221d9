#!/usr/bin/env node
// split_pieces.js --pattern gpt2|cl100k_base|o200k_base|v2 FILE...
// The oracle for moetrain's regex pre-tokenizer (tokenizer/regex_splitter.h):
// the pieces JavaScript's own regex engine cuts each file into, with the
// patterns as the npm packages write them for it (gpt-3-encoder's GPT-2
// pattern, js-tiktoken's cl100k_base and o200k_base, Megatron's v2, which
// JavaScript takes as it is), by the invalid-UTF-8 rule of ranks.js (an
// invalid byte is a piece of its own). JavaScript's \s also takes U+FEFF, so
// \s and \S become Unicode's White_Space, Rust's (tiktoken's) meaning.
// Prints one JSON object {"FILE": [piece lengths in bytes...], ...}.
'use strict';
const { parseArgs, encodeBytes, printIds, MEGATRON_PATTERNS } = require('./ranks.js');

const { options, files } = parseArgs(process.argv.slice(2), { pattern: 'gpt2' });
const patterns = {
  gpt2: require('js-tiktoken/ranks/gpt2').pat_str,
  cl100k_base: require('js-tiktoken/ranks/cl100k_base').pat_str,
  o200k_base: require('js-tiktoken/ranks/o200k_base').pat_str,
  v2: MEGATRON_PATTERNS.v2,
};
if (!(options.pattern in patterns)) throw new Error(`--pattern ${options.pattern}: one of ${Object.keys(patterns).join(', ')}`);
const pattern = patterns[options.pattern].replace(/\\(.)/g, (escape, c) =>
  c === 's' ? '\\p{White_Space}' : c === 'S' ? '\\P{White_Space}' : escape);
const regex = new RegExp(pattern, 'gu');
const utf8 = new TextEncoder();
const lengths = (text) => Array.from(text.matchAll(regex), (m) => utf8.encode(m[0]).length);
printIds(files, (bytes) => encodeBytes(bytes, lengths, () => 1));
