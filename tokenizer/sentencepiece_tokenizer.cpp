// PLACEHOLDER (issue 34 in progress): replaced by the real tokenizer.
#include "runtime/check.h"
#include "tokenizer/tokenizer_types.h"

namespace mt {

std::unique_ptr<Tokenizer> make_sentencepiece_tokenizer(const TokenizerSpec& spec) {
  MT_FAIL("--tokenizer-type {} is not built yet", spec.options.type);
}

}  // namespace mt
