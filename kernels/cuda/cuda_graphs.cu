// StepRecorder: recording, capture and replay of decode steps (cuda_graphs.h).
#include <cstdio>
#include <exception>
#include <string>
#include <utility>

#include "kernels/cuda/cuda_graphs.h"

namespace lightserve::kernels::cuda {

StepRecorder::StepRecorder(CudaContext& ctx) : ctx_(ctx) {}

StepRecorder::~StepRecorder() {
  // Errors cannot be reported from a destructor; the backend has synchronized its stream.
  for (cudaGraphExec_t exec : graphs_.clear()) {
    if (exec != nullptr) static_cast<void>(cudaGraphExecDestroy(exec));
  }
  if (uploaded_ != nullptr) static_cast<void>(cudaEventDestroy(uploaded_));
  if (pinned_ != nullptr) static_cast<void>(cudaFreeHost(pinned_));
  if (device_ != nullptr) static_cast<void>(cudaFree(device_));
}

void StepRecorder::begin(int64_t bucket_rows) {
  reset_step();
  bucket_rows_ = bucket_rows;
  ctx_.recording = this;
}

void StepRecorder::reset_step() {
  signature_.clear();
  staging_.clear();
  launches_.clear();
}

void StepRecorder::clear() {
  for (cudaGraphExec_t exec : graphs_.clear()) {
    if (exec != nullptr) LS_CUDA_CHECK(cudaGraphExecDestroy(exec));
  }
}

// The staged bytes to the device: into pinned memory (once the previous step's copy out of it
// has completed), then one asynchronous copy in stream order, before any launch of the step.
// Growing the device buffer moves it, and every graph holds its old address: they go.
void StepRecorder::upload_staged() {
  const int64_t bytes = staging_.size();
  if (bytes == 0) return;
  if (uploaded_ == nullptr) {
    LS_CUDA_CHECK(cudaEventCreateWithFlags(&uploaded_, cudaEventDisableTiming));
  } else {
    LS_CUDA_CHECK(cudaEventSynchronize(uploaded_));
  }
  if (bytes > pinned_bytes_) {
    if (pinned_ != nullptr) LS_CUDA_CHECK(cudaFreeHost(pinned_));
    pinned_ = nullptr;
    pinned_bytes_ = 0;
    const int64_t grown = pow2_at_least(bytes);
    LS_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&pinned_), static_cast<size_t>(grown),
                                cudaHostAllocDefault));
    pinned_bytes_ = grown;
  }
  if (bytes > device_bytes_) {
    clear();
    if (device_ != nullptr) LS_CUDA_CHECK(cudaFree(device_));
    device_ = nullptr;
    device_bytes_ = 0;
    const int64_t grown = pow2_at_least(bytes);
    LS_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&device_), static_cast<size_t>(grown)));
    device_bytes_ = grown;
  }
  std::memcpy(pinned_, staging_.data(), static_cast<size_t>(bytes));
  LS_CUDA_CHECK(cudaMemcpyAsync(device_, pinned_, static_cast<size_t>(bytes),
                                cudaMemcpyHostToDevice, ctx_.stream));
  LS_CUDA_CHECK(cudaEventRecord(uploaded_, ctx_.stream));
}

void StepRecorder::issue_eagerly() {
  for (const Launch& launch : launches_) launch(device_);
  ++counters_.eager;
}

// Scratch replaced during the step: free it now that every launch using it is issued (cudaFree
// waits for the device).
void StepRecorder::free_retired_scratch() {
  std::vector<void*> retired = std::move(ctx_.retired_scratch);
  ctx_.retired_scratch.clear();
  for (void* p : retired) LS_CUDA_CHECK(cudaFree(p));
}

void StepRecorder::abandon() {
  if (ctx_.recording != this) return;
  ctx_.recording = nullptr;
  upload_staged();
  issue_eagerly();
  reset_step();
  free_retired_scratch();
}

// Captures the recorded launches into an executable graph. On any failure the capture is ended
// (the stream leaves capture mode), the error is cleared and false comes back with one log line.
bool StepRecorder::capture(cudaGraphExec_t* exec) {
  std::string why;
  cudaError_t err = cudaStreamBeginCapture(ctx_.stream, cudaStreamCaptureModeThreadLocal);
  if (err != cudaSuccess) {
    why = std::string("cudaStreamBeginCapture: ") + cudaGetErrorString(err);
  } else {
    try {
      for (const Launch& launch : launches_) launch(device_);
    } catch (const std::exception& e) {
      why = e.what();
    }
    cudaGraph_t graph = nullptr;
    err = cudaStreamEndCapture(ctx_.stream, &graph);
    if (why.empty() && err != cudaSuccess) {
      why = std::string("cudaStreamEndCapture: ") + cudaGetErrorString(err);
    }
    if (why.empty()) {
      err = cudaGraphInstantiate(exec, graph, 0);
      if (err != cudaSuccess) why = std::string("cudaGraphInstantiate: ") + cudaGetErrorString(err);
    }
    if (graph != nullptr) static_cast<void>(cudaGraphDestroy(graph));
  }
  if (why.empty()) return true;
  static_cast<void>(cudaGetLastError());  // not sticky: later checks must not see it
  *exec = nullptr;
  std::fprintf(stderr,
               "CUDA graphs: capturing a %lld-row decode step failed (%s); it runs eagerly\n",
               static_cast<long long>(bucket_rows_), why.c_str());
  ++counters_.failed;
  return false;
}

void StepRecorder::finish() {
  if (ctx_.recording != this) return;
  ctx_.recording = nullptr;
  // Scratch that grew during the step: its launches point into blocks freed below, so no graph.
  const bool scratch_grew = !ctx_.retired_scratch.empty();
  upload_staged();  // may drop every graph (the device copy moved)
  const std::vector<uint8_t>& key = signature_.bytes();
  GraphCache<cudaGraphExec_t>::Entry* entry =
      scratch_grew || !capture_ ? nullptr : graphs_.find(key);
  bool launched = false;
  if (entry != nullptr && !entry->failed) {
    if (entry->handle == nullptr) {  // seen once: capture now
      cudaGraphExec_t exec = nullptr;
      if (capture(&exec)) {
        entry->handle = exec;
        ++counters_.captured;
      } else {
        entry->failed = true;
      }
    }
    if (entry->handle != nullptr) {
      const cudaError_t err = cudaGraphLaunch(entry->handle, ctx_.stream);
      if (err == cudaSuccess) {
        launched = true;
        ++counters_.replayed;
      } else {
        static_cast<void>(cudaGetLastError());
        std::fprintf(stderr, "CUDA graphs: cudaGraphLaunch failed (%s); the step runs eagerly\n",
                     cudaGetErrorString(err));
        static_cast<void>(cudaGraphExecDestroy(entry->handle));
        entry->handle = nullptr;
        entry->failed = true;
        ++counters_.failed;
      }
    }
  } else if (entry == nullptr && !scratch_grew && capture_) {
    cudaGraphExec_t evicted = nullptr;
    graphs_.insert(key, &evicted);  // seen once; captured the next time
    if (evicted != nullptr) LS_CUDA_CHECK(cudaGraphExecDestroy(evicted));
  }
  if (!launched) issue_eagerly();
  reset_step();
  free_retired_scratch();
}

}  // namespace lightserve::kernels::cuda
