// CUDA graphs for the decode step (issue 12; opt-in: LIGHTSERVE_CUDA_GRAPHS=1 or
// Backend::set_graphs). Not a public header.
//
// Between Backend::begin_decode_step and end_decode_step the CUDA backend does not issue its
// launches: it records them here, each as a closure plus the bytes of everything the launch bakes
// in (StepSignature, step_graph_plan.h), and stages their per-step host data (ids, positions,
// K/V store and attention descriptors, page tables) in one buffer at fixed offsets. At the end of
// the step the staged bytes go to the device in one copy, then:
//  - a graph captured from a step with the same signature is launched (one launch per step);
//  - a signature seen once before is captured now (cudaStreamBeginCapture in thread-local mode on
//    the backend's stream: nothing in the closures allocates or synchronizes), instantiated and
//    launched; a capture that fails logs one line and leaves that signature eager;
//  - otherwise (first sight, a step during which scratch grew) the closures run eagerly.
// The closures are the same launch code the eager path runs, so a replay computes what an eager
// issue of the same records computes, bit for bit. An op that cannot be recorded (a download, an
// upload, a prefill attention...) first issues what was recorded (abandon()) and then runs as
// usual: the step goes on eagerly.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/step_graph_plan.h"

namespace lightserve::kernels::cuda {

class StepRecorder {
 public:
  // Issues one recorded launch on the context's stream; `staged` is the device copy of the
  // step's staged bytes (the launch reads its data at the offsets it was given).
  using Launch = std::function<void(const uint8_t* staged)>;
  static constexpr size_t kMaxGraphs = 16;  // bounds what the graphs keep (LRU)

  explicit StepRecorder(CudaContext& ctx);
  ~StepRecorder();
  StepRecorder(const StepRecorder&) = delete;
  StepRecorder& operator=(const StepRecorder&) = delete;

  // Starts recording a decode step of `bucket_rows` rows: ctx.recording points here until
  // finish() or abandon().
  void begin(int64_t bucket_rows);
  int64_t bucket_rows() const { return bucket_rows_; }
  // Copies `bytes` of host data into the step (zero-filled up to `reserve`); returns its offset
  // in the staged bytes.
  int64_t stage(const void* src, int64_t bytes, int64_t reserve) {
    return staging_.stage(src, bytes, reserve);
  }
  // A launch: put its signature first, then add it.
  StepSignature& signature() { return signature_; }
  void add(Launch launch) { launches_.push_back(std::move(launch)); }
  bool empty() const { return launches_.empty(); }

  // Ends the step: replays, captures or issues eagerly (the header).
  void finish();
  // Issues what was recorded, eagerly, and stops recording.
  void abandon();
  // Destroys every graph (the backend's graphs turned off, or their buffers moved).
  void clear();
  // Off: every step's records are issued eagerly (LIGHTSERVE_CUDA_GRAPHS=eager).
  void set_capture(bool enabled) { capture_ = enabled; }

  struct Counters {
    int64_t replayed = 0, captured = 0, eager = 0, failed = 0;
  };
  const Counters& counters() const { return counters_; }

 private:
  void upload_staged();
  void issue_eagerly();
  bool capture(cudaGraphExec_t* exec);
  void free_retired_scratch();
  void reset_step();

  CudaContext& ctx_;
  int64_t bucket_rows_ = 0;
  StepSignature signature_;
  StepStaging staging_;
  std::vector<Launch> launches_;
  // The staged bytes: pinned host copy (the async copy's source) and device copy. `uploaded_`
  // marks when the last copy out of pinned_ has completed.
  uint8_t* pinned_ = nullptr;
  int64_t pinned_bytes_ = 0;
  uint8_t* device_ = nullptr;
  int64_t device_bytes_ = 0;
  cudaEvent_t uploaded_ = nullptr;
  GraphCache<cudaGraphExec_t> graphs_{kMaxGraphs};
  Counters counters_;
  bool capture_ = true;
};

}  // namespace lightserve::kernels::cuda
