#include "serving/metrics.h"

#include <prometheus/text_serializer.h>

#include <sstream>

namespace lightserve::serving {
namespace {

using prometheus::Histogram;

Histogram::BucketBoundaries latency_buckets() {
  return {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,  0.25,  0.5,  0.75,
          1.0,   2.5,   5.0,  7.5,  10.0, 20.0, 40.0, 80.0, 160.0, 640.0};
}
Histogram::BucketBoundaries token_buckets() {
  return {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000};
}

}  // namespace

Metrics::Metrics(const std::string& model_name, const memory::CapacityPlan& plan,
                 const model::LightTransferSettings& settings)
    : registry_(std::make_shared<prometheus::Registry>()), labels_{{"model_name", model_name}} {
  auto gauge = [&](const char* name, const char* help) {
    return &prometheus::BuildGauge().Name(name).Help(help).Register(*registry_).Add(labels_);
  };
  auto counter = [&](const char* name, const char* help) {
    return &prometheus::BuildCounter().Name(name).Help(help).Register(*registry_).Add(labels_);
  };
  auto histogram = [&](const char* name, const char* help, Histogram::BucketBoundaries b) {
    return &prometheus::BuildHistogram()
                .Name(name)
                .Help(help)
                .Register(*registry_)
                .Add(labels_, std::move(b));
  };
  running_ =
      gauge("lightserve_num_requests_running", "Requests holding KV (prefilling or decoding)");
  held_ = gauge("lightserve_num_requests_held",
                "Running requests paused because their client reads their stream too slowly");
  waiting_ = gauge("lightserve_num_requests_waiting", "Requests queued for admission");
  kv_usage_ = gauge("lightserve_kv_cache_usage_perc",
                    "Fraction of KV pages in use (full and lazy layers together), 0-1");
  auto& by_kind = prometheus::BuildGauge()
                      .Name("lightserve_kv_cache_usage_by_kind_perc")
                      .Help(
                          "Fraction of all KV pages held by full (kind=full) or lazy (kind=lazy) "
                          "layers, 0-1; the kinds add up to lightserve_kv_cache_usage_perc")
                      .Register(*registry_);
  prometheus::Labels full_labels = labels_, lazy_labels = labels_;
  full_labels["kind"] = "full";
  lazy_labels["kind"] = "lazy";
  full_usage_ = &by_kind.Add(full_labels);
  lazy_usage_ = &by_kind.Add(lazy_labels);

  prometheus::Labels info = labels_;
  info["block_size"] = std::to_string(plan.layout.block_size);
  info["num_pages"] = std::to_string(plan.num_pages);
  info["lazy_fraction"] = std::to_string(settings.lazy_fraction);
  info["sink"] = std::to_string(settings.sink);
  info["window"] = std::to_string(settings.window);
  info["mode"] = std::string(model::to_string(settings.mode));
  prometheus::BuildGauge()
      .Name("lightserve_cache_config_info")
      .Help("KV cache configuration (labels); value 1")
      .Register(*registry_)
      .Add(info)
      .Set(1);

  ttft_ = histogram("lightserve_time_to_first_token_seconds", "Arrival to first generated token",
                    latency_buckets());
  itl_ = histogram("lightserve_inter_token_latency_seconds", "Time between generated tokens",
                   latency_buckets());
  e2e_ =
      histogram("lightserve_e2e_request_latency_seconds", "Arrival to finish", latency_buckets());
  queue_ = histogram("lightserve_request_queue_time_seconds", "Arrival to first admission",
                     latency_buckets());
  prompt_tokens_hist_ =
      histogram("lightserve_request_prompt_tokens", "Prompt tokens per request", token_buckets());
  generation_tokens_hist_ = histogram("lightserve_request_generation_tokens",
                                      "Generated tokens per request", token_buckets());
  prompt_tokens_ = counter("lightserve_prompt_tokens_total", "Prompt tokens of finished requests");
  generation_tokens_ = counter("lightserve_generation_tokens_total", "Tokens generated");
  success_ = &prometheus::BuildCounter()
                  .Name("lightserve_request_success_total")
                  .Help("Finished requests by finish reason (stop, length, abort, error)")
                  .Register(*registry_);
  for (const char* reason : {"stop", "length", "abort", "error"}) {
    prometheus::Labels l = labels_;
    l["finished_reason"] = reason;
    success_->Add(l);  // present at 0 from the start
  }
  preemptions_ = counter("lightserve_num_preemptions_total", "Requests preempted (recomputed)");
  prefill_tokens_ = counter("lightserve_prefill_tokens_total",
                            "Prompt tokens computed by prefills (recomputes included; the samples "
                            "of one prompt share one prefill)");
  forks_ = counter("lightserve_shared_prefill_samples_total",
                   "Samples (n > 1) started from a sibling's prefill instead of their own");
  rejections_ = counter("lightserve_admission_rejections_total",
                        "Requests refused at admission (queue full, draining, too long)");
  lazy_selected_ = &prometheus::BuildCounter()
                        .Name("lightserve_lazy_layer_selected_total")
                        .Help("Prefills that served this layer lazily (LightTransfer)")
                        .Register(*registry_);
  for (int32_t l = 0; l < plan.layout.num_layers; ++l) {
    prometheus::Labels ll = labels_;
    ll["layer"] = std::to_string(l);
    lazy_per_layer_.push_back(&lazy_selected_->Add(ll));
  }
  lazy_seen_.assign(lazy_per_layer_.size(), 0);
}

void Metrics::on_event(const scheduler::RequestEvent& event) {
  using Kind = scheduler::RequestEvent::Kind;
  if (event.kind == Kind::kToken) {
    generation_tokens_->Increment();
    // A request's first token interval is its TTFT (observed at the finish); later ones are ITL.
    if (!has_first_token_.insert(event.request_id).second) itl_->Observe(event.inter_token_seconds);
    return;
  }
  has_first_token_.erase(event.request_id);
  if (event.token_id >= 0) generation_tokens_->Increment();  // a stop token id: never streamed
  const scheduler::RequestTimings& t = event.timings;
  prometheus::Labels l = labels_;
  l["finished_reason"] = scheduler::to_string(*event.finish_reason);
  success_->Add(l).Increment();
  e2e_->Observe(t.e2e_seconds);
  if (t.queue_seconds > 0 || t.num_generated_tokens > 0) queue_->Observe(t.queue_seconds);
  if (t.num_generated_tokens > 0) ttft_->Observe(t.time_to_first_token);
  prompt_tokens_->Increment(t.num_prompt_tokens);
  prompt_tokens_hist_->Observe(t.num_prompt_tokens);
  generation_tokens_hist_->Observe(t.num_generated_tokens);
}

void Metrics::on_step(const scheduler::EngineStats& stats, const memory::KvUsage& kv_usage,
                      std::span<const int64_t> lazy_layer_counts) {
  const int64_t num_preemptions_total = stats.num_preemptions_total;
  running_->Set(stats.num_running);
  held_->Set(stats.num_held);
  waiting_->Set(stats.num_waiting);
  kv_usage_->Set(kv_usage.used);
  full_usage_->Set(kv_usage.full);
  lazy_usage_->Set(kv_usage.lazy);
  if (num_preemptions_total > preemptions_seen_) {
    preemptions_->Increment(static_cast<double>(num_preemptions_total - preemptions_seen_));
    preemptions_seen_ = num_preemptions_total;
  }
  if (stats.num_prefill_tokens_total > prefill_tokens_seen_) {
    prefill_tokens_->Increment(
        static_cast<double>(stats.num_prefill_tokens_total - prefill_tokens_seen_));
    prefill_tokens_seen_ = stats.num_prefill_tokens_total;
  }
  if (stats.num_forks_total > forks_seen_) {
    forks_->Increment(static_cast<double>(stats.num_forks_total - forks_seen_));
    forks_seen_ = stats.num_forks_total;
  }
  for (size_t l = 0; l < lazy_layer_counts.size() && l < lazy_per_layer_.size(); ++l) {
    if (lazy_layer_counts[l] > lazy_seen_[l]) {
      lazy_per_layer_[l]->Increment(static_cast<double>(lazy_layer_counts[l] - lazy_seen_[l]));
      lazy_seen_[l] = lazy_layer_counts[l];
    }
  }
}

void Metrics::on_rejection() {
  rejections_->Increment();
}

std::string Metrics::render() const {
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, registry_->Collect());
  return out.str();
}

}  // namespace lightserve::serving
