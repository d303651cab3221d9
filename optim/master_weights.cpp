#include "optim/master_weights.h"

namespace mt {

template <typename T>
MasterWeights<T>::MasterWeights(Backend<T>& be, Parameters<T>& params, GradSync<Acc>& sync)
    : be_(be), params_(params), sync_(sync) {
  if constexpr (kSeparate) shard_ = DeviceBuffer<Acc>(be.acc(), sync.shard_size());
}

template <typename T>
acc_t<T>* MasterWeights<T>::updated() {
  if constexpr (kSeparate) {
    return shard_.data();
  } else {
    return params_.values.data();
  }
}

template <typename T>
void MasterWeights<T>::publish() {
  if constexpr (kSeparate) {
    const Acc* shard = shard_.data();
    for (const FlatRange& r : sync_.shard()) {
      be_.round_from_acc(params_.values.data() + r.begin, shard, r.size());
      shard += r.size();
    }
  }
  sync_.all_gather(params_.values.data());
}

template <typename T>
void MasterWeights<T>::gather(Acc* flat) {
  if constexpr (kSeparate) {
    sync_.shard_to_flat(shard_.data(), flat);
    sync_.all_gather(flat);
  } else {
    be_.copy(flat, params_.values.data(), params_.padded_size());
  }
}

template <typename T>
void MasterWeights<T>::set(const Acc* flat) {
  if constexpr (kSeparate) {
    sync_.flat_to_shard(flat, shard_.data());
    be_.round_from_acc(params_.values.data(), flat, params_.padded_size());
  } else {
    be_.copy(params_.values.data(), flat, params_.padded_size());
  }
}

template class MasterWeights<float>;
template class MasterWeights<double>;
template class MasterWeights<bf16>;

}  // namespace mt
