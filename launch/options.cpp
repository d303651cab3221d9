#include "launch/options.h"

#include "data/byte_tokenizer.h"
#include "runtime/check.h"

namespace mt {

int resolve_vocab_size(int vocab_size_flag, int divisible_by) {
  MT_CHECK(divisible_by >= 1, "--make-vocab-size-divisible-by must be >= 1, got {}", divisible_by);
  MT_CHECK(vocab_size_flag >= 0, "--vocab-size must be positive, got {}", vocab_size_flag);
  const int base = vocab_size_flag > 0 ? vocab_size_flag : data::ByteTokenizer::kVocabSize;
  return (base + divisible_by - 1) / divisible_by * divisible_by;
}

void validate(const TrainOptions& o) {
  o.model.validate();
  validate(o.lr);
  validate(o.adam);
  MT_CHECK(o.micro_batch_size >= 1, "--micro-batch-size must be >= 1, got {}", o.micro_batch_size);
  MT_CHECK(o.global_batch_size >= 1, "--global-batch-size must be >= 1, got {}", o.global_batch_size);
  MT_CHECK(o.global_batch_size % o.micro_batch_size == 0,
           "--global-batch-size {} is not divisible by --micro-batch-size {}", o.global_batch_size,
           o.micro_batch_size);
  MT_CHECK(!o.data_path.empty(), "--data-path is required");
  MT_CHECK(o.train_iters > 0 || o.train_samples > 0,
           "give the length of the run: --train-iters or --train-samples");
  MT_CHECK(o.train_iters == 0 || o.train_samples == 0,
           "give only one of --train-iters ({}) and --train-samples ({})", o.train_iters,
           o.train_samples);
  MT_CHECK(o.train_iters >= 0 && o.train_samples >= 0, "--train-iters/--train-samples must be >= 0");
  MT_CHECK(o.log_interval >= 1, "--log-interval must be >= 1, got {}", o.log_interval);
  MT_CHECK(o.save_interval >= 0, "--save-interval must be >= 0, got {}", o.save_interval);
  MT_CHECK(o.save_interval == 0 || !o.save.empty(), "--save-interval {} needs --save DIR",
           o.save_interval);
  MT_CHECK(o.threads >= 0, "--threads must be >= 0, got {}", o.threads);
}

}  // namespace mt
