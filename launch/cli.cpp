#include "launch/cli.h"

#include <fmt/format.h>

#include <filesystem>

#include "launch/option_tables.h"
#include "runtime/version.h"
#include "runtime/check.h"

namespace mt {

namespace {

// A table's rows as CLI11 options: a bool is a switch, a list takes its
// count of values (or all given, for -1), and the others show their default.
template <typename T>
void add_flag(CLI::App* app, const Flag& f, T& member) {
  if constexpr (std::is_same_v<T, bool>) {
    app->add_flag(f.names, member, f.help);
  } else {
    CLI::Option* opt = app->add_option(f.names, member, f.help);
    if (f.values == -1)
      opt->expected(1, -1)->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
    else if (f.values > 1)
      opt->expected(f.values);
    else
      opt->capture_default_str();
  }
}

auto adder(CLI::App* app) {
  return [app](const Flag& f, auto& member) { add_flag(app, f, member); };
}

// TOML config files; keys are the long flag names without dashes. (CLI11
// 2.1 reads config files for the root app only, so parse_command_line
// applies the subcommand's file itself.)
void add_config_flag(CLI::App* app, std::string& path) {
  app->add_option("--config", path,
                  "TOML file of flags (keys are the flag names without '--'); the command line wins")
      ->configurable(false);
}

void apply_config_file(CLI::App* app, const std::string& path) {
  MT_CHECK(std::filesystem::is_regular_file(path), "--config {}: no such file", path);
  std::vector<CLI::ConfigItem> items;
  try {
    items = CLI::ConfigTOML().from_file(path);
  } catch (const CLI::ParseError& e) {
    MT_FAIL("--config {}: {}", path, e.what());
  }
  for (const CLI::ConfigItem& item : items) {
    const std::string key = item.fullname();
    CLI::Option* opt = app->get_option_no_throw("--" + key);
    MT_CHECK(opt != nullptr && opt->get_configurable(),
             "--config {}: unknown key '{}' (keys are the long flag names of '{}' without '--')",
             path, key, app->get_name());
    if (opt->count() > 0) continue;  // the command line wins
    opt->add_result(item.inputs);
    try {
      opt->run_callback();
    } catch (const CLI::ParseError& e) {
      MT_FAIL("--config {}: key '{}': {}", path, key, e.what());
    }
  }
}

}  // namespace

std::unique_ptr<Cli> make_cli() {
  auto cli = std::make_unique<Cli>();
  cli->app = std::make_unique<CLI::App>(
      "moetrain: train Mixture-of-Experts language models with tensor, pipeline and ZeRO-1 "
      "data parallelism");
  CLI::App& app = *cli->app;
  app.require_subcommand(1);
  app.set_version_flag("--version", fmt::format("moetrain {}", kMoetrainVersion));

  // As with Megatron's argparse, a flag given twice takes the last value, so
  // scripts can append overrides.
  auto add_subcommand = [&](const char* name, const char* description, std::string& config) {
    CLI::App* sub = app.add_subcommand(name, description);
    sub->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
    add_config_flag(sub, config);
    return sub;
  };
  cli->train = add_subcommand("train", "Train a model", cli->train_config);
  visit_train_flags(cli->train_options, adder(cli->train));
  cli->eval = add_subcommand("eval",
                             "Mean cross-entropy over the first N samples of a store in storage order; prints a "
                             "JSON line with \"loss\" and \"tokens\"",
                             cli->eval_config);
  visit_eval_flags(cli->eval_options, adder(cli->eval));
  cli->generate = add_subcommand("generate",
                                 "Continue prompts with a checkpoint's model on any layout; prints each completion "
                                 "and a JSON line a prompt",
                                 cli->generate_config);
  visit_generate_flags(cli->generate_options, adder(cli->generate));
  cli->plan = add_subcommand("plan",
                             "Layout and cost planner: parameters, FLOPs, per-GPU memory, pipeline bubble, "
                             "communication, step time and cost of a run (or serving figures), without running "
                             "the model",
                             cli->plan_config);
  visit_plan_flags(cli->plan_options, adder(cli->plan));

  cli->prepare_data = add_subcommand("prepare-data",
                                     "Tokenize text (--tokenizer-type; bytes by default) into Megatron indexed "
                                     "datasets (.bin + .idx)",
                                     cli->prepare_data_config);
  visit_prepare_data_flags(cli->prepare_options, adder(cli->prepare_data));
  cli->prepare_data->get_option("--extensions")->delimiter(',');
  cli->train_tokenizer = add_subcommand("train-tokenizer",
                                        "Train a SentencePiece BPE or unigram model (byte fallback on) on the text "
                                        "prepare-data takes, for --tokenizer-model",
                                        cli->train_tokenizer_config);
  visit_train_tokenizer_flags(cli->train_tokenizer_options, adder(cli->train_tokenizer));
  cli->train_tokenizer->get_option("--extensions")->delimiter(',');

  cli->inspect = app.add_subcommand(
      "inspect", "Print a checkpoint's attributes and every tensor's shape, dtype and L2 norm");
  InspectOptions& in = cli->inspect_options;
  cli->inspect->add_option("path", in.path,
                           "A checkpoint.h5, an iter_NNNNNNN directory, or a --save directory (its 'latest')")
      ->required();
  cli->inspect->add_flag("--json", in.json, "Print one JSON object instead of the tables");
  cli->inspect->add_flag("--verify", in.verify,
                         "Read every dataset back against the checksums written with it; exit 1 naming any "
                         "damaged block");
  return cli;
}

void parse_command_line(Cli& cli, int argc, const char* const* argv) {
  cli.app->parse(argc, argv);
  const std::pair<CLI::App*, const std::string*> configs[] = {
      {cli.train, &cli.train_config},       {cli.eval, &cli.eval_config},
      {cli.plan, &cli.plan_config},         {cli.generate, &cli.generate_config},
      {cli.prepare_data, &cli.prepare_data_config}, {cli.train_tokenizer, &cli.train_tokenizer_config}};
  for (const auto& [app, path] : configs)
    if (app->parsed() && !path->empty()) apply_config_file(app, *path);
}

}  // namespace mt
