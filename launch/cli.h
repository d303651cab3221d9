// The `moetrain` command line (CLI11): subcommands train, eval, generate, plan, prepare-data,
// train-tokenizer, inspect.
// Flag names follow Megatron-LM (docs/design.md section 7); every flag can also
// come from a TOML file given with --config, and the command line wins.
#pragma once

#include <CLI/CLI.hpp>

#include <memory>

#include "launch/commands.h"
#include "launch/options.h"

namespace mt {

struct Cli {
  std::unique_ptr<CLI::App> app;
  CLI::App* train = nullptr;
  CLI::App* eval = nullptr;
  CLI::App* generate = nullptr;
  CLI::App* prepare_data = nullptr;
  CLI::App* train_tokenizer = nullptr;
  CLI::App* plan = nullptr;
  CLI::App* inspect = nullptr;
  TrainOptions train_options;
  EvalOptions eval_options;
  GenerateOptions generate_options;
  data::PrepareDataConfig prepare_options;
  TrainTokenizerConfig train_tokenizer_options;
  PlanOptions plan_options;
  InspectOptions inspect_options;
  std::string train_config, eval_config, plan_config, generate_config, prepare_data_config,
      train_tokenizer_config;  // --config files
};

// The app with every flag bound to the option structs inside Cli. Heap
// allocated so that the bindings stay valid.
std::unique_ptr<Cli> make_cli();

// Parses the command line, then the --config file of the chosen subcommand:
// a key sets its flag unless the command line already did; an unknown key is
// an error naming the file and the key. Throws CLI::ParseError (help,
// version, bad flags) or mt::Error (bad config file).
void parse_command_line(Cli& cli, int argc, const char* const* argv);

}  // namespace mt
