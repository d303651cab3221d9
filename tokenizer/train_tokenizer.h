// The core of `moetrain train-tokenizer` (docs/data.md): a SentencePiece
// BPE or unigram model trained on the documents the caller reads (files,
// folders, JSON lines: prepare-data's readers), written as <prefix>.model
// and <prefix>.vocab. The model loads as --tokenizer-type
// SentencePieceTokenizer, GPTSentencePieceTokenizer or Llama2Tokenizer.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace mt {

// SentencePiece trains on sentences: each line of a document is one, and a
// line longer than this many bytes is given in parts of at most this many
// (cut after its last space within the limit, else between characters), so
// no text is left out. SentencePiece's own default max_sentence_length, which
// would skip such a line instead.
inline constexpr int kMaxSentenceBytes = 4192;

// Lines trained on when the corpus has more: a uniform sample (SentencePiece's
// reservoir sampling, with its fixed seed, so the same corpus gives the same
// model). SentencePiece warns above a million sentences that training slows.
inline constexpr int64_t kDefaultInputSentenceSize = 1'000'000;

struct TrainTokenizerOptions {
  std::string model_type = "bpe";  // --model-type: bpe or unigram
  int vocab_size = 0;              // --vocab-size: the model's pieces, reserved and byte pieces included
  std::string output_prefix;       // --output-prefix: writes <prefix>.model and <prefix>.vocab
  int64_t input_sentence_size = kDefaultInputSentenceSize;  // --input-sentence-size: lines sampled; 0: every line
  int threads = 1;                 // --threads: SentencePiece's training threads (at most 128)
  bool verbose = false;            // --verbose: SentencePiece's own progress log on standard error
};

// What training read and wrote.
struct TrainTokenizerResult {
  int64_t documents = 0;        // documents read
  int64_t lines = 0;            // non-empty lines (and parts of long lines) given to SentencePiece
  int64_t long_line_cuts = 0;   // cuts made in lines longer than kMaxSentenceBytes
  int64_t skipped_lines = 0;    // lines holding U+2585, which SentencePiece reserves and would skip
  std::string model_path;       // <prefix>.model
  std::string vocab_path;       // <prefix>.vocab: each piece and its score, a line each
};

// The next document, or nullopt after the last; what it points at stays
// valid until the next call. An exception it throws ends training and is
// rethrown as it is.
using NextDocument = std::function<std::optional<std::string_view>()>;

// Trains on every document next_document gives (a sample of
// input_sentence_size lines when there are more), with byte fallback (no
// text is unknown), digits split one a piece, and the identity normalization
// with spaces kept as they are (so that decode(encode(text)) == text for any
// valid UTF-8: NFKC or dropping repeated spaces would change code and text
// for good). Each byte of a document that does not start a valid UTF-8
// character is trained on as U+FFFD, as SentencePiece encodes it. The files
// are written only once the model is complete (each to a temporary name,
// then renamed). Errors name the flag: --vocab-size too small for the byte
// pieces and the characters kept (or too large for what the corpus holds),
// an empty corpus, an --output-prefix that cannot be written.
TrainTokenizerResult train_tokenizer(const TrainTokenizerOptions& options, const NextDocument& next_document);

}  // namespace mt
