// The tokenizer's vocabulary as constrained decoding sees it (sampling/constraint.h): what the
// serving core and the benchmarks hand XGrammar, so that sampling/ needs no tokenizer.
#pragma once

#include <cstdint>

#include "model/tokenizer.h"
#include "sampling/constraint.h"

namespace lightserve::model {

// Each id's bytes ("" for control tokens: a grammar never allows them), the end-of-generation ids
// as stop ids, `logits_width` ids in all (the model's vocab_size; the tokenizer's if larger).
sampling::Vocabulary constraint_vocabulary(const Tokenizer& tokenizer, int32_t logits_width);

}  // namespace lightserve::model
