// libFuzzer target: `moetrain train --config FILE` (launch/cli.h), the TOML
// config file read through CLI11 and checked by resolve_and_validate (the
// same path as the command line). Input: the file's bytes. A config either
// resolves or fails with a clear error (mt::Error, or CLI11's ParseError
// naming the key); anything else (another exception, a sanitizer report) is
// a bug.
#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>

#include "fuzz_files.h"
#include "launch/cli.h"
#include "launch/options.h"
#include "runtime/check.h"
#include "tokenizer/byte_tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = mt::fuzz::scratch_path("config.toml");
  mt::fuzz::write_file(path, data, size);
  const char* argv[] = {"moetrain", "train", "--config", path.c_str()};
  auto cli = mt::make_cli();
  try {
    mt::parse_command_line(*cli, 4, argv);
    mt::resolve_and_validate(cli->train_options, mt::ByteTokenizer());
  } catch (const mt::Error&) {
  } catch (const CLI::ParseError&) {
  }
  return 0;
}
