// Worker threads that fill constrained decoding's token masks ahead of time
// (sampling/constraint.h). A matcher's mask for the next token depends only on the tokens it has
// accepted, so as soon as a token is accepted its next mask is queued here: the masks of a batch
// are filled in parallel, and meanwhile the engine thread goes on (the rest of the step, the next
// forward pass, which on the GPU backend runs on the device). The sampler waits for its mask only
// when it needs it. With 0 workers each mask is filled when it is needed, on the caller's thread.
// What a mask holds does not depend on when or where it was filled: outputs are the same.
#pragma once

#include <functional>

namespace lightserve::sampling {

// How many worker threads fill masks (0: none, masks are filled on demand by the caller). The
// default: the machine's hardware threads, at most 8. Thread-safe; a change waits for the jobs
// already queued, and applies to masks queued afterwards.
void set_constraint_mask_threads(int num_threads);
int constraint_mask_threads();

// CPU seconds the worker threads have spent filling masks since the process started: with
// workers, this work is no longer on the sampling thread (benchmarks report both).
double constraint_mask_worker_cpu_seconds();

namespace detail {
// Queues `job` on a worker; false (job not taken) when there are no workers.
bool submit_mask_job(std::function<void()> job);
}  // namespace detail

}  // namespace lightserve::sampling
