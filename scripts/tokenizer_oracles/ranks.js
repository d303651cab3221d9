// What the oracle scripts share: the tiktoken package's vocabularies and the
// invalid-UTF-8 rule moetrain's byte-level tokenizers follow (docs/data.md).
'use strict';
const path = require('path');

const ENCODINGS = ['cl100k_base', 'o200k_base', 'gpt2'];

// The tiktoken package's encoders/NAME.json: {pat_str, special_tokens,
// bpe_ranks}. bpe_ranks is compressed: each line is "KEY FIRST_RANK TOKEN
// TOKEN ...", base64 tokens whose ranks run on from FIRST_RANK (KEY is not
// needed here).
function loadEncoding(name) {
  if (!ENCODINGS.includes(name)) throw new Error(`unknown encoding ${name}: one of ${ENCODINGS.join(', ')}`);
  return require(path.join(__dirname, 'node_modules', 'tiktoken', 'encoders', `${name}.json`));
}

// [[base64 token, rank], ...] in rank order.
function ranksOf(encoding) {
  const ranks = [];
  for (const line of encoding.bpe_ranks.split('\n')) {
    if (!line) continue;
    const [, first, ...tokens] = line.split(' ');
    const offset = Number.parseInt(first, 10);
    tokens.forEach((token, i) => ranks.push([token, offset + i]));
  }
  ranks.sort((a, b) => a[1] - b[1]);
  return ranks;
}

// Megatron's tiktoken_tokenizer.py: its split patterns and its special tokens.
const MEGATRON_PATTERNS = {
  v1: String.raw`[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+`,
  v2: String.raw`[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+`,
};
function megatronSpecialTokens(numSpecialTokens) {
  const tokens = ['<unk>', '<s>', '</s>', '<mask>', '<pad>', '<cls>', '<sep>'];
  for (let i = tokens.length; i < numSpecialTokens; ++i) tokens.push(`<SPECIAL_${i}>`);
  return tokens;
}

// The length of the longest valid UTF-8 prefix of bytes[from..]: shortest
// forms only, no surrogates, at most U+10FFFF.
function validPrefix(bytes, from) {
  let at = from;
  while (at < bytes.length) {
    const b = bytes[at];
    let n, min;
    if (b < 0x80) { at += 1; continue; }
    else if (b >= 0xc2 && b <= 0xdf) { n = 2; min = 0x80; }
    else if (b >= 0xe0 && b <= 0xef) { n = 3; min = 0x800; }
    else if (b >= 0xf0 && b <= 0xf4) { n = 4; min = 0x10000; }
    else break;
    if (at + n > bytes.length) break;
    let cp = b & (0x7f >> n);
    let ok = true;
    for (let k = 1; k < n; ++k) {
      const c = bytes[at + k];
      if ((c & 0xc0) !== 0x80) { ok = false; break; }
      cp = (cp << 6) | (c & 0x3f);
    }
    if (!ok || cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) break;
    at += n;
  }
  return at - from;
}

// The invalid-UTF-8 rule: scanning from the start, a byte that does not begin
// a complete, valid UTF-8 character is encoded alone as its single-byte token
// (byteToken(b)), and each maximal valid run between such bytes is encoded on
// its own (encodeText(string)). The ids of the whole document.
function encodeBytes(bytes, encodeText, byteToken) {
  const ids = [];
  const decoder = new TextDecoder('utf-8', { fatal: true });
  for (let at = 0; at < bytes.length;) {
    const n = validPrefix(bytes, at);
    if (n > 0) for (const id of encodeText(decoder.decode(bytes.subarray(at, at + n)))) ids.push(id);
    at += n;
    if (at < bytes.length) ids.push(byteToken(bytes[at++]));
  }
  return ids;
}

// The shared command line: OPTIONS FILE... -> {options, files}. `known` maps
// each option to its default.
function parseArgs(argv, known) {
  const options = { ...known };
  const files = [];
  for (let i = 0; i < argv.length; ++i) {
    const a = argv[i];
    if (a.startsWith('--')) {
      const name = a.slice(2);
      if (!(name in known) || i + 1 >= argv.length) throw new Error(`unknown option or missing value: ${a}`);
      options[name] = argv[++i];
    } else {
      files.push(a);
    }
  }
  if (files.length === 0) throw new Error('no FILE given');
  return { options, files };
}

// Prints {FILE: ids} for every file, each encoded by encode(bytes).
function printIds(files, encode) {
  const fs = require('fs');
  const out = {};
  for (const file of files) out[file] = Array.from(encode(new Uint8Array(fs.readFileSync(file))));
  process.stdout.write(JSON.stringify(out) + '\n');
}

module.exports = { ENCODINGS, loadEncoding, ranksOf, MEGATRON_PATTERNS, megatronSpecialTokens, validPrefix, encodeBytes, parseArgs, printIds };
