// A run from raw text to generated text with a real tokenizer, as a user
// starts one: train-tokenizer on JSON lines, prepare-data with it, train;
// the checkpoint keeps the tokenizer, so a resumed train, eval and generate
// need no tokenizer flags and refuse another tokenizer.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

#include "checkpoint/hdf5_file.h"
#include "e2e/run_moetrain.h"

namespace mt {
namespace {

using test_util::CommandResult;
using test_util::contains;
using test_util::run_moetrain;

// The tokenizer tests' corpus as JSON lines (its valid UTF-8 documents),
// three times over, so that the store holds enough samples.
std::string write_corpus_json_lines(const std::string& dir) {
  const std::string path = dir + "/corpus.jsonl";
  std::ofstream out(path);
  for (int copy = 0; copy < 3; ++copy)
    for (const auto& e : std::filesystem::directory_iterator(std::string(MT_FIXTURES_DIR) + "/tokenizer/corpus")) {
      if (e.path().extension() != ".txt") continue;
      const std::vector<uint8_t> bytes = test_util::read_bytes(e.path());
      out << nlohmann::json{{"text", std::string(bytes.begin(), bytes.end())}, {"source", e.path().filename()}}.dump()
          << "\n";
    }
  return path;
}

const std::string kTokenizerFlags = " --tokenizer-type Llama2Tokenizer --tokenizer-model ";

// `moetrain train` of the tiny model (a short warm-up for these short runs)
// with `flags`.
std::string train(const std::string& flags) {
  return "train " + test_util::tiny_model_flags() + " --lr-warmup-samples 8 " + flags;
}

class TokenizerRun : public ::testing::Test {
 protected:
  // dir/sp.model, dir/corpus_text_document, dir/save (4 steps at TP 1).
  static void SetUpTestSuite() {
    const CommandResult r = test_util::shared_fixture_dir("tokenizer_run", [](const std::string& dir) {
      const std::string jsonl = write_corpus_json_lines(dir);
      CommandResult step = run_moetrain("train-tokenizer --input " + jsonl + " --vocab-size 1000 --output-prefix " +
                                        dir + "/sp");
      if (step.status != 0) return step;
      step = run_moetrain("prepare-data --input " + jsonl + " --output-prefix " + dir + "/corpus --workers 2" +
                          kTokenizerFlags + dir + "/sp.model");
      if (step.status != 0) return step;
      return run_moetrain(train("--vocab-size 0" + kTokenizerFlags + dir + "/sp.model --data-path " + dir +
                                "/corpus_text_document --train-iters 4 --save " + dir +
                                "/save --sample-interval 4 --sample-prompt 'All human' --sample-tokens 4"));
    });
    ASSERT_EQ(r.status, 0) << r.output;
    dir_ = r.output;
  }
  static std::string dir_;
};
std::string TokenizerRun::dir_;

// The checkpoint holds the tokenizer's type and the model file's bytes, and
// the vocabulary of 1,000 pieces padded to a multiple of 48 x TP.
TEST_F(TokenizerRun, TheCheckpointHoldsTheTokenizer) {
  const CommandResult inspect = run_moetrain("inspect --json " + dir_ + "/save");
  ASSERT_EQ(inspect.status, 0) << inspect.output;
  const nlohmann::json j = nlohmann::json::parse(inspect.output);
  const nlohmann::json& tokenizer = j.at("attributes").at("tokenizer");
  EXPECT_EQ(tokenizer.at("type"), "Llama2Tokenizer");
  EXPECT_EQ(tokenizer.at("files").at("model").at("name"), "sp.model");
  H5File f = H5File::open(dir_ + "/save/iter_0000004/checkpoint.h5", MPI_COMM_SELF);
  const std::vector<uint8_t> stored = f.read_all<uint8_t>("tokenizer/model");
  EXPECT_EQ(stored, test_util::read_bytes(dir_ + "/sp.model"));
  EXPECT_EQ(f.shape("model/embed"), (std::vector<uint64_t>{1008, 64}));  // 1,000 up to 21 x 48
}

// generate needs no tokenizer flags: it encodes the prompt and prints text.
TEST_F(TokenizerRun, GenerateUsesTheCheckpointsTokenizer) {
  const CommandResult r =
      run_moetrain("generate --load " + dir_ + "/save --prompt 'All human beings' --max-new-tokens 6 --temperature 0");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "All human beings")) << r.output;
  const std::string last_json = r.output.substr(r.output.rfind("{\"completion\""));
  const nlohmann::json line = nlohmann::json::parse(last_json.substr(0, last_json.find('\n')));
  EXPECT_EQ(line.at("prompt"), "All human beings");
  EXPECT_GE(line.at("tokens").get<int>(), 1);
  // The streamed text is the completion the JSON line reports.
  EXPECT_TRUE(contains(r.output, "All human beings" + line.at("completion").get<std::string>() + "\n")) << r.output;
}

// A resumed run keeps the checkpoint's tokenizer and vocabulary, at another
// TP too (1,008 rows split over 2); another tokenizer is refused by name.
TEST_F(TokenizerRun, ResumingKeepsTheTokenizerAndRefusesAnother) {
  test_util::TempDir out;
  const std::string data = " --data-path " + dir_ + "/corpus_text_document";
  const CommandResult resumed =
      run_moetrain(train(data + " --tp 2 --load " + dir_ + "/save --train-iters 5 --save " + out.path()), 2);
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  H5File f = H5File::open(out.path() + "/iter_0000005/checkpoint.h5", MPI_COMM_SELF);
  EXPECT_EQ(f.shape("model/embed"), (std::vector<uint64_t>{1008, 64}));
  EXPECT_TRUE(f.has_attr("tokenizer"));

  const CommandResult other = run_moetrain(
      train(data + " --load " + dir_ + "/save --train-iters 5 --tokenizer-type NullTokenizer --vocab-size 1000"));
  EXPECT_NE(other.status, 0);
  EXPECT_TRUE(contains(other.output, "--tokenizer-type NullTokenizer")) << other.output;
  EXPECT_TRUE(contains(other.output, "Llama2Tokenizer")) << other.output;
  // eval takes the same tokenizer named again, and refuses another.
  const CommandResult same =
      run_moetrain("eval --load " + dir_ + "/save" + data + " --eval-samples 8" + kTokenizerFlags + dir_ + "/sp.model");
  EXPECT_EQ(same.status, 0) << same.output;
  const CommandResult bytes = run_moetrain("eval --load " + dir_ + "/save" + data + " --tokenizer-type ByteTokenizer "
                                           "--tokenizer-model " + dir_ + "/sp.model");
  EXPECT_NE(bytes.status, 0);
  EXPECT_TRUE(contains(bytes.output, "not the tokenizer of checkpoint")) << bytes.output;
}

// A fresh run pads as Megatron does: to a multiple of 48 x TP.
TEST_F(TokenizerRun, AFreshRunPadsTheVocabularyByTp) {
  test_util::TempDir out;
  const CommandResult r = run_moetrain(train("--vocab-size 0 --tp 2" + kTokenizerFlags + dir_ + "/sp.model " +
                                             "--data-path " + dir_ + "/corpus_text_document --train-iters 2 --save " +
                                             out.path()),
                                       2);
  ASSERT_EQ(r.status, 0) << r.output;
  H5File f = H5File::open(out.path() + "/iter_0000002/checkpoint.h5", MPI_COMM_SELF);
  EXPECT_EQ(f.shape("model/embed"), (std::vector<uint64_t>{1056, 64}));  // 1,000 up to 11 x 96
}

}  // namespace
}  // namespace mt
