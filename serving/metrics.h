// The Prometheus metrics of docs/design.md §8 (prefix `lightserve_`, label `model_name`
// everywhere), kept in a prometheus-cpp registry and rendered as text for GET /metrics on the HTTP
// port.
//
// Threads: on_event() and on_step() run on the engine thread; on_rejection() on frontend
// threads; render() anywhere. prometheus-cpp metrics are thread-safe.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <unordered_set>
#include <vector>

#include "memory/capacity.h"
#include "memory/kv_manager.h"
#include "model/lighttransfer.h"
#include "scheduler/engine.h"
#include "scheduler/events.h"

namespace lightserve::serving {

class Metrics {
 public:
  Metrics(const std::string& model_name, const memory::CapacityPlan& plan,
          const model::LightTransferSettings& settings);

  // Every engine event: tokens (inter-token latency, generation tokens) and finishes (TTFT, e2e,
  // queue time, prompt and generation token counts, success by finish reason).
  void on_event(const scheduler::RequestEvent& event);
  // After each engine step: the gauges (running, held, waiting from `stats`), preemptions
  // (stats' running total) and lazy-layer selections (per-layer running totals).
  // kv_usage: the KV pages in use, and held by full and by lazy layers.
  void on_step(const scheduler::EngineStats& stats, const memory::KvUsage& kv_usage,
               std::span<const int64_t> lazy_layer_counts);
  // A request refused at admission (queue full, draining, too long for the arena).
  void on_rejection();

  std::string render() const;

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Labels labels_;
  prometheus::Gauge* running_;
  prometheus::Gauge* held_;
  prometheus::Gauge* waiting_;
  prometheus::Gauge* kv_usage_;
  prometheus::Gauge* full_usage_;  // lightserve_kv_cache_usage_by_kind_perc{kind="full"}
  prometheus::Gauge* lazy_usage_;  // {kind="lazy"}
  prometheus::Histogram* ttft_;
  prometheus::Histogram* itl_;
  prometheus::Histogram* e2e_;
  prometheus::Histogram* queue_;
  prometheus::Histogram* prompt_tokens_hist_;
  prometheus::Histogram* generation_tokens_hist_;
  prometheus::Counter* prompt_tokens_;
  prometheus::Counter* generation_tokens_;
  prometheus::Family<prometheus::Counter>* success_;
  prometheus::Counter* preemptions_;
  prometheus::Counter* prefill_tokens_;  // computed by prefills (shared prefills count once)
  prometheus::Counter* forks_;
  prometheus::Counter* rejections_;
  prometheus::Family<prometheus::Counter>* lazy_selected_;
  std::vector<prometheus::Counter*> lazy_per_layer_;
  int64_t preemptions_seen_ = 0;
  int64_t prefill_tokens_seen_ = 0;
  int64_t forks_seen_ = 0;
  std::vector<int64_t> lazy_seen_;
  std::unordered_set<scheduler::RequestId> has_first_token_;  // engine thread only
};

}  // namespace lightserve::serving
