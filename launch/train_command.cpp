// `moetrain train`: the flags checked and the run configuration each
// checkpoint records built from the flag table, then the training loop.
#include "launch/commands.h"
#include "launch/option_tables.h"

namespace mt {

namespace {

// What decides the trained model: its shape and the recorded flags.
nlohmann::json run_config_json(const TrainOptions& o) {
  nlohmann::json config = {{"model", model_config_to_json(o.model)}};
  visit_train_flags(o, [&](const Flag& f, const auto& member) {
    if (f.recorded) config[flag_key(f)] = member;
  });
  return config;
}

}  // namespace

TrainResult run_train(TrainOptions o) {
  resolve_tokenizer(o);
  resolve_and_validate(o, *make_tokenizer(*o.tokenizer_spec));
  return train(o, run_config_json(o));
}

}  // namespace mt
