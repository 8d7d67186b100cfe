#include "model/prefill_tee.h"

#include <algorithm>

#include "base/check.h"

namespace lightserve::model {

PrefillTee::PrefillTee(std::vector<SequenceKv*> children, int32_t num_heads)
    : children_(std::move(children)), num_heads_(num_heads) {
  LS_CHECK(!children_.empty()) << "a PrefillTee needs at least one sequence";
}

int32_t PrefillTee::size() const {
  return children_.front()->size();
}

int32_t PrefillTee::capacity() const {
  int32_t c = children_.front()->capacity();
  for (const SequenceKv* s : children_) c = std::min(c, s->capacity());
  return c;
}

Status PrefillTee::check_append(int32_t n) const {
  for (const SequenceKv* s : children_) {
    if (s->size() != 0) return Error{"PrefillTee: prefill only, and a sequence is not empty"};
    if (Status st = s->check_append(n); !st) return st;
  }
  return Status::Ok();
}

LayerKv PrefillTee::store_layer(kernels::Backend& backend, int32_t layer, const float* k,
                                const float* v, int64_t src_stride, int32_t n,
                                kernels::DType kv_type) {
  child_lse_.clear();
  LayerKv first;
  for (size_t i = 0; i < children_.size(); ++i) {
    const LayerKv kv = children_[i]->store_layer(backend, layer, k, v, src_stride, n, kv_type);
    if (i == 0) first = kv;
    child_lse_.push_back(kv.lse);
  }
  first.lse = lse_.reserve<float>(backend, static_cast<int64_t>(n) * num_heads_);
  return first;
}

void PrefillTee::finish_layer(kernels::Backend& backend, int32_t layer, const float* q,
                              const kernels::AttentionShape& shape, int32_t n) {
  const int64_t bytes = static_cast<int64_t>(n) * num_heads_ * sizeof(float);
  for (size_t i = 0; i < children_.size(); ++i) {
    if (child_lse_[i] != nullptr) backend.copy(child_lse_[i], lse_.get<float>(), bytes);
    children_[i]->finish_layer(backend, layer, q, shape, n);
  }
}

void PrefillTee::advance(int32_t n) {
  for (SequenceKv* s : children_) s->advance(n);
}

}  // namespace lightserve::model
