#!/usr/bin/env node
// encode_tiktoken.js --encoding cl100k_base|o200k_base|gpt2
//                    [--package tiktoken|js-tiktoken] FILE...
// The oracle for TikTokenizer on OpenAI's .tiktoken files: prints one JSON
// object {"FILE": [ids...], ...}. The text is encoded as ordinary text
// (tiktoken's encode_ordinary: special-token strings are plain text), by the
// npm package `tiktoken` (OpenAI's Rust core as WASM, the default) or
// `js-tiktoken` (a JavaScript port), with the invalid-UTF-8 rule of ranks.js.
'use strict';
const { parseArgs, encodeBytes, printIds } = require('./ranks.js');

const { options, files } = parseArgs(process.argv.slice(2), { encoding: 'cl100k_base', package: 'tiktoken' });

let encodeText, byteToken;
if (options.package === 'tiktoken') {
  const enc = require('tiktoken').get_encoding(options.encoding);
  encodeText = (text) => enc.encode_ordinary(text);
  byteToken = (b) => enc.encode_single_token(new Uint8Array([b]));
} else if (options.package === 'js-tiktoken') {
  const { Tiktoken } = require('js-tiktoken/lite');
  const enc = new Tiktoken(require(`js-tiktoken/ranks/${options.encoding}`));
  // No special token allowed and none disallowed: encode_ordinary.
  encodeText = (text) => enc.encode(text, [], []);
  // js-tiktoken has no single-token lookup; its rank map is keyed by the
  // bytes joined with commas.
  byteToken = (b) => enc.rankMap.get(String(b));
} else {
  throw new Error(`--package ${options.package}: tiktoken or js-tiktoken`);
}
printIds(files, (bytes) => encodeBytes(bytes, encodeText, byteToken));
