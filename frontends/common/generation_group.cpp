#include "frontends/common/generation_group.h"

#include <string>
#include <utility>

namespace lightserve::frontends {

std::variant<std::shared_ptr<GenerationGroup>, scheduler::EngineError> GenerationGroup::submit(
    serving::ServingCore& engine, const scheduler::RequestParams& params, int32_t n) {
  std::shared_ptr<GenerationGroup> group(new GenerationGroup(engine));
  std::vector<scheduler::RequestParams> siblings;
  siblings.reserve(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i) {
    scheduler::RequestParams sibling = params;
    sibling.sampling.seed = params.sampling.seed + static_cast<uint64_t>(i);
    if (n > 1) sibling.request_tag.append(".").append(std::to_string(i));
    siblings.push_back(std::move(sibling));
  }
  scheduler::AddGroupResult added = engine.submit_group(std::move(siblings));
  if (!added.ok()) return *added.error;
  group->members_.reserve(added.members.size());
  for (scheduler::AddResult& m : added.members) {
    group->members_.push_back({m.id, std::move(m.events), false});
  }
  return group;
}

GenerationGroup::~GenerationGroup() {
  abort();
}

void GenerationGroup::set_listener(const std::function<void()>& listener) {
  for (Member& m : members_) m.events->set_listener(listener);
}

std::optional<IndexedEvent> GenerationGroup::try_pop() {
  const std::lock_guard lock(mutex_);
  for (size_t k = 0; k < members_.size(); ++k) {
    const size_t i = (next_ + k) % members_.size();
    Member& m = members_[i];
    if (m.finished) continue;
    std::optional<scheduler::RequestEvent> event = m.events->try_pop();
    if (!event) continue;
    if (event->kind == scheduler::RequestEvent::Kind::kFinished) m.finished = true;
    next_ = (i + 1) % members_.size();
    return IndexedEvent{static_cast<int32_t>(i), std::move(*event)};
  }
  return std::nullopt;
}

bool GenerationGroup::finished() const {
  const std::lock_guard lock(mutex_);
  for (const Member& m : members_) {
    if (!m.finished) return false;
  }
  return true;
}

void GenerationGroup::abort() {
  std::vector<scheduler::RequestId> ids;
  {
    const std::lock_guard lock(mutex_);
    for (const Member& m : members_) {
      if (!m.finished && !m.events->finished()) ids.push_back(m.id);
    }
  }
  for (const scheduler::RequestId id : ids) engine_.abort(id);
}

}  // namespace lightserve::frontends
