// The weights the optimizer updates. In float32 (and float64) runs they are
// the model's own flat buffer. Under bf16 they are a float32 copy of this
// rank's ZeRO-1 shard (shard-packed, like the Adam moments), and the
// model's bf16 weights are rounded from them after every update, then
// all-gathered over the replicas (docs/design.md, "Mixed precision").
#pragma once

#include <type_traits>

#include "model/parameters.h"
#include "parallel/grad_sync.h"
#include "runtime/backend.h"

namespace mt {

template <typename T>
class MasterWeights {
 public:
  using Acc = acc_t<T>;
  static constexpr bool kSeparate = !std::is_same_v<T, Acc>;

  // sync: the shard layout of this rank (and the replicas to gather over).
  MasterWeights(Backend<T>& be, Parameters<T>& params, GradSync<Acc>& sync);

  // What AdamW updates, and whether it is shard-packed (AdamW::step).
  Acc* updated();
  bool packed() const { return kSeparate; }
  // After the update: the model's weights from the master weights, on every
  // replica. Collective over the replicas.
  void publish();

  // Every rank's master weights as one flat padded array [padded], on this
  // device (checkpoints). Collective over the replicas.
  void gather(Acc* flat);
  // Master and model weights from a flat padded array (initial values, a
  // checkpoint), the same on every replica.
  void set(const Acc* flat);

 private:
  Backend<T>& be_;
  Parameters<T>& params_;
  GradSync<Acc>& sync_;
  DeviceBuffer<Acc> shard_;  // [shard size] under bf16
};

extern template class MasterWeights<float>;
extern template class MasterWeights<double>;
extern template class MasterWeights<bf16>;

}  // namespace mt
