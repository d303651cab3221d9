#include "data/prepare_data.h"

#include <fmt/ranges.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <cstdint>
#include <exception>
#include <functional>
#include <numeric>

#include "data/indexed_dataset.h"
#include "runtime/check.h"

namespace fs = std::filesystem;

namespace mt::data {

namespace {

// Documents read together. While the workers tokenize a batch, one of
// them first reads the next and another writes the one before, so the
// reading and writing hide behind the tokenizing; the output's order is
// the input's, whatever the thread count.
constexpr size_t kBatchDocuments = 8192;
constexpr size_t kBatchBytes = size_t(16) << 20;

struct Batch {
  std::vector<Document> documents;
  std::vector<std::vector<std::vector<int32_t>>> ids;  // [document][key][token]
  // The documents by size, largest first: the order the workers take them
  // in, so that the batch does not end with one worker on a long document.
  std::vector<size_t> longest_first;
  // The first error in input order: documents that failed, by index.
  size_t error_at = SIZE_MAX;
  std::string error;
};

// The next batch of documents; empty at the end.
Batch read_batch(DocumentReader& reader) {
  Batch batch;
  size_t bytes = 0;
  Document doc;
  while (batch.documents.size() < kBatchDocuments && bytes < kBatchBytes && reader.next(doc)) {
    bytes += doc.json_line.size();
    for (const std::string& t : doc.texts) bytes += t.size();
    batch.documents.push_back(std::move(doc));
  }
  batch.ids.resize(batch.documents.size());
  std::vector<size_t> sizes;
  for (const Document& d : batch.documents) {
    sizes.push_back(d.json_line.size());
    for (const std::string& t : d.texts) sizes.back() += t.size();
  }
  batch.longest_first.resize(sizes.size());
  std::iota(batch.longest_first.begin(), batch.longest_first.end(), size_t(0));
  std::stable_sort(batch.longest_first.begin(), batch.longest_first.end(),
                   [&](size_t a, size_t b) { return sizes[a] > sizes[b]; });
  return batch;
}

// Keeps `error` if document d is the batch's first to fail.
void keep_first_error(Batch& batch, size_t d, const std::string& error) {
#pragma omp critical
  if (d < batch.error_at) {
    batch.error_at = d;
    batch.error = error;
  }
}

// Document d parsed and tokenized on its own, so its ids do not depend on
// which thread took it.
void tokenize_document(Batch& batch, size_t d, const DocumentReader& reader, const Tokenizer& tokenizer,
                       bool append_eod) {
  Document& doc = batch.documents[d];
  try {
    reader.parse(doc);
  } catch (const std::exception& e) {
    return keep_first_error(batch, d, e.what());  // it names the file and line
  }
  try {
    batch.ids[d].resize(doc.texts.size());
    for (size_t k = 0; k < doc.texts.size(); ++k) {
      batch.ids[d][k] = tokenizer.encode(doc.texts[k]);
      if (append_eod && !batch.ids[d][k].empty()) batch.ids[d][k].push_back(tokenizer.eod());
    }
  } catch (const std::exception& e) {
    keep_first_error(batch, d, fmt::format("{}: {}", doc.where, e.what()));
  }
}

// Appends each document of each key to its store; an empty one (no tokens
// to train on) is left out and counted.
void write_batch(const Batch& batch, std::vector<IndexedDatasetWriter>& writers, PrepareDataStats& stats) {
  MT_CHECK(batch.error.empty(), "prepare-data: {}", batch.error);
  for (const std::vector<std::vector<int32_t>>& keys : batch.ids)
    for (size_t k = 0; k < writers.size(); ++k) {
      if (keys[k].empty()) {
        ++stats.empty;
        continue;
      }
      writers[k].add_document(keys[k]);
      stats.documents += 1;
      stats.tokens += keys[k].size();
    }
}

// A JSON-lines key's store, as Megatron's preprocess_data.py names it.
std::string key_store_prefix(const std::string& prefix, const std::string& key) {
  return fmt::format("{}_{}_document", prefix, key);
}

// The stores' prefixes, in key order.
std::vector<std::string> output_prefixes(const std::string& prefix, const DocumentReader& reader) {
  if (!reader.json_lines()) return {prefix};
  std::vector<std::string> prefixes;
  for (const std::string& key : reader.keys()) prefixes.push_back(key_store_prefix(prefix, key));
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
  std::vector<fs::path> outputs;
  for (const std::string& key : json_keys(config.inputs))
    for (const std::string& prefix : {config.output_prefix, key_store_prefix(config.output_prefix, key)})
      outputs.insert(outputs.end(), {bin_path(prefix), idx_path(prefix)});
  DocumentReader reader(config.inputs, outputs);
  PrepareDataStats stats;
  stats.stores = output_prefixes(config.output_prefix, reader);
  std::vector<IndexedDatasetWriter> writers;
  for (const std::string& prefix : stats.stores)
    writers.emplace_back(prefix, best_dtype_for_vocab(tokenizer->vocab_size()));

  clock::time_point last_progress = start;
  Batch written, current = read_batch(reader), next;
  for (;;) {
    // Reading and writing are single tasks beside the tokenizing; an error
    // in them is rethrown after the threads have joined.
    std::exception_ptr read_error, write_error;
#pragma omp parallel num_threads(config.workers)
    {
#pragma omp single nowait
      try {
        next = read_batch(reader);
      } catch (...) {
        read_error = std::current_exception();
      }
#pragma omp single nowait
      try {
        write_batch(written, writers, stats);
      } catch (...) {
        write_error = std::current_exception();
      }
#pragma omp for schedule(dynamic, 1)
      for (size_t i = 0; i < current.longest_first.size(); ++i)
        tokenize_document(current, current.longest_first[i], reader, *tokenizer, config.append_eod);
    }
    if (write_error) std::rethrow_exception(write_error);
    if (read_error) std::rethrow_exception(read_error);
    stats.bytes = reader.bytes_read();
    stats.seconds = std::chrono::duration<double>(clock::now() - start).count();
    if (progress && clock::now() - last_progress >= std::chrono::seconds(1)) {
      progress(stats);
      last_progress = clock::now();
    }
    if (current.documents.empty()) break;  // `written` was the last
    written = std::move(current);
    current = std::move(next);
    next = Batch{};
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
