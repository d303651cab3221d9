#include "data/prepare_data.h"

#include <fmt/ranges.h>

#include <chrono>
#include <filesystem>

#include "data/indexed_dataset.h"
#include "runtime/check.h"

namespace fs = std::filesystem;

namespace mt::data {

namespace {

// Documents read before the workers tokenize them: enough to keep two
// threads busy and the order of the output fixed, whatever the thread count.
constexpr size_t kBatchDocuments = 4096;
constexpr size_t kBatchBytes = size_t(16) << 20;

// The stores' prefixes, in key order: Megatron's names for JSON lines.
std::vector<std::string> output_prefixes(const std::string& prefix, const DocumentReader& reader) {
  if (!reader.json_lines()) return {prefix};
  std::vector<std::string> prefixes;
  for (const std::string& key : reader.keys()) prefixes.push_back(fmt::format("{}_{}_document", prefix, key));
  return prefixes;
}

}  // namespace

PrepareDataStats prepare_data(const PrepareDataConfig& config,
                              const std::function<void(const PrepareDataStats&)>& progress) {
  using clock = std::chrono::steady_clock;
  const clock::time_point start = clock::now();
  MT_CHECK(!config.output_prefix.empty(), "prepare-data: no --output-prefix given");
  MT_CHECK(config.workers >= 1, "--workers {}: needs at least 1", config.workers);
  const fs::path out_dir = fs::path(config.output_prefix).parent_path();
  std::error_code ec;
  MT_CHECK(out_dir.empty() || fs::is_directory(out_dir, ec),
           "prepare-data: output directory {} (of --output-prefix {}) does not exist", out_dir.string(),
           config.output_prefix);
  const std::unique_ptr<Tokenizer> tokenizer = make_tokenizer(read_tokenizer_spec(config.tokenizer));

  // Every input is listed before anything is written, and a rerun into a
  // folder it reads does not swallow its previous output.
  const std::vector<std::string> keys =
      config.inputs.json_keys.empty() ? std::vector<std::string>{"text"} : config.inputs.json_keys;
  std::vector<fs::path> outputs;
  for (const std::string& key : keys)
    for (const std::string& prefix : {config.output_prefix, fmt::format("{}_{}_document", config.output_prefix, key)})
      outputs.insert(outputs.end(), {bin_path(prefix), idx_path(prefix)});
  DocumentReader reader(config.inputs, outputs);
  PrepareDataStats stats;
  stats.stores = output_prefixes(config.output_prefix, reader);
  std::vector<IndexedDatasetWriter> writers;
  for (const std::string& prefix : stats.stores)
    writers.emplace_back(prefix, best_dtype_for_vocab(tokenizer->vocab_size()));

  clock::time_point last_progress = start;
  std::vector<Document> batch;
  std::vector<std::vector<std::vector<int32_t>>> ids;  // [document][key][token]
  for (bool more = true; more;) {
    batch.clear();
    size_t batch_bytes = 0;
    while (batch.size() < kBatchDocuments && batch_bytes < kBatchBytes) {
      Document doc;
      if (!(more = reader.next(doc))) break;
      batch_bytes += doc.json_line.size();
      for (const std::string& t : doc.texts) batch_bytes += t.size();
      batch.push_back(std::move(doc));
    }
    ids.resize(batch.size());
    // Each document is parsed and tokenized on its own, so the ids do not
    // depend on which thread took it; the first error (in input order) is
    // thrown here, outside the threads.
    std::string error;
    size_t error_at = batch.size();
    const auto failed = [&](size_t d, const std::string& what) {
#pragma omp critical
      if (d < error_at) {
        error_at = d;
        error = what;
      }
    };
#pragma omp parallel for schedule(dynamic, 1) num_threads(config.workers)
    for (size_t d = 0; d < batch.size(); ++d) {
      try {
        reader.parse(batch[d]);  // its errors name the file and line
      } catch (const std::exception& e) {
        failed(d, e.what());
        continue;
      }
      try {
        ids[d].resize(batch[d].texts.size());
        for (size_t k = 0; k < batch[d].texts.size(); ++k) {
          ids[d][k] = tokenizer->encode(batch[d].texts[k]);
          if (config.append_eod && !ids[d][k].empty()) ids[d][k].push_back(tokenizer->eod());
        }
      } catch (const std::exception& e) {
        failed(d, fmt::format("{}: {}", batch[d].where, e.what()));
      }
    }
    MT_CHECK(error.empty(), "prepare-data: {}", error);
    for (size_t d = 0; d < batch.size(); ++d) {
      for (size_t k = 0; k < writers.size(); ++k) {
        if (ids[d][k].empty()) {  // an empty document has no tokens to train on
          ++stats.empty;
          continue;
        }
        writers[k].add_document(ids[d][k]);
        stats.documents += 1;
        stats.tokens += ids[d][k].size();
      }
    }
    stats.bytes = reader.bytes_read();
    stats.seconds = std::chrono::duration<double>(clock::now() - start).count();
    if (progress && clock::now() - last_progress >= std::chrono::seconds(1)) {
      progress(stats);
      last_progress = clock::now();
    }
  }
  stats.skipped = reader.files_skipped();
  MT_CHECK(stats.documents > 0,
           "prepare-data: no documents found in {} (extensions: {}; {} files, {} empty documents, {} files skipped)",
           fmt::join(config.inputs.inputs, ", "),
           config.inputs.extensions.empty() ? "any" : fmt::format("{}", fmt::join(config.inputs.extensions, ", ")),
           reader.files(), stats.empty, stats.skipped);
  for (IndexedDatasetWriter& w : writers) w.finalize();
  stats.seconds = std::chrono::duration<double>(clock::now() - start).count();
  return stats;
}

}  // namespace mt::data
