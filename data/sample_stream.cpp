#include "data/sample_stream.h"

#include <array>
#include <mutex>
#include <numeric>
#include <string>

#include "runtime/check.h"
#include "runtime/philox.h"

namespace mt::data {

struct SampleStream::Cache {
  struct Entry {
    uint64_t epoch = 0;
    std::shared_ptr<const std::vector<uint64_t>> perm;  // null = empty slot
  };
  std::mutex mutex;
  std::array<Entry, 2> entries;  // [0] most recently used
};

SampleStream::SampleStream(const IndexedDataset& store, int seq_length, uint64_t seed)
    : store_(&store), seq_length_(seq_length), seed_(seed), cache_(std::make_unique<Cache>()) {
  MT_CHECK(seq_length > 0, "token store {}: sequence length must be positive, got {}", store.prefix(),
           seq_length);
  const uint64_t need = uint64_t(seq_length) + 1;
  MT_CHECK(store.num_tokens() >= need, "sequence length {} needs at least {} tokens, store {} has {}",
           seq_length, need, store.prefix(), store.num_tokens());
  num_samples_ = (store.num_tokens() - 1) / uint64_t(seq_length);
}

SampleStream::SampleStream(SampleStream&&) noexcept = default;
SampleStream& SampleStream::operator=(SampleStream&&) noexcept = default;
SampleStream::~SampleStream() = default;

void SampleStream::read_sample(uint64_t i, int32_t* out) const {
  MT_CHECK(i < num_samples_, "token store {}: sample {} out of range ({} samples of length {})",
           store_->prefix(), i, num_samples_, seq_length_);
  store_->read_tokens(i * uint64_t(seq_length_), uint64_t(seq_length_) + 1, out);
}

std::vector<uint64_t> SampleStream::epoch_permutation(uint64_t epoch) const {
  // One Philox stream per epoch; the seed is the Philox key.
  const uint64_t stream = stream_id("data/sample_stream/epoch/" + std::to_string(epoch));
  std::vector<uint64_t> perm(num_samples_);
  std::iota(perm.begin(), perm.end(), uint64_t{0});
  // Fisher-Yates: position i swaps with a uniform j in [0, i], the draw for i
  // being element i of the stream. 53-bit uniforms: the bias is negligible.
  for (uint64_t i = num_samples_ - 1; i > 0; --i) {
    uint64_t j = uint64_t(philox_uniform(seed_, stream, i) * double(i + 1));
    if (j > i) j = i;  // guards rounding of u * (i + 1) for huge i
    std::swap(perm[i], perm[j]);
  }
  return perm;
}

uint64_t SampleStream::sample_at(uint64_t n) const {
  const uint64_t epoch = n / num_samples_, pos = n % num_samples_;
  std::shared_ptr<const std::vector<uint64_t>> perm;
  {
    std::lock_guard lock(cache_->mutex);
    auto& e = cache_->entries;
    if (e[0].perm && e[0].epoch == epoch) return (*e[0].perm)[pos];
    if (e[1].perm && e[1].epoch == epoch) {
      std::swap(e[0], e[1]);
      return (*e[0].perm)[pos];
    }
  }
  // Built outside the lock; two threads racing build the same permutation.
  perm = std::make_shared<const std::vector<uint64_t>>(epoch_permutation(epoch));
  std::lock_guard lock(cache_->mutex);
  auto& e = cache_->entries;
  e[1] = std::move(e[0]);
  e[0] = {epoch, perm};
  return (*perm)[pos];
}

}  // namespace mt::data
