// Fakes for the scheduler tests (docs/design.md §11 habit 7): a deterministic "model" behind the
// Executor interface that also checks the catch-up contract of scheduler/executor.h, a table
// detokenizer and a settable clock.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <new>
#include <span>
#include <string>
#include <vector>

#include "scheduler/clock.h"
#include "scheduler/detokenizer.h"
#include "scheduler/executor.h"

namespace lightserve::scheduler::testing {

// next token = hash(every previous token) % vocab, or eos_id with probability eos_probability
// (also decided by the hash). The same context always gives the same logits, so a greedy output
// is reproducible and a recomputed request can be compared with an undisturbed run. An entry that
// asks for candidates gets the row's best ones (sampling::ranks_before order), as a GPU executor
// would, unless max_candidates is 0 (whole rows only).
class FakeExecutor final : public Executor {
 public:
  struct Options {
    int32_t vocab_size = 64;
    int32_t num_layers = 4;
    int32_t eos_id = 0;
    double eos_probability = 0.0;
    uint64_t seed = 1;
    int32_t max_candidates = 16;  // Executor::max_candidates()
    // The other tokens' logits: 0 (false), or a few hashed levels below the next token's 4.0 with
    // many ties (true), so that temperature sampling has a real distribution to draw from.
    bool varied_logits = false;
  };

  struct EntryRecord {
    RequestId id = 0;
    bool prefill = false;
    int32_t num_tokens = 0;
    int32_t layer_begin = 0;
    int32_t layer_end = 0;
    int32_t num_candidates = 0;
  };

  explicit FakeExecutor(Options options) : options_(options) {}

  static uint64_t mix(uint64_t x) {  // splitmix64 finalizer
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
  }

  int32_t next_token(std::span<const int32_t> context) const {
    uint64_t h = mix(options_.seed);
    for (int32_t t : context) h = mix(h ^ static_cast<uint64_t>(t));
    const double u = static_cast<double>(mix(h ^ 0xe05ULL) >> 11) * 0x1.0p-53;
    if (u < options_.eos_probability) return options_.eos_id;
    int32_t token = static_cast<int32_t>(h % static_cast<uint64_t>(options_.vocab_size));
    if (token == options_.eos_id) token = (token + 1) % options_.vocab_size;
    return token;
  }

  std::vector<float> logits_for(std::span<const int32_t> context) const {
    std::vector<float> logits(static_cast<size_t>(options_.vocab_size), 0.0f);
    if (options_.varied_logits) {
      uint64_t h = mix(options_.seed ^ 0x10617ULL);
      for (int32_t t : context) h = mix(h ^ static_cast<uint64_t>(t));
      for (size_t i = 0; i < logits.size(); ++i) {
        logits[i] = 0.25f * static_cast<float>(mix(h + i) % 8);  // 0 .. 1.75, ties everywhere
      }
    }
    logits[static_cast<size_t>(next_token(context))] = 4.0f;
    return logits;
  }

  // The row's best k in rank order (what a GPU executor's topk_rows gives).
  static std::vector<sampling::Candidate> best_of(std::span<const float> row, int32_t k) {
    std::vector<sampling::Candidate> all;
    for (size_t i = 0; i < row.size(); ++i) all.push_back({static_cast<int32_t>(i), row[i]});
    std::sort(all.begin(), all.end(), sampling::ranks_before);
    all.resize(std::min(all.size(), static_cast<size_t>(k)));
    return all;
  }

  int32_t vocab_size() const override { return options_.vocab_size; }
  int32_t max_candidates() const override { return options_.max_candidates; }

  Status execute(const StepBatch& batch, StepOutput& output) override {
    ++num_steps_;
    output.clear();
    std::vector<EntryRecord> record;
    for (const ExecutorEntry& e : batch.entries) {
      record.push_back({e.request_id, e.is_prefill(), static_cast<int32_t>(e.tokens.size()),
                        e.layer_begin, e.layer_end, e.num_candidates});
    }
    steps_.push_back(record);
    if (fail_at_step_ == num_steps_) return Error{"injected failure"};
    if (throw_at_step_ == num_steps_) throw std::bad_alloc();

    for (const ExecutorEntry& e : batch.entries) {
      EXPECT_NE(e.kv, nullptr);
      EXPECT_FALSE(e.kv->empty()) << "request " << e.request_id;
      EXPECT_GE(e.kv->token_capacity(), e.position + static_cast<int64_t>(e.tokens.size()))
          << "request " << e.request_id << ": KV too small for the entry";
      EXPECT_EQ(e.needs_logits, e.layer_end == options_.num_layers);
      EXPECT_GE(e.num_candidates, 0);
      EXPECT_LE(e.num_candidates, options_.max_candidates);
      if (!e.needs_logits || e.prompt_logprobs != nullptr) {
        EXPECT_EQ(e.num_candidates, 0) << "request " << e.request_id;
      }
      if (e.begins_sequence) {
        EXPECT_EQ(states_.count(e.request_id), 0u) << "request " << e.request_id << " began twice";
        states_[e.request_id] = State{e.kv, 0, {}, false};
      }
      auto it = states_.find(e.request_id);
      if (it == states_.end()) {
        ADD_FAILURE() << "request " << e.request_id << " continued without beginning";
        return Error{"unknown request"};
      }
      State& s = it->second;
      EXPECT_EQ(s.kv, e.kv) << "request " << e.request_id << ": KV handle moved";
      if (e.is_prefill()) {
        EXPECT_FALSE(s.prefilled) << "request " << e.request_id;
        EXPECT_EQ(e.layer_begin, s.layers_done) << "request " << e.request_id;
        EXPECT_LT(e.layer_begin, e.layer_end);
        if (s.layers_done > 0) {
          EXPECT_TRUE(
              std::equal(s.context.begin(), s.context.end(), e.tokens.begin(), e.tokens.end()))
              << "request " << e.request_id << ": prefill tokens changed between layer ranges";
        }
        s.context.assign(e.tokens.begin(), e.tokens.end());
        s.layers_done = e.layer_end;
        s.prefilled = e.layer_end == options_.num_layers;
      } else {
        EXPECT_TRUE(s.prefilled) << "request " << e.request_id << " decodes before its prefill";
        EXPECT_EQ(e.position, static_cast<int32_t>(s.context.size()));
        EXPECT_EQ(e.tokens.size(), 1u);
        EXPECT_EQ(e.layer_begin, 0);
        EXPECT_EQ(e.layer_end, options_.num_layers);
        s.context.push_back(e.tokens[0]);
      }
      if (e.needs_logits) {
        const std::vector<float> row = logits_for(s.context);
        if (e.num_candidates > 0) {
          output.add_candidates(best_of(row, e.num_candidates));
        } else {
          output.add_logits(row);
        }
      }
    }
    return Status::Ok();
  }

  // Checks the fork contract: the parent has just prefilled, the child's KV is fresh, of the
  // parent's footprint and room; the child starts with the parent's context.
  Status fork(RequestId parent, RequestId child, memory::KvAllocation& child_kv) override {
    ++num_forks_;
    auto it = states_.find(parent);
    if (it == states_.end() || !it->second.prefilled) {
      ADD_FAILURE() << "fork of request " << parent << ", which has not prefilled";
      return Error{"fork of an unknown parent"};
    }
    EXPECT_EQ(states_.count(child), 0u) << "request " << child << " forked twice";
    EXPECT_TRUE(child_kv.footprint() == it->second.kv->footprint());
    EXPECT_GE(child_kv.token_capacity(), static_cast<int64_t>(it->second.context.size()));
    if (fail_forks_) return Error{"injected fork failure"};
    child_kv.layer_map() = it->second.kv->layer_map();
    State s = it->second;
    s.kv = &child_kv;
    states_[child] = std::move(s);
    return Status::Ok();
  }

  void release(RequestId id) override {
    ++num_releases_;
    states_.erase(id);
  }

  void fail_at_step(int64_t step) { fail_at_step_ = step; }
  // The executor throws std::bad_alloc at that step (an allocation failing mid-step).
  void throw_at_step(int64_t step) { throw_at_step_ = step; }
  void fail_forks(bool fail) { fail_forks_ = fail; }
  int64_t num_forks() const { return num_forks_; }
  int64_t num_steps() const { return num_steps_; }
  size_t num_live_states() const { return states_.size(); }
  int64_t num_releases() const { return num_releases_; }
  const std::vector<std::vector<EntryRecord>>& steps() const { return steps_; }
  const Options& options() const { return options_; }

 private:
  struct State {
    const memory::KvAllocation* kv = nullptr;
    int32_t layers_done = 0;
    std::vector<int32_t> context;  // tokens in the KV
    bool prefilled = false;
  };
  Options options_;
  std::map<RequestId, State> states_;
  std::vector<std::vector<EntryRecord>> steps_;
  int64_t num_steps_ = 0;
  int64_t fail_at_step_ = -1;
  int64_t throw_at_step_ = -1;
  int64_t num_releases_ = 0;
  int64_t num_forks_ = 0;
  bool fail_forks_ = false;
};

// Each id becomes two letters: 'a' + id % 26, then 'A' + id / 26 % 26.
inline std::string fake_piece(int32_t id) {
  return {static_cast<char>('a' + id % 26), static_cast<char>('A' + id / 26 % 26)};
}

class FakeDetokenizer final : public Detokenizer {
 public:
  std::unique_ptr<TextStream> start() const override {
    struct Stream final : TextStream {
      std::string push(int32_t id) override { return fake_piece(id); }
      std::string flush() override { return {}; }
    };
    return std::make_unique<Stream>();
  }
};

class FakeClock final : public Clock {
 public:
  double now_seconds() const override { return now_.load(); }
  void advance(double seconds) { now_.store(now_.load() + seconds); }

 private:
  std::atomic<double> now_{100.0};
};

}  // namespace lightserve::scheduler::testing
