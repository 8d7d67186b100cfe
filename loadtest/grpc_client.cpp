#include "loadtest/grpc_client.h"

#include <chrono>
#include <utility>

namespace lightserve::loadtest {

namespace {

std::chrono::system_clock::time_point deadline_after(double seconds) {
  return std::chrono::system_clock::now() +
         std::chrono::duration_cast<std::chrono::system_clock::duration>(
             std::chrono::duration<double>(seconds));
}

// One GenerateStream call; deletes itself when gRPC reports the call done.
class StreamCall final : public grpc::ClientReadReactor<v1::GenerateStreamResponse> {
 public:
  StreamCall(v1::GenerateRequest request, const GenerationSettings& settings,
             std::function<void(StreamResult)> done)
      : request_(std::move(request)), done_(std::move(done)) {
    context_.set_deadline(deadline_after(settings.timeout_seconds));
    if (!settings.api_key.empty()) {
      std::string bearer = "Bearer ";
      bearer.append(settings.api_key);
      context_.AddMetadata("authorization", bearer);
    }
  }

  void start(v1::Generation::Stub& stub) {
    result_.start = Clock::now();
    stub.async()->GenerateStream(&context_, &request_, this);
    StartRead(&response_);
    StartCall();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // the stream ended; OnDone follows
    const auto arrival = Clock::now();
    int num_tokens = 0;
    for (const v1::GeneratedToken& t : response_.tokens()) {
      ++num_tokens;
      result_.text.append(t.text());
    }
    if (num_tokens > 0) result_.chunks.push_back(Chunk{arrival, num_tokens});
    if (response_.has_finish()) {
      finished_ = true;
      result_.text.append(response_.finish().text());
      result_.prompt_tokens = response_.finish().usage().prompt_tokens();
      result_.completion_tokens = response_.finish().usage().completion_tokens();
    }
    StartRead(&response_);
  }

  void OnDone(const grpc::Status& status) override {
    result_.end = Clock::now();
    if (!status.ok()) {
      result_.error_reason = "grpc_";
      result_.error_reason.append(grpc_code_name(status.error_code()));
      result_.error_detail = status.error_message().substr(0, 300);
      if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
        result_.error_reason = "timeout";
      }
    } else if (!finished_) {
      result_.error_reason = "closed";
      result_.error_detail = "the stream ended without a finish";
    }
    done_(std::move(result_));
    delete this;
  }

 private:
  grpc::ClientContext context_;
  v1::GenerateRequest request_;
  v1::GenerateStreamResponse response_;
  StreamResult result_;
  bool finished_ = false;
  std::function<void(StreamResult)> done_;
};

}  // namespace

std::string grpc_code_name(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      return "CODE_" + std::to_string(static_cast<int>(code));
  }
}

GrpcClient::GrpcClient(const std::string& target, GenerationSettings settings)
    : settings_(std::move(settings)) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  channel_ = grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
  stub_ = v1::Generation::NewStub(channel_);
}

v1::GenerateRequest GrpcClient::request_message(const RequestSpec& spec) const {
  v1::GenerateRequest request;
  if (spec.messages.empty()) {
    request.set_text(spec.prompt);
  } else {
    for (const ChatMessage& m : spec.messages) {
      v1::ChatMessage* message = request.mutable_chat()->add_messages();
      message->set_role(m.role);
      message->set_content(m.content);
    }
  }
  request.set_model(settings_.model);
  request.set_max_tokens(spec.max_tokens);
  request.set_temperature(static_cast<float>(settings_.temperature));
  if (settings_.ignore_eos) {
    request.set_ignore_eos(true);
    request.set_min_tokens(spec.max_tokens);
  }
  return request;
}

void GrpcClient::start(const RequestSpec& spec, std::function<void(StreamResult)> done) {
  auto* call = new StreamCall(request_message(spec), settings_, std::move(done));
  call->start(*stub_);
}

namespace {

// A blocking call's context: its deadline and the key.
void prepare_unary(grpc::ClientContext& context, const GenerationSettings& settings,
                   double timeout_seconds) {
  context.set_deadline(deadline_after(timeout_seconds));
  if (!settings.api_key.empty()) {
    std::string bearer = "Bearer ";
    bearer.append(settings.api_key);
    context.AddMetadata("authorization", bearer);
  }
}

Error unary_error(const char* method, const grpc::Status& status) {
  std::string message = method;
  message.append(" failed: ");
  message.append(grpc_code_name(status.error_code()));
  message.append(": ");
  message.append(status.error_message());
  return Error{message};
}

}  // namespace

Result<std::string> GrpcClient::model_name(double timeout_seconds) {
  grpc::ClientContext context;
  prepare_unary(context, settings_, timeout_seconds);
  v1::GetModelInfoRequest request;
  v1::GetModelInfoResponse response;
  const grpc::Status status = stub_->GetModelInfo(&context, request, &response);
  if (!status.ok()) return unary_error("GetModelInfo", status);
  return response.name();
}

Result<int> GrpcClient::num_devices(double timeout_seconds) {
  grpc::ClientContext context;
  prepare_unary(context, settings_, timeout_seconds);
  v1::GetServerInfoRequest request;
  v1::GetServerInfoResponse response;
  const grpc::Status status = stub_->GetServerInfo(&context, request, &response);
  if (!status.ok()) return unary_error("GetServerInfo", status);
  return static_cast<int>(response.num_devices());
}

}  // namespace lightserve::loadtest
