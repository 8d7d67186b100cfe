#include "server/engine_executor.h"

#include <algorithm>
#include <cstring>
#include <utility>

namespace lightserve::server {

EngineExecutor::EngineExecutor(model::LlamaModel& model, model::KvArena& arena,
                               model::LightTransferSettings settings)
    : model_(model),
      arena_(arena),
      settings_(std::move(settings)),
      lazy_layer_counts_(static_cast<size_t>(model.config().num_layers), 0) {}

int32_t EngineExecutor::vocab_size() const { return model_.config().vocab_size; }

const model::HybridSequence* EngineExecutor::sequence(scheduler::RequestId request_id) const {
  auto it = sequences_.find(request_id);
  return it == sequences_.end() ? nullptr : it->second.get();
}

void EngineExecutor::release(scheduler::RequestId request_id) { sequences_.erase(request_id); }

Status EngineExecutor::execute(const scheduler::StepBatch& batch, std::vector<float>& logits) {
  const int32_t num_layers = model_.config().num_layers;
  const int64_t vocab = vocab_size();
  logits.clear();
  batch_.clear();
  batch_.reserve(batch.entries.size());
  for (const scheduler::ExecutorEntry& e : batch.entries) {
    const std::string who = "request " + std::to_string(e.request_id) + ": ";
    if (e.layer_begin != 0 || e.layer_end != num_layers) {
      return Error{who + "the executor runs whole forward passes only (layers [0, " +
                   std::to_string(num_layers) + ")), got [" + std::to_string(e.layer_begin) +
                   ", " + std::to_string(e.layer_end) +
                   "); run the engine with layered_prefill = false"};
    }
    if (e.tokens.empty()) return Error{who + "an entry with no tokens"};
    model::HybridSequence* seq = nullptr;
    if (e.begins_sequence) {
      if (e.kv == nullptr) return Error{who + "a first entry without KV"};
      if (e.position != 0) return Error{who + "a first entry must prefill from position 0"};
      auto attached = model::HybridSequence::attach(arena_, model_.config(), settings_, *e.kv);
      if (!attached) return Error{who + attached.error().message};
      seq = attached.value().get();
      sequences_[e.request_id] = std::move(attached).value();  // replaces any stale state
    } else {
      auto it = sequences_.find(e.request_id);
      if (it == sequences_.end()) return Error{who + "no sequence (no first entry seen)"};
      seq = it->second.get();
      if (seq->size() != e.position || e.tokens.size() != 1) {
        return Error{who + "a decode entry must feed one token at position " +
                     std::to_string(seq->size()) + " (got " + std::to_string(e.tokens.size()) +
                     " at " + std::to_string(e.position) + ")"};
      }
    }
    batch_.push_back(model::BatchEntry{seq, e.tokens, /*all_logits=*/false});
  }
  if (batch_.empty()) return Status::Ok();
  if (Status s = model_.forward(batch_, out_); !s) return s;
  ++num_forward_calls_;
  max_batch_entries_ = std::max(max_batch_entries_, static_cast<int32_t>(batch_.size()));
  // A prefill that ran its last layer has its final layer map.
  for (size_t i = 0; i < batch.entries.size(); ++i) {
    const scheduler::ExecutorEntry& e = batch.entries[i];
    if (!e.begins_sequence || e.layer_end != num_layers) continue;
    const memory::LayerMap& map = sequences_.at(e.request_id)->layer_map();
    for (int32_t l = 0; l < num_layers; ++l) {
      lazy_layer_counts_[static_cast<size_t>(l)] += map.is_lazy(l) ? 1 : 0;
    }
  }
  // forward gives one row per entry (its last token); keep the rows the engine asked for.
  size_t n_out = 0;
  for (const scheduler::ExecutorEntry& e : batch.entries) n_out += e.needs_logits ? 1 : 0;
  logits.resize(n_out * static_cast<size_t>(vocab));
  size_t row = 0;
  for (size_t i = 0; i < batch.entries.size(); ++i) {
    if (!batch.entries[i].needs_logits) continue;
    std::memcpy(logits.data() + row * vocab, out_.data() + i * vocab,
                static_cast<size_t>(vocab) * sizeof(float));
    ++row;
  }
  return Status::Ok();
}

namespace {

class ModelTextStream final : public scheduler::TextStream {
 public:
  explicit ModelTextStream(const model::Tokenizer& tokenizer) : decoder_(tokenizer) {}
  std::string push(int32_t token_id) override { return decoder_.push(token_id); }
  std::string flush() override { return decoder_.flush(); }

 private:
  model::StreamDecoder decoder_;
};

}  // namespace

std::unique_ptr<scheduler::TextStream> ModelDetokenizer::start() const {
  return std::make_unique<ModelTextStream>(tokenizer_);
}

}  // namespace lightserve::server
