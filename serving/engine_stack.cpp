#include "serving/engine_stack.h"

#include <utility>

namespace lightserve::serving {

Result<std::unique_ptr<EngineStack>> EngineStack::create(
    model::LlamaModel& model, const model::LightTransferSettings& settings,
    const EngineStackOptions& options, const scheduler::Clock& clock) {
  const model::LlamaConfig& mc = model.config();
  std::unique_ptr<EngineStack> stack(new EngineStack());
  auto arena = model::KvArena::create(model.backend(), mc, settings, options.kv_budget_bytes,
                                      options.context_tokens, /*block_size=*/16, model.kv_type());
  if (!arena) return Error{"engine.kv_budget: " + arena.error().message};
  stack->arena_ = std::move(arena).value();
  stack->executor_ = std::make_unique<executor::ModelExecutor>(model, *stack->arena_, settings);
  stack->detokenizer_ = std::make_unique<executor::ModelDetokenizer>(model.tokenizer());

  scheduler::SchedulerConfig sc;
  sc.max_context_tokens = options.context_tokens;
  sc.max_running = options.max_running;
  sc.max_waiting = options.max_waiting;
  sc.max_unread_events = options.max_unread_events;
  sc.policy = options.policy == "optimistic" ? scheduler::AdmissionPolicy::kOptimistic
                                             : scheduler::AdmissionPolicy::kReserve;
  sc.priority_scheduling = options.priority_scheduling;
  sc.layered_prefill = options.layered_prefill;
  sc.share_group_prefill = options.share_group_prefill;
  sc.candidate_sampling = options.candidate_sampling;
  sc.step_budget_token_layers = options.step_budget_token_layers;
  sc.step_budget_token_layers = sc.budget_or_default(mc.num_layers);
  for (int32_t id = 0; id < mc.vocab_size; ++id) {
    if (model.tokenizer().is_end_of_generation(id)) sc.eos_token_ids.push_back(id);
  }
  scheduler::Executor* executor = stack->executor_.get();
  if (options.faults) {
    stack->faulty_ =
        std::make_unique<executor::FaultInjectingExecutor>(*stack->executor_, *options.faults);
    executor = stack->faulty_.get();
  }
  auto engine = scheduler::Engine::create(sc, stack->arena_->manager(), *executor,
                                          *stack->detokenizer_, clock);
  if (!engine) return Error{"engine: " + engine.error().message};
  stack->engine_ = std::move(engine).value();
  return stack;
}

EngineStack::~EngineStack() {
  engine_.reset();
}

}  // namespace lightserve::serving
