// Token ids to text for the event stream, injected (the real one wraps model::StreamDecoder).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace lightserve::scheduler {

// One request's streaming decoder: push ids one at a time and get the text that is safe to show
// now (e.g. whole UTF-8 characters; an incomplete one is held back until it completes).
class TextStream {
 public:
  virtual ~TextStream() = default;
  virtual std::string push(int32_t token_id) = 0;
  virtual std::string flush() = 0;  // whatever is still held back, at the end of the request
};

// Creates one TextStream per request. Called on the engine thread only.
class Detokenizer {
 public:
  virtual ~Detokenizer() = default;
  virtual std::unique_ptr<TextStream> start() const = 0;
};

}  // namespace lightserve::scheduler
