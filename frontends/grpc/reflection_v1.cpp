#include "frontends/grpc/reflection_v1.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>

#include <deque>
#include <mutex>
#include <set>
#include <utility>

#include "grpc/health/v1/health.pb.h"

namespace lightserve::frontends {
namespace {

namespace rv1 = ::grpc::reflection::v1;
using google::protobuf::DescriptorPool;
using google::protobuf::FileDescriptor;

// `file` and every file it imports, each serialized once, `file` first.
void add_file_with_imports(const FileDescriptor* file, std::set<std::string>& seen,
                           rv1::FileDescriptorResponse* out) {
  if (!seen.insert(file->name()).second) return;
  google::protobuf::FileDescriptorProto proto;
  file->CopyTo(&proto);
  out->add_file_descriptor_proto(proto.SerializeAsString());
  for (int i = 0; i < file->dependency_count(); ++i) {
    add_file_with_imports(file->dependency(i), seen, out);
  }
}

// One bidi stream: each request read is answered by one write, in order.
class ReflectionReactor final
    : public grpc::ServerBidiReactor<rv1::ServerReflectionRequest, rv1::ServerReflectionResponse> {
 public:
  explicit ReflectionReactor(const ReflectionV1Service& service) : service_(service) {
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // the client closed its side: finish once the answers are written
      const std::lock_guard lock(mutex_);
      reading_done_ = true;
      if (!writing_) Finish(grpc::Status::OK);
      return;
    }
    const std::lock_guard lock(mutex_);
    answers_.push_back(service_.answer(request_));
    if (!writing_) {
      writing_ = true;
      StartWrite(&answers_.front());
    }
    StartRead(&request_);
  }

  void OnWriteDone(bool ok) override {
    const std::lock_guard lock(mutex_);
    answers_.pop_front();
    if (!ok) {
      writing_ = false;
      return;  // the call is going away; OnDone follows
    }
    if (!answers_.empty()) {
      StartWrite(&answers_.front());
      return;
    }
    writing_ = false;
    if (reading_done_) Finish(grpc::Status::OK);
  }

  void OnDone() override { delete this; }

 private:
  const ReflectionV1Service& service_;
  rv1::ServerReflectionRequest request_;
  // Recursive: a reaction gRPC runs inline from a Start* call would take it again.
  std::recursive_mutex mutex_;
  std::deque<rv1::ServerReflectionResponse> answers_;  // front: being written
  bool writing_ = false;
  bool reading_done_ = false;
};

}  // namespace

ReflectionV1Service::ReflectionV1Service(std::vector<std::string> services)
    : services_(std::move(services)) {}

grpc::ServerBidiReactor<rv1::ServerReflectionRequest, rv1::ServerReflectionResponse>*
ReflectionV1Service::ServerReflectionInfo(grpc::CallbackServerContext* /*context*/) {
  return new ReflectionReactor(*this);
}

rv1::ServerReflectionResponse ReflectionV1Service::answer(
    const rv1::ServerReflectionRequest& request) const {
  rv1::ServerReflectionResponse response;
  response.set_valid_host(request.host());
  *response.mutable_original_request() = request;
  const DescriptorPool* pool = DescriptorPool::generated_pool();
  const auto not_found = [&response](const std::string& what) {
    rv1::ErrorResponse* error = response.mutable_error_response();
    error->set_error_code(static_cast<int32_t>(grpc::StatusCode::NOT_FOUND));
    error->set_error_message(what + " not found");
  };
  const FileDescriptor* file = nullptr;
  std::set<std::string> seen;
  switch (request.message_request_case()) {
    case rv1::ServerReflectionRequest::kListServices:
      for (const std::string& name : services_) {
        response.mutable_list_services_response()->add_service()->set_name(name);
      }
      return response;
    case rv1::ServerReflectionRequest::kFileByFilename:
      file = pool->FindFileByName(request.file_by_filename());
      if (file == nullptr) not_found("file '" + request.file_by_filename() + "'");
      break;
    case rv1::ServerReflectionRequest::kFileContainingSymbol:
      file = pool->FindFileContainingSymbol(request.file_containing_symbol());
      if (file == nullptr) not_found("symbol '" + request.file_containing_symbol() + "'");
      break;
    case rv1::ServerReflectionRequest::kFileContainingExtension: {
      const rv1::ExtensionRequest& ext = request.file_containing_extension();
      const auto* type = pool->FindMessageTypeByName(ext.containing_type());
      const auto* field =
          type == nullptr ? nullptr : pool->FindExtensionByNumber(type, ext.extension_number());
      if (field == nullptr) {
        not_found("extension " + std::to_string(ext.extension_number()) + " of '" +
                  ext.containing_type() + "'");
      } else {
        file = field->file();
      }
      break;
    }
    case rv1::ServerReflectionRequest::kAllExtensionNumbersOfType: {
      const auto* type = pool->FindMessageTypeByName(request.all_extension_numbers_of_type());
      if (type == nullptr) {
        not_found("type '" + request.all_extension_numbers_of_type() + "'");
        return response;
      }
      std::vector<const google::protobuf::FieldDescriptor*> extensions;
      pool->FindAllExtensions(type, &extensions);
      rv1::ExtensionNumberResponse* out = response.mutable_all_extension_numbers_response();
      out->set_base_type_name(type->full_name());
      for (const auto* e : extensions) out->add_extension_number(e->number());
      return response;
    }
    case rv1::ServerReflectionRequest::MESSAGE_REQUEST_NOT_SET: {
      rv1::ErrorResponse* error = response.mutable_error_response();
      error->set_error_code(static_cast<int32_t>(grpc::StatusCode::INVALID_ARGUMENT));
      error->set_error_message("the request names no reflection query");
      return response;
    }
  }
  if (file != nullptr) {
    add_file_with_imports(file, seen, response.mutable_file_descriptor_response());
  }
  return response;
}

void link_health_descriptor() {
  (void)::grpc::health::v1::HealthCheckRequest::descriptor();
}

}  // namespace lightserve::frontends
