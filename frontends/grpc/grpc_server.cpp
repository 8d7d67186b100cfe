// The gRPC frontend (grpc_server.h): lightserve.v1.Generation on the callback API, health, and
// reflection v1alpha (gRPC's plugin) and v1 (reflection_v1.h). A request with n > 1 is n sibling
// requests read through one GenerationGroup.
//
// Threads and lifetimes. Handlers and reactions run on gRPC's callback threads; EventStream
// listeners run on the engine thread. Neither blocks: a listener only pops what is ready and
// starts a write (or the Finish). A generation reactor is owned by a shared_ptr that it holds on
// itself until OnDone; the stream's listener holds a weak_ptr, so an engine push that races with
// OnDone never touches a freed reactor. Each reactor keeps at most one write in flight, calls
// Finish (or StartWriteAndFinish) exactly once, after the engine's kFinished event, and turns a
// cancelled call into serving::ServingCore::abort (the request's KV is freed in the engine's next
// step).
//
// The methods are registered raw (ByteBuffer in and out) so that bytes which are not a valid
// request get INVALID_ARGUMENT naming the message type; with typed methods the callback API
// answers UNIMPLEMENTED with no message. Authentication comes before parsing.
//
// Requests and responses are converted by proto_conversion.h (the translation both frontends
// share), so unset sampling fields take the OpenAI API's defaults (generation.proto).
#include "frontends/grpc/grpc_server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "frontends/common/auth.h"
#include "frontends/common/error_mapping.h"
#include "frontends/common/generation_group.h"
#include "frontends/common/request_translation.h"
#include "frontends/grpc/proto_conversion.h"
#include "frontends/grpc/reflection_v1.h"
#include "lightserve/v1/generation.grpc.pb.h"
#include "model/tokenizer.h"

namespace lightserve::frontends {
namespace {

namespace v1 = ::lightserve::v1;
using scheduler::EngineError;
using scheduler::ErrorKind;
using scheduler::RequestEvent;

constexpr const char* kServiceName = "lightserve.v1.Generation";

grpc::Status to_status(const EngineError& error) {
  return {grpc_code(error.kind), error.message};
}

EngineError invalid(std::string message) {
  return {ErrorKind::kInvalidArgument, std::move(message)};
}

// --- Authentication ------------------------------------------------------------------------

// nullopt when no key is configured or the call carries `authorization: Bearer KEY`
// (frontends/common/auth.h: the same parsing as the HTTP header).
std::optional<EngineError> check_api_key(const grpc::CallbackServerContext& context,
                                         const std::string& api_key) {
  std::vector<std::string_view> values;
  const auto [first, last] = context.client_metadata().equal_range("authorization");
  for (auto it = first; it != last; ++it) values.emplace_back(it->second.data(), it->second.size());
  return check_bearer(values, api_key, "metadata");
}

// --- Wire ----------------------------------------------------------------------------------

template <typename Message>
std::optional<EngineError> parse(const grpc::ByteBuffer& bytes, Message& message) {
  grpc::ByteBuffer consumed(bytes);  // Deserialize empties its buffer; the copy shares the slices
  if (grpc::SerializationTraits<Message>::Deserialize(&consumed, &message).ok())
    return std::nullopt;
  return invalid("the request is not a valid " + Message::descriptor()->full_name() +
                 " (malformed protobuf, or a string field that is not UTF-8)");
}

template <typename Message>
std::optional<EngineError> serialize(const Message& message, grpc::ByteBuffer& out) {
  out.Clear();  // the writer needs an empty buffer; a written one is done with its bytes
  bool own_buffer = false;
  if (grpc::SerializationTraits<Message>::Serialize(message, &out, &own_buffer).ok()) {
    return std::nullopt;
  }
  return EngineError{ErrorKind::kInternal,
                     "cannot serialize the " + Message::descriptor()->full_name()};
}

// --- Requests ------------------------------------------------------------------------------

// What a generation call got from submit(): its samples and what every message carries.
struct Submitted {
  std::shared_ptr<GenerationGroup> group;
  std::string echo;  // the prompt's text when the request asked for echo
  std::string fingerprint;
  int32_t prompt_logprobs = -1;     // GenerateRequest.prompt_logprobs, -1 when not asked
  std::vector<int32_t> prompt_ids;  // the prompt's tokens when it was
};

// Authenticates, parses, converts, prepares and submits the request's n samples: the error (if
// any) is the status to finish the call with.
std::optional<EngineError> submit(serving::ServingCore& engine,
                                  grpc::CallbackServerContext& context,
                                  const grpc::ByteBuffer& bytes, Submitted& out) {
  // The client's x-request-id or one made for it: the request's tag (logs, kFinished), answered
  // in the initial metadata of every reply, refusals too (before any write: nothing is sent yet).
  const auto id = context.client_metadata().find("x-request-id");
  const std::string tag = request_tag(id == context.client_metadata().end()
                                          ? std::string_view()
                                          : std::string_view(id->second.data(), id->second.size()));
  context.AddInitialMetadata("x-request-id", tag);
  if (auto error = check_api_key(context, engine.config().api_key)) return error;
  v1::GenerateRequest request;
  if (auto error = parse(bytes, request)) return error;
  Result<serving::GenerateInput> input =
      proto::to_generate_input(request, translation_context(engine));
  if (!input) return refusal(input.error().message);
  scheduler::RequestParams params;
  if (auto error = engine.prepare(input.value(), params)) return error;
  params.request_tag = tag;
  auto group = GenerationGroup::submit(engine, params, input.value().n);
  if (auto* error = std::get_if<EngineError>(&group)) return *error;
  out.group = std::get<std::shared_ptr<GenerationGroup>>(std::move(group));
  if (input.value().echo) out.echo = echo_text(input.value(), engine.tokenizer());
  out.fingerprint = engine.system_fingerprint();
  out.prompt_logprobs = input.value().prompt_logprobs_field;
  if (out.prompt_logprobs >= 0) out.prompt_ids = params.prompt;
  return std::nullopt;
}

// --- Generation reactors -------------------------------------------------------------------

// What both generation reactors share (CRTP: `Reactor` derives from this and from its gRPC
// reactor, and has start_response() and pump()): the request's samples, the self-reference that
// keeps the reactor alive until OnDone, the listener hookup, cancellation.
template <typename Reactor>
class EngineCall : public std::enable_shared_from_this<Reactor> {
 protected:
  explicit EngineCall(serving::ServingCore& engine) : engine_(engine) {}

  // Runs after the reactor is built: submit, then either finish at once or follow the stream.
  void begin(grpc::CallbackServerContext& context, const grpc::ByteBuffer& request) {
    self_ = this->shared_from_this();
    Submitted submitted;
    if (auto error = submit(engine_, context, request, submitted)) {
      {
        const std::lock_guard lock(mutex_);
        done_ = true;
      }
      self_->Finish(to_status(*error));
      return;
    }
    group_ = std::move(submitted.group);
    {
      const std::lock_guard lock(mutex_);
      prompt_logprobs_ = submitted.prompt_logprobs;
      prompt_ids_ = std::move(submitted.prompt_ids);
      self_->start_response(submitted.echo, submitted.fingerprint);
    }
    group_->set_listener([weak = this->weak_from_this()] {
      if (auto reactor = weak.lock()) reactor->pump();
    });
    self_->pump();  // events pushed before the listener was set are not announced
  }

  void abort_request() {
    if (group_) group_->abort();
  }
  // OnCancel: the engine's kAbort finish follows, and pump() finishes the call with CANCELLED.
  void cancel() {
    {
      const std::lock_guard lock(mutex_);
      cancelled_ = true;
    }
    abort_request();
  }
  // OnDone: drops the self-reference; a listener running now keeps the reactor until it returns.
  void release() { auto keep_until_return = std::move(self_); }

  // The first event carrying the prompt's logprobs fills `out` (GenerateRequest.prompt_logprobs):
  // once per call, the samples share them.
  void take_prompt_logprobs(const RequestEvent& event,
                            google::protobuf::RepeatedPtrField<v1::PromptToken>* out) {
    if (prompt_logprobs_ < 0 || prompt_logprobs_sent_ || event.prompt_logprobs.empty()) return;
    proto::fill_prompt_logprobs(event.prompt_logprobs, prompt_ids_, prompt_logprobs_,
                                engine_.tokenizer(), out);
    prompt_logprobs_sent_ = true;
  }

  serving::ServingCore& engine_;
  std::shared_ptr<Reactor> self_;           // released in OnDone
  std::shared_ptr<GenerationGroup> group_;  // null when the request was refused
  std::mutex mutex_;                        // guards the state below and the response being built
  bool done_ = false;                       // Finish (or StartWriteAndFinish) has been called
  bool cancelled_ = false;                  // OnCancel ran
  int32_t prompt_logprobs_ = -1;            // Submitted::prompt_logprobs
  std::vector<int32_t> prompt_ids_;
  bool prompt_logprobs_sent_ = false;
};

// Generate: collects the events into the response (n > 1: into its choices) and finishes after
// every sample's kFinished, or at the first failed one.
class GenerateReactor final : public grpc::ServerUnaryReactor, public EngineCall<GenerateReactor> {
 public:
  static grpc::ServerUnaryReactor* start(serving::ServingCore& engine,
                                         grpc::CallbackServerContext& context,
                                         const grpc::ByteBuffer& request, grpc::ByteBuffer* out) {
    auto reactor = std::shared_ptr<GenerateReactor>(new GenerateReactor(engine, out));
    reactor->begin(context, request);
    return reactor.get();
  }

  void start_response(const std::string& echo, const std::string& fingerprint) {
    response_.set_system_fingerprint(fingerprint);
    if (group_->size() == 1) {
      response_.set_text(echo);
      return;
    }
    for (int32_t i = 0; i < group_->size(); ++i) {
      v1::GenerateChoice* choice = response_.add_choices();
      choice->set_index(i);
      choice->set_text(echo);
    }
  }

  void pump() {
    std::optional<grpc::Status> status;
    {
      const std::lock_guard lock(mutex_);
      if (done_) return;
      while (auto popped = group_->try_pop()) {
        const RequestEvent& event = popped->event;
        v1::GenerateChoice* choice =
            group_->size() > 1 ? response_.mutable_choices(popped->index) : nullptr;
        std::string* text = choice ? choice->mutable_text() : response_.mutable_text();
        take_prompt_logprobs(event, response_.mutable_prompt_logprobs());
        if (event.kind == RequestEvent::Kind::kToken) {
          text->append(event.text);
          proto::fill_token(event, engine_.tokenizer(),
                            choice ? choice->add_tokens() : response_.add_tokens());
          continue;
        }
        grpc::Status finish = proto::final_status(event, cancelled_);
        if (finish.ok()) {
          text->append(event.text);
          proto::fill_finish(event, choice ? choice->mutable_finish() : response_.mutable_finish());
          if (!group_->finished()) continue;
          if (auto error = serialize(response_, *out_)) finish = to_status(*error);
        }
        status = finish;
        done_ = true;
        break;
      }
    }
    if (!status) return;
    if (!status->ok()) abort_request();  // the other samples, when one failed
    Finish(*status);
  }

  void OnCancel() override { cancel(); }
  void OnDone() override { release(); }

 private:
  GenerateReactor(serving::ServingCore& engine, grpc::ByteBuffer* out)
      : EngineCall(engine), out_(out) {}

  v1::GenerateResponse response_;
  grpc::ByteBuffer* out_;  // owned by gRPC, valid until OnDone; written once, before Finish
};

// GenerateStream: each write carries one sample's tokens ready when the previous write
// completed, and that sample's finish when it came; the last sample's finish goes out with
// StartWriteAndFinish. An error finish after tokens is sent as a status once the tokens' write
// is done.
class GenerateStreamReactor final : public grpc::ServerWriteReactor<grpc::ByteBuffer>,
                                    public EngineCall<GenerateStreamReactor> {
 public:
  static grpc::ServerWriteReactor<grpc::ByteBuffer>* start(serving::ServingCore& engine,
                                                           grpc::CallbackServerContext& context,
                                                           const grpc::ByteBuffer& request) {
    auto reactor = std::shared_ptr<GenerateStreamReactor>(new GenerateStreamReactor(engine));
    reactor->begin(context, request);
    return reactor.get();
  }

  void start_response(const std::string& echo, const std::string& fingerprint) {
    echo_ = echo;
    fingerprint_ = fingerprint;
    echo_sent_.assign(static_cast<size_t>(group_->size()), echo.empty());
  }

  void pump() {
    enum class Action { kNone, kWrite, kWriteAndFinish, kFinish } action = Action::kNone;
    grpc::Status status;
    bool abort_unfinished = false;
    {
      const std::lock_guard lock(mutex_);
      if (done_ || write_in_flight_) return;
      const bool dropped = cancelled_ || write_failed_;  // tokens no longer go out
      response_.Clear();
      std::optional<RequestEvent> finish;  // this message's sample's kFinished
      if (!error_) {
        bool started = false;
        while (auto popped = pending_ ? std::exchange(pending_, std::nullopt) : group_->try_pop()) {
          if (started && popped->index != response_.index()) {
            pending_ = std::move(popped);  // another sample's: the next message
            break;
          }
          started = true;
          response_.set_index(popped->index);
          if (!dropped) take_prompt_logprobs(popped->event, response_.mutable_prompt_logprobs());
          if (popped->event.kind == RequestEvent::Kind::kFinished) {
            finish = std::move(popped->event);
            break;
          }
          if (!dropped) {
            proto::fill_token(popped->event, engine_.tokenizer(), response_.add_tokens());
          }
        }
        if (started && !echo_sent_[static_cast<size_t>(response_.index())]) {
          response_.set_echo_text(echo_);
          echo_sent_[static_cast<size_t>(response_.index())] = true;
        }
      }
      if (finish) {
        status = proto::final_status(*finish, dropped);
        if (status.ok()) {
          proto::fill_finish(*finish, response_.mutable_finish());
        } else {
          error_ = status;
        }
      }
      const bool last = finish && status.ok() && group_->finished();
      if (last) {
        action = Action::kWriteAndFinish;
      } else if (!dropped &&
                 (response_.tokens_size() > 0 || response_.has_finish() ||
                  !response_.echo_text().empty() || response_.prompt_logprobs_size() > 0)) {
        action = Action::kWrite;  // tokens first; an error status follows at the next pump
      } else if (error_) {
        action = Action::kFinish;
        status = *error_;
        abort_unfinished = true;  // the other samples
      } else if (dropped && group_->finished()) {
        action = Action::kFinish;  // cancelled: every sample's abort finish is in
        status = proto::final_status(RequestEvent{}, true);
      }
      if (action == Action::kWrite || action == Action::kWriteAndFinish) {
        response_.set_system_fingerprint(fingerprint_);
        if (auto error = serialize(response_, buffer_)) {
          abort_unfinished = true;
          action = Action::kFinish;
          status = to_status(*error);
        }
      }
      write_in_flight_ = action == Action::kWrite;
      done_ = action == Action::kWriteAndFinish || action == Action::kFinish;
    }
    // Outside the lock: gRPC may run reactions on other threads meanwhile.
    switch (action) {
      case Action::kNone:
        break;
      case Action::kWrite:
        StartWrite(&buffer_);
        break;
      case Action::kWriteAndFinish:
        StartWriteAndFinish(&buffer_, grpc::WriteOptions(), grpc::Status::OK);
        break;
      case Action::kFinish:
        Finish(status);
        break;
    }
    if (abort_unfinished) abort_request();
  }

  void OnWriteDone(bool ok) override {
    {
      const std::lock_guard lock(mutex_);
      write_in_flight_ = false;
      write_failed_ = write_failed_ || !ok;
    }
    if (!ok) abort_request();  // the client is gone; OnCancel may or may not follow
    pump();
  }
  void OnCancel() override { cancel(); }
  void OnDone() override { release(); }

 private:
  explicit GenerateStreamReactor(serving::ServingCore& engine) : EngineCall(engine) {}

  v1::GenerateStreamResponse response_;
  grpc::ByteBuffer buffer_;  // response_'s bytes; not touched while a write is in flight
  std::optional<IndexedEvent> pending_;  // popped for the next message (another sample's)
  std::optional<grpc::Status> error_;    // a sample failed: the call ends with this status
  std::string echo_, fingerprint_;
  std::vector<bool> echo_sent_;  // per sample
  bool write_in_flight_ = false;
  bool write_failed_ = false;
};

// --- The service ---------------------------------------------------------------------------

// Every method raw (see the file comment).
using RawGenerationService = v1::Generation::WithRawCallbackMethod_Generate<
    v1::Generation::WithRawCallbackMethod_GenerateStream<
        v1::Generation::WithRawCallbackMethod_Tokenize<
            v1::Generation::WithRawCallbackMethod_Detokenize<
                v1::Generation::WithRawCallbackMethod_GetModelInfo<
                    v1::Generation::WithRawCallbackMethod_GetServerInfo<
                        v1::Generation::Service>>>>>>;

class GenerationService final : public RawGenerationService {
 public:
  explicit GenerationService(serving::ServingCore& engine) : engine_(engine) {}

  grpc::ServerUnaryReactor* Generate(grpc::CallbackServerContext* context,
                                     const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override {
    return GenerateReactor::start(engine_, *context, *request, response);
  }

  grpc::ServerWriteReactor<grpc::ByteBuffer>* GenerateStream(
      grpc::CallbackServerContext* context, const grpc::ByteBuffer* request) override {
    return GenerateStreamReactor::start(engine_, *context, *request);
  }

  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override {
    return answer(context, *request, response, &GenerationService::tokenize);
  }
  grpc::ServerUnaryReactor* Detokenize(grpc::CallbackServerContext* context,
                                       const grpc::ByteBuffer* request,
                                       grpc::ByteBuffer* response) override {
    return answer(context, *request, response, &GenerationService::detokenize);
  }
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const grpc::ByteBuffer* request,
                                         grpc::ByteBuffer* response) override {
    return answer(context, *request, response, &GenerationService::model_info);
  }
  grpc::ServerUnaryReactor* GetServerInfo(grpc::CallbackServerContext* context,
                                          const grpc::ByteBuffer* request,
                                          grpc::ByteBuffer* response) override {
    return answer(context, *request, response, &GenerationService::server_info);
  }

 private:
  template <typename Request, typename Response>
  using Body = std::optional<EngineError> (GenerationService::*)(const Request&, Response&) const;

  // A quick unary call: authenticate, parse, run `body` on this thread (it does not block),
  // serialize, finish.
  template <typename Request, typename Response>
  grpc::ServerUnaryReactor* answer(grpc::CallbackServerContext* context,
                                   const grpc::ByteBuffer& bytes, grpc::ByteBuffer* out,
                                   Body<Request, Response> body) {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    Request request;
    Response response;
    std::optional<EngineError> error = check_api_key(*context, engine_.config().api_key);
    if (!error) error = parse(bytes, request);
    if (!error) error = (this->*body)(request, response);
    if (!error) error = serialize(response, *out);
    reactor->Finish(error ? to_status(*error) : grpc::Status::OK);
    return reactor;
  }

  std::optional<EngineError> tokenize(const v1::TokenizeRequest& request,
                                      v1::TokenizeResponse& response) const {
    // As Generate tokenizes its prompt (serving::ServingCore::tokenize: prepare() without the
    // limits).
    Result<serving::GenerateInput> input = proto::to_tokenize_input(request);
    if (!input) return invalid(input.error().message);
    std::vector<int32_t> ids;
    if (auto error = engine_.tokenize(input.value(), ids)) return error;
    response.mutable_token_ids()->Add(ids.begin(), ids.end());
    if (request.return_token_strs()) {
      for (const int32_t id : ids) response.add_token_strs(engine_.tokenizer().token_text(id));
    }
    response.set_max_context_tokens(engine_.context_tokens());
    return std::nullopt;
  }

  std::optional<EngineError> detokenize(const v1::DetokenizeRequest& request,
                                        v1::DetokenizeResponse& response) const {
    Result<std::vector<int32_t>> ids =
        proto::to_detokenize_ids(request, translation_context(engine_));
    if (!ids) return invalid(ids.error().message);
    // Proto strings must be UTF-8: detokenize() replaces what is not.
    response.set_text(
        frontends::detokenize(engine_.tokenizer(), ids.value(), request.render_special_tokens()));
    return std::nullopt;
  }

  std::optional<EngineError> model_info(const v1::GetModelInfoRequest& /*request*/,
                                        v1::GetModelInfoResponse& out) const {
    proto::fill_model_info(engine_.model_info(), engine_.chat_template() != nullptr, out);
    return std::nullopt;
  }

  std::optional<EngineError> server_info(const v1::GetServerInfoRequest& /*request*/,
                                         v1::GetServerInfoResponse& out) const {
    const memory::CapacityPlan& plan = engine_.capacity();
    v1::Capacity* capacity = out.mutable_capacity();
    capacity->set_budget_bytes(plan.budget_bytes);
    capacity->set_arena_bytes(plan.arena_bytes);
    capacity->set_num_pages(plan.num_pages);
    capacity->set_block_size(plan.layout.block_size);
    capacity->set_page_bytes(plan.layout.page_bytes());
    capacity->set_context_tokens(plan.context_tokens);
    capacity->set_hybrid_bytes_per_sequence(plan.hybrid_bytes_per_sequence);
    capacity->set_full_bytes_per_sequence(plan.full_bytes_per_sequence);
    capacity->set_max_hybrid_sequences(plan.max_hybrid_sequences);
    capacity->set_max_full_sequences(plan.max_full_sequences);
    // A short request, one of sink + window tokens, and the context (each up to the context).
    for (const int64_t tokens :
         {int64_t{32}, int64_t{plan.layout.ring_tokens()}, plan.context_tokens}) {
      if (tokens > plan.context_tokens ||
          (capacity->sequences_size() > 0 &&
           capacity->sequences(capacity->sequences_size() - 1).tokens() >= tokens)) {
        continue;
      }
      const memory::CapacityPlan::Sequences s = plan.sequences_at(tokens);
      v1::SequenceCapacity* at = capacity->add_sequences();
      at->set_tokens(tokens);
      at->set_hybrid_pages(s.pages_hybrid);
      at->set_full_pages(s.pages_full);
      at->set_max_hybrid_sequences(s.hybrid);
      at->set_max_full_sequences(s.full);
    }

    const model::LightTransferSettings& settings = engine_.lighttransfer();
    v1::LightTransferSettings* lt = out.mutable_lighttransfer();
    lt->set_mode(std::string(model::to_string(settings.mode)));
    lt->set_lazy_fraction(settings.lazy_fraction);
    lt->set_sink(settings.sink);
    lt->set_window(settings.window);
    lt->set_w_last(settings.w_last);
    lt->set_num_full_layers(plan.layout.full_layers);
    lt->set_num_lazy_layers(plan.layout.lazy_layers);
    lt->set_has_plan(settings.plan.has_value());

    const serving::ServeConfig& config = engine_.config();
    const int32_t context = engine_.context_tokens();
    v1::Limits* limits = out.mutable_limits();
    limits->set_context_tokens(context);
    limits->set_max_prompt_tokens(config.max_prompt_tokens > 0 ? config.max_prompt_tokens
                                                               : context);
    limits->set_max_tokens_limit(config.max_tokens_limit > 0 ? config.max_tokens_limit : context);
    limits->set_default_max_tokens(config.default_max_tokens);
    limits->set_max_logprobs(scheduler::RequestParams::kMaxLogprobs);
    limits->set_max_message_bytes(config.max_body_bytes);
    limits->set_max_running(config.max_running);
    limits->set_max_waiting(config.max_waiting);

    const serving::ServingSnapshot snapshot = engine_.snapshot();
    v1::Load* load = out.mutable_load();
    load->set_num_running(snapshot.num_running);
    load->set_num_waiting(snapshot.num_waiting);
    load->set_num_in_flight(engine_.num_in_flight());
    load->set_num_used_pages(snapshot.num_used_pages);
    load->set_num_full_layer_pages(snapshot.num_full_layer_pages);
    load->set_num_lazy_layer_pages(snapshot.num_lazy_layer_pages);

    out.set_ready(engine_.ready());
    out.set_draining(engine_.draining());
    out.set_policy(config.policy);
    // One backend (serving::ServingCore) runs every request: the CPU or one GPU.
    out.set_device(config.device);
    out.set_num_devices(1);
    out.set_system_fingerprint(engine_.system_fingerprint());
    return std::nullopt;
  }

  serving::ServingCore& engine_;
};

// --- The server ----------------------------------------------------------------------------

std::string listen_address(const std::string& host, int32_t port) {
  const bool ipv6 = host.find(':') != std::string::npos && !host.starts_with('[');
  return (ipv6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

class GrpcServerImpl final : public GrpcServer {
 public:
  GrpcServerImpl(std::unique_ptr<GenerationService> service,
                 std::unique_ptr<ReflectionV1Service> reflection,
                 std::unique_ptr<grpc::Server> server, int port)
      : service_(std::move(service)),
        reflection_(std::move(reflection)),
        server_(std::move(server)),
        port_(port) {}
  ~GrpcServerImpl() override { shutdown(0); }

  int port() const override { return port_; }

  void set_not_serving() override {
    grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
    if (health == nullptr) return;
    health->SetServingStatus(false);
    health->SetServingStatus("", false);
    health->SetServingStatus(kServiceName, false);
  }

  void shutdown(double deadline_seconds) override {
    const std::lock_guard lock(shutdown_mutex_);
    if (stopped_) return;
    stopped_ = true;
    set_not_serving();
    // Calls still open at the deadline are cancelled: their reactors abort their requests and
    // finish when the engine's kAbort event arrives (the engine must still be running).
    server_->Shutdown(std::chrono::system_clock::now() +
                      std::chrono::duration_cast<std::chrono::system_clock::duration>(
                          std::chrono::duration<double>(std::max(0.0, deadline_seconds))));
    server_->Wait();
  }

 private:
  std::unique_ptr<GenerationService> service_;
  std::unique_ptr<ReflectionV1Service> reflection_;
  std::unique_ptr<grpc::Server> server_;
  int port_;
  std::mutex shutdown_mutex_;
  bool stopped_ = false;
};

}  // namespace

Result<std::unique_ptr<GrpcServer>> GrpcServer::start(serving::ServingCore& engine) {
  const serving::ServeConfig& config = engine.config();
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();

  auto service = std::make_unique<GenerationService>(engine);
  // Reflection: v1alpha from gRPC's plugin, v1 our own; both resolve health's descriptor.
  link_health_descriptor();
  auto reflection = std::make_unique<ReflectionV1Service>(std::vector<std::string>{
      kServiceName, "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
      "grpc.reflection.v1alpha.ServerReflection"});
  grpc::ServerBuilder builder;
  const std::string address = listen_address(config.host, config.grpc_port);
  int port = 0;
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(service.get());
  builder.RegisterService(reflection.get());
  builder.SetMaxReceiveMessageSize(
      static_cast<int>(std::clamp<int64_t>(config.max_body_bytes, 1, INT_MAX)));
  // Without this, Linux lets a second server bind the same port and share its calls.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    if (server != nullptr) server->Shutdown();
    return Error{"cannot listen on " + address +
                 " (the port is in use, or the host is not an address of this machine)"};
  }
  if (grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService()) {
    health->SetServingStatus("", true);
    health->SetServingStatus(kServiceName, true);
  }
  return std::unique_ptr<GrpcServer>(std::make_unique<GrpcServerImpl>(
      std::move(service), std::move(reflection), std::move(server), port));
}

}  // namespace lightserve::frontends
