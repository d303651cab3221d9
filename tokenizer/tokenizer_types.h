// The constructors of the file-based tokenizer types, each in its own file;
// tokenizer.cpp's table maps Megatron's --tokenizer-type names to them.
#pragma once

#include "tokenizer/tokenizer.h"

namespace mt {

// GPT2BPETokenizer: files "vocab" (encoder.json) and "merges" (vocab.bpe).
std::unique_ptr<Tokenizer> make_gpt2_bpe_tokenizer(const TokenizerSpec& spec);
// TikTokenizer: file "model" (.tiktoken ranks, or Megatron's JSON vocabulary).
std::unique_ptr<Tokenizer> make_tiktoken_tokenizer(const TokenizerSpec& spec);
// SentencePieceTokenizer, GPTSentencePieceTokenizer, Llama2Tokenizer: file
// "model" (a SentencePiece .model); the type picks Megatron's handling of
// BOS, EOS and special tokens.
std::unique_ptr<Tokenizer> make_sentencepiece_tokenizer(const TokenizerSpec& spec);
// HuggingFaceTokenizer: file "model" (tokenizer.json).
std::unique_ptr<Tokenizer> make_huggingface_tokenizer(const TokenizerSpec& spec);

// What the readers of JSON files (encoder.json, Megatron's tiktoken
// vocabulary, tokenizer.json) parse with: a callback for
// nlohmann::json::parse that refuses nesting deeper than 100 (no tokenizer
// file comes near), an error naming the file. Copying or printing a JSON
// value recurses once a level, so a few KB of '[' would overflow the stack.
nlohmann::json::parser_callback_t json_depth_limit(const std::string& name);

}  // namespace mt
