// `lightserve eval --task perplexity`: prefill the first `prefix` tokens of a real text (exact in
// every mode), then decode the rest one token per forward call and score −log p(next token)
// from the decode logits, which are the only ones LightTransfer's reduced caches touch.
//
// One prefill serves every mode (model::PrefillTee, as in passkey.cpp), and the modes decode
// together, one batch entry each: every step is one forward call over the modes' next tokens.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "eval/eval_tasks.h"
#include "model/prefill_tee.h"

namespace lightserve::eval {
namespace {

Result<std::string> read_texts(const std::vector<std::string>& paths) {
  std::string text;
  for (const std::string& path : paths) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return Error{"--text: cannot read " + path};
    std::stringstream buf;
    buf << in.rdbuf();
    if (!text.empty()) text += "\n\n";
    text += buf.str();
  }
  return text;
}

// −log softmax(logits)[target], in double.
double nll(const float* logits, int32_t vocab, int32_t target) {
  float max_logit = logits[0];
  for (int32_t i = 1; i < vocab; ++i) max_logit = std::max(max_logit, logits[i]);
  double sum = 0;
  for (int32_t i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(logits[i] - max_logit));
  return std::log(sum) + max_logit - logits[target];
}

}  // namespace

Result<nlohmann::json> run_perplexity(model::LlamaModel& model, const EvalOptions& options,
                                      const std::vector<EvalMode>& modes) {
  auto text = read_texts(options.texts);
  if (!text) return text.error();
  const model::Tokenizer& tok = model.tokenizer();
  const std::vector<int32_t> tokens = tok.encode(text.value(), tok.add_bos_token(), false);
  const int32_t available = static_cast<int32_t>(tokens.size());

  // Checkpoints: the requested lengths, capped at the text's length.
  std::vector<int32_t> lengths;
  for (int32_t n : options.lengths) {
    const int32_t capped = std::min(n, available);
    if (capped < n) {
      std::fprintf(stderr, "warning: the text has %d tokens; length %d is cut to %d\n", available,
                   n, capped);
    }
    lengths.push_back(capped);
  }
  std::sort(lengths.begin(), lengths.end());
  lengths.erase(std::unique(lengths.begin(), lengths.end()), lengths.end());
  const int32_t run_len = lengths.back();
  if (options.prefix >= lengths.front()) {
    return Error{"--prefix " + std::to_string(options.prefix) +
                 " leaves nothing to decode at length " + std::to_string(lengths.front())};
  }
  for (const EvalMode& m : modes) {
    if (m.settings.mode == model::LtMode::kOnline &&
        options.prefix <= m.settings.sink + m.settings.window) {
      std::fprintf(
          stderr,
          "warning: %s: the prefix (%d) is no longer than sink + window (%d): every lazy "
          "ratio is 1 and the choice falls to the tie order (the plan, else layer index)\n",
          m.label.c_str(), options.prefix, m.settings.sink + m.settings.window);
      break;
    }
  }
  if (!options.quiet) {
    std::fprintf(stderr, "perplexity: %d tokens of text; prefill %d, decode up to %d\n", available,
                 options.prefix, run_len);
  }

  const int32_t vocab = model.config().vocab_size;
  const size_t num_modes = modes.size();
  std::vector<EvalSequence> sequences;
  std::vector<model::SequenceKv*> children;
  for (const EvalMode& m : modes) {
    auto es = make_eval_sequence(model, m.settings, run_len);
    if (!es) return Error{m.label + ": " + es.error().message};
    sequences.push_back(std::move(es).value());
    children.push_back(sequences.back().seq.get());
  }
  auto start = std::chrono::steady_clock::now();
  std::vector<float> logits;
  {
    model::PrefillTee tee(children, model.config().num_heads);
    const model::BatchEntry prefill{
        &tee, std::span(tokens.data(), static_cast<size_t>(options.prefix)), false};
    if (Status s = model.forward({&prefill, 1}, logits); !s) return Error{s.message()};
  }
  const double prefill_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  start = std::chrono::steady_clock::now();
  // Every mode's logits start from the one prefill's.
  std::vector<float> mode_logits(num_modes * static_cast<size_t>(vocab));
  for (size_t i = 0; i < num_modes; ++i)
    std::copy(logits.begin(), logits.begin() + vocab, mode_logits.begin() + i * vocab);

  std::vector<double> total(num_modes, 0), segment(num_modes, 0);
  std::vector<nlohmann::json> points(num_modes, nlohmann::json::array());
  std::vector<std::vector<double>> table(num_modes);  // [mode][checkpoint] cumulative PPL
  int32_t segment_start = options.prefix;
  size_t next = 0;
  std::vector<model::BatchEntry> batch;
  for (int32_t p = options.prefix; p < run_len; ++p) {
    const int32_t target = tokens[static_cast<size_t>(p)];
    for (size_t i = 0; i < num_modes; ++i) {
      const double loss = nll(mode_logits.data() + i * vocab, vocab, target);
      total[i] += loss;
      segment[i] += loss;
    }
    if (p + 1 == lengths[next]) {
      const int32_t scored = p + 1 - options.prefix;
      for (size_t i = 0; i < num_modes; ++i) {
        const double ppl = std::exp(total[i] / scored);
        points[i].push_back({{"length", p + 1},
                             {"scored_tokens", scored},
                             {"ppl", ppl},
                             {"mean_nll", total[i] / scored},
                             {"segment_from", segment_start},
                             {"segment_ppl", std::exp(segment[i] / (p + 1 - segment_start))}});
        table[i].push_back(ppl);
        segment[i] = 0;
      }
      segment_start = p + 1;
      ++next;
    }
    if (p + 1 == run_len) break;
    batch.clear();
    for (size_t i = 0; i < num_modes; ++i)
      batch.push_back({sequences[i].seq.get(), std::span(tokens.data() + p, 1), false});
    if (Status s = model.forward(batch, logits); !s) return Error{s.message()};
    std::copy(logits.begin(), logits.begin() + num_modes * vocab, mode_logits.begin());
    if (!options.quiet && (p + 1 - options.prefix) % 512 == 0) {
      std::fprintf(stderr, "  %d/%d tokens, running ppl:", p + 1, run_len);
      for (size_t i = 0; i < num_modes; ++i)
        std::fprintf(stderr, " %s %.3f", modes[i].label.c_str(),
                     std::exp(total[i] / (p + 1 - options.prefix)));
      std::fprintf(stderr, "\n");
    }
  }
  const double decode_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  nlohmann::json rows = nlohmann::json::array();
  for (size_t i = 0; i < num_modes; ++i) {
    const model::HybridSequence& seq = *sequences[i].seq;
    const EvalMode& m = modes[i];
    rows.push_back({{"mode", m.label},
                    {"lt_mode", std::string(model::to_string(m.settings.mode))},
                    {"score", std::string(model::to_string(m.settings.score))},
                    {"lazy_fraction", m.settings.lazy_fraction},
                    {"lazy_layers", lazy_layer_list(seq)},
                    {"num_lazy_layers", seq.layer_map().num_lazy_layers()},
                    {"kv_bytes", seq.kv_bytes()},
                    {"peak_kv_bytes", seq.peak_kv_bytes()},
                    {"points", points[i]}});
  }

  // The table: cumulative PPL over decoded tokens at each length, and Δ vs full.
  int32_t full_index = -1;
  for (size_t i = 0; i < modes.size(); ++i) {
    if (modes[i].settings.mode == model::LtMode::kFull) full_index = static_cast<int32_t>(i);
  }
  std::printf("perplexity over decoded tokens (prefill %d exact; sink %d, window %d)\n",
              options.prefix, modes.front().settings.sink, modes.front().settings.window);
  std::printf("%-22s", "mode");
  for (int32_t n : lengths) std::printf(" %10s%-6d %8s", "ppl@", n, "Δ%");
  std::printf("  lazy layers\n");
  for (size_t i = 0; i < modes.size(); ++i) {
    std::printf("%-22s", modes[i].label.c_str());
    for (size_t c = 0; c < lengths.size(); ++c) {
      std::printf(" %16.3f", table[i][c]);
      if (full_index >= 0) {
        std::printf(" %+7.2f%%", 100.0 * (table[i][c] / table[full_index][c] - 1.0));
      } else {
        std::printf(" %8s", "-");
      }
    }
    std::printf("  %s\n", rows[i]["lazy_layers"].get<std::string>().c_str());
  }
  std::printf("time: %.1f s prefill (one, shared by the modes), %.1f s decode (modes batched)\n",
              prefill_seconds, decode_seconds);
  return nlohmann::json{{"prefill_seconds", prefill_seconds},
                        {"decode_seconds", decode_seconds},
                        {"text_files", options.texts},
                        {"text_tokens", available},
                        {"prefix", options.prefix},
                        {"lengths", lengths},
                        {"modes", rows}};
}

}  // namespace lightserve::eval
