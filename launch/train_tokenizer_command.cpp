// `moetrain train-tokenizer`: prepare-data's inputs (files, directories,
// JSON lines) read one document at a time into SentencePiece's trainer.
#include <fmt/format.h>

#include "data/document_reader.h"
#include "launch/commands.h"

namespace mt {

void run_train_tokenizer(const TrainTokenizerConfig& config) {
  data::DocumentReader reader(config.inputs);
  data::Document doc;
  size_t key = 0;  // the next of the document's texts (one a --json-keys key)
  const TrainTokenizerResult r = train_tokenizer(config.options, [&]() -> std::optional<std::string_view> {
    while (key == doc.texts.size()) {
      if (!reader.next(doc)) return std::nullopt;
      reader.parse(doc);
      key = 0;
    }
    return std::string_view(doc.texts[key++]);
  });
  fmt::print("wrote {} and {}: a {} model of {} pieces from {} documents ({} lines, {:.1f} MB; {} cuts in long "
             "lines, {} lines with U+2585 left out)\n",
             r.model_path, r.vocab_path, config.options.model_type, config.options.vocab_size, r.documents, r.lines,
             reader.bytes_read() / 1e6, r.long_line_cuts, r.skipped_lines);
}

}  // namespace mt
