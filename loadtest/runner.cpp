#include "loadtest/runner.h"

#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cmath>
#include <cstdio>
#include <memory>
#include <random>

namespace lightserve::loadtest {

namespace asio = boost::asio;

namespace {

Clock::duration to_duration(double seconds) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

struct Session {
  int64_t id = 0;
  SessionPlan plan;
  int num_turns = 1;
  int turn = 0;
  std::vector<ChatMessage> history;
};

class Run {
 public:
  Run(asio::io_context& io, Client& client, const Dataset& dataset, const LoadConfig& load,
      const RunnerOptions& options)
      : io_(io),
        client_(client),
        dataset_(dataset),
        load_(load),
        options_(options),
        work_(asio::make_work_guard(io)),
        arrival_timer_(io),
        deadline_timer_(io),
        progress_timer_(io),
        scrape_timer_(io),
        rng_(load.seed) {
    const int64_t turns = dataset.turns_per_session();
    total_sessions_ = load.num_requests > 0 ? (load.num_requests + turns - 1) / turns
                                            : std::numeric_limits<int64_t>::max();
    open_loop_ = std::isfinite(load.request_rate) && load.request_rate > 0;
  }

  RunOutcome run() {
    start_ = Clock::now();
    asio::post(io_, [this] { begin(); });
    io_.run();
    outcome_.duration_s = std::chrono::duration<double>(end_ - start_).count();
    outcome_.peak_concurrency = peak_in_flight_;
    if (options_.progress) std::fputc('\n', stderr);
    return std::move(outcome_);
  }

 private:
  void begin() {
    if (load_.duration_s > 0) {
      deadline_timer_.expires_after(to_duration(load_.duration_s));
      deadline_timer_.async_wait([this](const boost::system::error_code& ec) {
        if (ec) return;
        time_up_ = true;
        arrival_timer_.cancel();
        pending_sessions_ = 0;
        maybe_finish();
      });
    }
    if (options_.progress) tick_progress();
    if (options_.metrics_target) asio::co_spawn(io_, scrape_loop(), asio::detached);
    if (open_loop_) {
      arrive();
    } else {
      for (int i = 0; i < std::max(1, load_.concurrency); ++i) {
        if (!start_session()) break;
      }
    }
    maybe_finish();
  }

  bool can_start_session() const { return !time_up_ && next_session_ < total_sessions_; }

  bool start_session() {
    if (!can_start_session()) return false;
    auto session = std::make_shared<Session>();
    const int64_t index = next_session_++;
    session->id = load_.first_session + index;
    session->plan = dataset_.session(session->id);
    session->num_turns = static_cast<int>(session->plan.prompts.size());
    if (load_.num_requests > 0) {
      const int64_t left = load_.num_requests - index * dataset_.turns_per_session();
      session->num_turns = static_cast<int>(std::min<int64_t>(session->num_turns, left));
    }
    ++active_sessions_;
    launch_turn(session);
    return true;
  }

  void launch_turn(const std::shared_ptr<Session>& session) {
    RequestSpec spec;
    spec.session = session->id;
    spec.turn = session->turn;
    const size_t t = static_cast<size_t>(session->turn);
    spec.max_tokens = session->plan.output_lens[t];
    spec.approx_prompt_tokens = session->plan.approx_prompt_tokens[t];
    if (dataset_.is_chat()) {
      spec.messages = session->history;
      spec.messages.push_back({"user", session->plan.prompts[t]});
    } else {
      spec.prompt = session->plan.prompts[t];
    }
    ++in_flight_;
    peak_in_flight_ = std::max(peak_in_flight_, in_flight_);
    client_.start(spec, [this, session, spec](StreamResult result) {
      asio::post(io_, [this, session, spec, result = std::move(result)]() mutable {
        on_done(session, spec, std::move(result));
      });
    });
  }

  void on_done(const std::shared_ptr<Session>& session, const RequestSpec& spec,
               StreamResult result) {
    --in_flight_;
    RequestRecord record = make_record(spec, result, start_);
    record.warmup = load_.warmup;
    if (record.ok) {
      ++num_completed_;
      output_tokens_ += record.output_tokens;
    } else {
      ++num_failed_;
    }
    outcome_.records.push_back(std::move(record));
    if (result.ok() && session->turn + 1 < session->num_turns && !time_up_) {
      session->history.push_back(
          {"user", session->plan.prompts[static_cast<size_t>(session->turn)]});
      session->history.push_back({"assistant", std::move(result.text)});
      ++session->turn;
      launch_turn(session);
      return;
    }
    --active_sessions_;
    if (open_loop_) {
      if (pending_sessions_ > 0 && can_start_session()) {
        --pending_sessions_;
        start_session();
      }
    } else {
      start_session();
    }
    maybe_finish();
  }

  // Open loop: the next session arrives now; the one after after a gamma-distributed gap.
  void arrive() {
    if (!can_start_session() || arrived_ >= total_sessions_) return;
    ++arrived_;
    if (load_.max_concurrency > 0 && active_sessions_ >= load_.max_concurrency) {
      ++pending_sessions_;
    } else {
      start_session();
    }
    if (arrived_ >= total_sessions_) return;
    const double theta = 1.0 / (load_.request_rate * load_.burstiness);
    std::gamma_distribution<double> gap(load_.burstiness, theta);
    arrival_timer_.expires_after(to_duration(gap(rng_)));
    arrival_timer_.async_wait([this](const boost::system::error_code& ec) {
      if (ec) return;
      arrive();
      maybe_finish();
    });
  }

  void maybe_finish() {
    if (finished_ || active_sessions_ > 0 || pending_sessions_ > 0) return;
    const bool more = open_loop_ ? (arrived_ < total_sessions_ && !time_up_) : can_start_session();
    if (more) return;
    finished_ = true;
    end_ = Clock::now();
    arrival_timer_.cancel();
    deadline_timer_.cancel();
    progress_timer_.cancel();
    scrape_timer_.cancel();
    if (options_.progress) print_progress();
    work_.reset();
  }

  void print_progress() {
    const double elapsed = std::chrono::duration<double>(Clock::now() - start_).count();
    const bool tty = ::isatty(STDERR_FILENO) != 0;
    std::fprintf(stderr, "%s%s%7.1f s  done %lld  failed %lld  in flight %d  out %.1f tok/s%s",
                 tty ? "\r" : "", load_.warmup ? "warm-up " : "", elapsed,
                 static_cast<long long>(num_completed_), static_cast<long long>(num_failed_),
                 in_flight_, elapsed > 0 ? static_cast<double>(output_tokens_) / elapsed : 0.0,
                 tty ? "   " : "\n");
    std::fflush(stderr);
  }

  void tick_progress() {
    const bool tty = ::isatty(STDERR_FILENO) != 0;
    progress_timer_.expires_after(to_duration(tty ? 0.5 : 5.0));
    progress_timer_.async_wait([this](const boost::system::error_code& ec) {
      if (ec || finished_) return;
      print_progress();
      tick_progress();
    });
  }

  asio::awaitable<void> scrape_loop() {
    const std::vector<std::string>& names = tracked_gauges();
    while (!finished_) {
      const Clock::time_point when = Clock::now();
      HttpReply reply =
          co_await http_fetch(*options_.metrics_target, "/metrics", "", false, options_.api_key,
                              std::max(1.0, options_.metrics_interval_s * 5));
      if (reply.status == 200) {
        MetricsSample sample;
        sample.time_s = std::chrono::duration<double>(when - start_).count();
        sample.values = parse_prometheus(reply.body, names);
        outcome_.metrics.samples.push_back(std::move(sample));
      } else {
        ++outcome_.metrics.num_failed_scrapes;
        outcome_.metrics.last_error =
            reply.status == 0 ? reply.error_detail : "HTTP " + std::to_string(reply.status);
      }
      if (finished_) break;
      scrape_timer_.expires_at(when + to_duration(options_.metrics_interval_s));
      co_await scrape_timer_.async_wait(asio::as_tuple(asio::use_awaitable));
    }
  }

  asio::io_context& io_;
  Client& client_;
  const Dataset& dataset_;
  LoadConfig load_;
  RunnerOptions options_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  asio::steady_timer arrival_timer_, deadline_timer_, progress_timer_, scrape_timer_;
  std::mt19937_64 rng_;
  bool open_loop_ = false;
  int64_t total_sessions_ = 0;
  int64_t next_session_ = 0;
  int64_t arrived_ = 0;
  int64_t pending_sessions_ = 0;
  int active_sessions_ = 0;
  int in_flight_ = 0;
  int peak_in_flight_ = 0;
  int64_t num_completed_ = 0;
  int64_t num_failed_ = 0;
  int64_t output_tokens_ = 0;
  bool time_up_ = false;
  bool finished_ = false;
  Clock::time_point start_, end_;
  RunOutcome outcome_;
};

}  // namespace

RunOutcome run_load(asio::io_context& io, Client& client, const Dataset& dataset,
                    const LoadConfig& load, const RunnerOptions& options) {
  io.restart();
  Run run(io, client, dataset, load, options);
  return run.run();
}

}  // namespace lightserve::loadtest
