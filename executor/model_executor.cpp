#include "executor/model_executor.h"

#include <algorithm>
#include <chrono>
#include <utility>

namespace lightserve::executor {

ModelExecutor::ModelExecutor(model::LlamaModel& model, model::KvArena& arena,
                             model::LightTransferSettings settings)
    : model_(model),
      arena_(arena),
      settings_(std::move(settings)),
      lazy_layer_counts_(static_cast<size_t>(model.config().num_layers), 0) {}

int32_t ModelExecutor::vocab_size() const {
  return model_.config().vocab_size;
}

const model::HybridSequence* ModelExecutor::sequence(scheduler::RequestId request_id) const {
  auto it = sequences_.find(request_id);
  return it == sequences_.end() ? nullptr : it->second.get();
}

void ModelExecutor::release(scheduler::RequestId request_id) {
  sequences_.erase(request_id);
}

Status ModelExecutor::fork(scheduler::RequestId parent, scheduler::RequestId child,
                           memory::KvAllocation& child_kv) {
  auto it = sequences_.find(parent);
  if (it == sequences_.end()) {
    return Error{"fork: request " + std::to_string(parent) + " has no sequence"};
  }
  auto forked = model::HybridSequence::fork(model_.backend(), *it->second, child_kv);
  if (!forked)
    return Error{"fork of request " + std::to_string(parent) + ": " + forked.error().message};
  sequences_[child] = std::move(forked).value();
  return Status::Ok();
}

Status ModelExecutor::execute(const scheduler::StepBatch& batch, scheduler::StepOutput& output) {
  const int32_t num_layers = model_.config().num_layers;
  output.clear();
  batch_.clear();
  batch_.reserve(batch.entries.size());
  sinks_.clear();
  sinks_.reserve(batch.entries.size());  // BatchEntry::row_sink points into it
  for (const scheduler::ExecutorEntry& e : batch.entries) {
    const std::string who = "request " + std::to_string(e.request_id) + ": ";
    if (e.tokens.empty()) return Error{who + "an entry with no tokens"};
    if (e.needs_logits != (e.layer_end == num_layers)) {
      return Error{who + "logits come with the last layer and only with it"};
    }
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
      if (seq->size() != e.position) {
        return Error{who + "an entry at position " + std::to_string(e.position) +
                     ", but the sequence holds " + std::to_string(seq->size()) + " tokens"};
      }
      if (!e.is_prefill() && (e.tokens.size() != 1 || e.layer_begin != 0)) {
        return Error{who + "a decode entry feeds one token through every layer (got " +
                     std::to_string(e.tokens.size()) + " tokens, layers [" +
                     std::to_string(e.layer_begin) + ", " + std::to_string(e.layer_end) + "))"};
      }
    }
    // LlamaModel::forward checks that a prefill's layer range resumes where it stopped.
    if (e.num_candidates < 0 || e.num_candidates > max_candidates() ||
        (e.num_candidates > 0 && (!e.needs_logits || e.prompt_logprobs != nullptr))) {
      return Error{who + "num_candidates " + std::to_string(e.num_candidates) + " (at most " +
                   std::to_string(max_candidates()) + ", only for a row without prompt logprobs)"};
    }
    batch_.push_back(
        model::BatchEntry{seq, e.tokens, /*all_logits=*/false, e.layer_begin, e.layer_end});
    batch_.back().num_candidates = e.num_candidates;
    if (e.prompt_logprobs != nullptr && e.needs_logits && e.is_prefill()) {
      // Row t predicts token t + 1: reduced as each chunk of rows is computed.
      std::vector<scheduler::TokenLogprobs>* out = e.prompt_logprobs;
      out->clear();
      out->reserve(e.tokens.size() - 1);
      const std::span<const int32_t> tokens = e.tokens;
      const int32_t top = e.prompt_logprobs_top;
      const size_t vocab = static_cast<size_t>(model_.config().vocab_size);
      sinks_.push_back([out, tokens, top, vocab](int32_t first, int32_t count, const float* rows) {
        for (int32_t k = 0; k < count; ++k) {
          const size_t t = static_cast<size_t>(first + k);
          if (t + 1 >= tokens.size()) break;  // the last row predicts the first output
          out->push_back(scheduler::token_logprobs(
              std::span<const float>(rows + static_cast<size_t>(k) * vocab, vocab), tokens[t + 1],
              top));
        }
      });
      batch_.back().row_sink = &sinks_.back();
    }
  }
  if (batch_.empty()) return Status::Ok();
  // forward returns one row (its last token) per entry that ran the last layer, in entry order:
  // exactly the entries with needs_logits; as candidates for those that asked for them.
  const auto start = std::chrono::steady_clock::now();
  if (Status s = model_.forward_candidates(batch_, output.logits, output.candidates); !s) {
    return s;
  }
  forward_seconds_ +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const int32_t vocab = model_.config().vocab_size;
  int64_t whole = 0, pairs = 0;
  for (const scheduler::ExecutorEntry& e : batch.entries) {
    if (!e.needs_logits) continue;
    if (e.num_candidates > 0) {
      output.rows.push_back({false, pairs, e.num_candidates});
      pairs += e.num_candidates;
    } else {
      output.rows.push_back({true, whole * vocab, vocab});
      ++whole;
    }
  }
  ++num_forward_calls_;
  max_batch_entries_ = std::max(max_batch_entries_, static_cast<int32_t>(batch_.size()));
  // A prefill that ran its last layer has its final layer map.
  for (const scheduler::ExecutorEntry& e : batch.entries) {
    if (!e.is_prefill() || e.layer_end != num_layers) continue;
    const memory::LayerMap& map = sequences_.at(e.request_id)->layer_map();
    for (int32_t l = 0; l < num_layers; ++l) {
      lazy_layer_counts_[static_cast<size_t>(l)] += map.is_lazy(l) ? 1 : 0;
    }
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

}  // namespace lightserve::executor
