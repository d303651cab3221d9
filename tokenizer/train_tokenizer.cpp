#include "tokenizer/train_tokenizer.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <unordered_map>

#include "runtime/check.h"

namespace mt {

namespace {

// U+2585, SentencePiece's own marker for unknown characters: it skips any
// sentence that holds it (trainer_interface.cc), so we skip and count them.
constexpr std::string_view kReservedChar = "\xe2\x96\x85";

// Where a line longer than kMaxSentenceBytes is cut: after the last space
// within the limit, else before the character that crosses it (UTF-8
// continuation bytes are 10xxxxxx), else at the limit (bytes that are no
// characters).
size_t cut_point(std::string_view line) {
  const size_t space = line.substr(0, kMaxSentenceBytes).rfind(' ');
  if (space != std::string_view::npos && space > 0) return space + 1;
  size_t cut = kMaxSentenceBytes;
  while (cut > kMaxSentenceBytes - 4 && (static_cast<unsigned char>(line[cut]) & 0xC0) == 0x80) --cut;
  return (static_cast<unsigned char>(line[cut]) & 0xC0) == 0x80 ? size_t(kMaxSentenceBytes) : cut;
}

// The documents as SentencePiece's sentences: their non-empty lines, long
// ones in parts. An exception from next_document ends the iteration; it is
// kept for train_tokenizer to rethrow, and status() tells SentencePiece to
// stop.
class LineIterator : public sentencepiece::SentenceIterator {
 public:
  LineIterator(const NextDocument& next_document, TrainTokenizerResult& counts)
      : next_document_(next_document), counts_(counts) {
    advance();
  }
  bool done() const override { return done_; }
  void Next() override { advance(); }
  const std::string& value() const override { return line_; }
  sentencepiece::util::Status status() const override {
    if (!error_) return {};
    return {sentencepiece::util::StatusCode::kAborted, "reading the documents failed"};
  }
  std::exception_ptr error() const { return error_; }

 private:
  void advance() {
    try {
      while (true) {
        if (rest_.empty()) {
          const std::optional<std::string_view> document = next_document_();
          if (!document) {
            done_ = true;
            return;
          }
          ++counts_.documents;
          rest_ = *document;
          continue;
        }
        size_t end = rest_.find('\n');
        size_t next = end == std::string_view::npos ? rest_.size() : end + 1;
        if (end == std::string_view::npos) end = rest_.size();
        if (end > size_t(kMaxSentenceBytes)) {
          end = next = cut_point(rest_);
          ++counts_.long_line_cuts;
        }
        const std::string_view line = rest_.substr(0, end);
        rest_.remove_prefix(next);
        if (line.empty()) continue;
        if (line.find(kReservedChar) != std::string_view::npos) {
          ++counts_.skipped_lines;
          continue;
        }
        line_.assign(line);
        ++counts_.lines;
        return;
      }
    } catch (...) {
      error_ = std::current_exception();
      done_ = true;
    }
  }

  const NextDocument& next_document_;
  TrainTokenizerResult& counts_;
  std::string_view rest_;  // what is left of the current document
  std::string line_;
  bool done_ = false;
  std::exception_ptr error_;
};

// Writes `bytes` to `path` under a temporary name, then renames it, so that
// `path` is never half-written.
void write_file(const std::string& path, const std::string& bytes, const std::string& prefix) {
  const std::string partial = path + ".partial";
  {
    std::ofstream out(partial, std::ios::binary | std::ios::trunc);
    MT_CHECK(out.good(), "--output-prefix {}: cannot write {}: {}", prefix, partial, std::strerror(errno));
    out.write(bytes.data(), std::streamsize(bytes.size()));
    out.close();
    MT_CHECK(out.good(), "--output-prefix {}: cannot write {}: {}", prefix, partial, std::strerror(errno));
  }
  if (std::rename(partial.c_str(), path.c_str()) != 0) {
    const int error = errno;
    std::remove(partial.c_str());
    MT_FAIL("--output-prefix {}: cannot rename {} to {}: {}", prefix, partial, path, std::strerror(error));
  }
}

}  // namespace

TrainTokenizerResult train_tokenizer(const TrainTokenizerOptions& options, const NextDocument& next_document) {
  MT_CHECK(options.model_type == "bpe" || options.model_type == "unigram",
           "--model-type {}: train-tokenizer trains bpe or unigram", options.model_type);
  // <unk>, <s>, </s> and the 256 byte pieces come first; each character kept
  // needs one more, which SentencePiece checks once it has counted them.
  MT_CHECK(options.vocab_size > 259,
           "--vocab-size {} is too small: byte fallback alone takes 259 pieces (<unk>, <s>, </s> and the 256 "
           "bytes), and each character kept one more",
           options.vocab_size);
  MT_CHECK(options.input_sentence_size == 0 || options.input_sentence_size > 100,
           "--input-sentence-size {}: SentencePiece samples more than 100 lines (0: every line)",
           options.input_sentence_size);
  const std::string& prefix = options.output_prefix;
  MT_CHECK(!prefix.empty(), "train-tokenizer needs --output-prefix, the path its .model and .vocab start with");
  const std::filesystem::path prefix_path(prefix);
  MT_CHECK(prefix_path.has_filename(), "--output-prefix {} names a folder; give a file prefix such as {}tokenizer",
           prefix, prefix);
  const std::filesystem::path folder = prefix_path.has_parent_path() ? prefix_path.parent_path() : ".";
  MT_CHECK(std::filesystem::is_directory(folder), "--output-prefix {}: the folder {} does not exist", prefix,
           folder.string());
  MT_CHECK(::access(folder.c_str(), W_OK) == 0, "--output-prefix {}: cannot write in {}: {}", prefix,
           folder.string(), std::strerror(errno));

  // The flags of spm_train. Llama's tokenizer was trained with the same
  // normalization, whitespace, digit and byte-fallback settings.
  const std::unordered_map<std::string, std::string> spec = {
      {"model_type", options.model_type},
      {"vocab_size", std::to_string(options.vocab_size)},
      {"byte_fallback", "true"},
      {"split_digits", "true"},
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      // Pieces of spaces alone ("▁▁▁▁"): code's indentation.
      {"allow_whitespace_only_pieces", "true"},
      {"input_sentence_size", std::to_string(options.input_sentence_size)},
      {"shuffle_input_sentence", "true"},
      {"max_sentence_length", std::to_string(kMaxSentenceBytes)},
      {"num_threads", std::to_string(std::clamp(options.threads, 1, 128))},
      {"minloglevel", options.verbose ? "0" : "2"},
  };

  TrainTokenizerResult result;
  LineIterator lines(next_document, result);
  std::string model;
  const sentencepiece::util::Status status = sentencepiece::SentencePieceTrainer::Train(spec, &lines, &model);
  if (lines.error()) std::rethrow_exception(lines.error());
  MT_CHECK(result.lines > 0, "the corpus is empty: its {} documents hold no text to train a tokenizer on",
           result.documents);
  MT_CHECK(status.ok(), "training the {} tokenizer of --vocab-size {} on {} lines failed: SentencePiece: {}",
           options.model_type, options.vocab_size, result.lines, status.message());

  // The .vocab as spm_train writes it: each piece, a tab and its score.
  sentencepiece::SentencePieceProcessor processor;
  const sentencepiece::util::Status loaded = processor.LoadFromSerializedProto(model);
  MT_CHECK(loaded.ok(), "SentencePiece's trained model does not load: {}", loaded.message());
  std::ostringstream vocab;
  for (int id = 0; id < processor.GetPieceSize(); ++id)
    vocab << processor.IdToPiece(id) << '\t' << processor.GetScore(id) << '\n';

  result.model_path = prefix + ".model";
  result.vocab_path = prefix + ".vocab";
  write_file(result.model_path, model, prefix);
  write_file(result.vocab_path, std::move(vocab).str(), prefix);
  return result;
}

}  // namespace mt
