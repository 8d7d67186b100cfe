// `lightserve eval --task passkey`: the synthetic passkey retrieval task (Mohtashami & Jaggi's
// landmark-attention prompt as used by LongLoRA and others). Filler sentences up to the target
// length, one line with a random 5-digit key at a depth that varies over trials, then the
// question; greedy decoding; success when the answer contains the key. Every mode sees the same
// prompts (paired comparison).
//
// One prefill serves every mode of a trial (model::PrefillTee: the modes differ only in what each
// layer keeps after the exact prefill, and in the decode); then the modes decode together, one
// batch entry each. The answers are those of separate runs, bit for bit, at 1/modes of the
// prefill cost.
#include <chrono>
#include <cstdio>
#include <random>

#include "eval/eval_tasks.h"
#include "model/generate.h"
#include "model/prefill_tee.h"

namespace lightserve::eval {
namespace {

constexpr const char* kIntro =
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
    "I will quiz you about the important information there.";
constexpr const char* kFiller =
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";

class PasskeyPrompts {
 public:
  PasskeyPrompts(const model::LlamaModel& model, bool chat) : model_(model), chat_(chat) {}

  std::string text(int32_t units, double depth, const std::string& key) const {
    const int32_t before = static_cast<int32_t>(depth * units + 0.5);
    // Appends, not "lit" + std::string: GCC 12's false -Wrestrict (worse under ASan).
    std::string body = kIntro;
    body += '\n';
    for (int32_t i = 0; i < before; ++i) body.append(i ? " " : "").append(kFiller);
    body.append("\nThe pass key is ").append(key).append(". Remember it. ").append(key);
    body += " is the pass key.\n";
    for (int32_t i = before; i < units; ++i) body.append(i > before ? " " : "").append(kFiller);
    if (!chat_) return body + "\nWhat is the pass key? The pass key is";
    std::vector<model::ChatMessage> messages{{"user", body + "\nWhat is the pass key?"}};
    // One user turn: every template renders it.
    return model_.chat_template()->render(messages, /*add_generation_prompt=*/true).value() +
           "The pass key is";
  }

  std::vector<int32_t> encode(const std::string& text) const {
    const model::Tokenizer& tok = model_.tokenizer();
    // A rendered chat carries its own BOS where the template has one.
    return tok.encode(text, !chat_ && tok.add_bos_token(), /*parse_special=*/chat_);
  }

  // The prompt with the most filler units that stays within `max_tokens`.
  std::vector<int32_t> fit(int32_t max_tokens, double depth, const std::string& key) const {
    const int32_t base = static_cast<int32_t>(encode(text(0, depth, key)).size());
    const double per_unit =
        static_cast<double>(static_cast<int32_t>(encode(text(64, depth, key)).size()) - base) / 64;
    int32_t units = std::max(0, static_cast<int32_t>((max_tokens - base) / per_unit));
    std::vector<int32_t> ids = encode(text(units, depth, key));
    while (units > 0 && static_cast<int32_t>(ids.size()) > max_tokens) {
      units -= std::max<int32_t>(1, static_cast<int32_t>((ids.size() - max_tokens) / per_unit));
      units = std::max(units, 0);
      ids = encode(text(units, depth, key));
    }
    return ids;
  }

 private:
  const model::LlamaModel& model_;
  bool chat_;
};

// Prefills `prompt` once into every sequence (PrefillTee), then decodes them together, greedily,
// up to params.max_tokens tokens each (a sequence stops at an end-of-generation token, which is not
// kept). Adds the time of each phase to prefill_seconds and decode_seconds.
Result<std::vector<std::vector<int32_t>>> decode_modes(
    model::LlamaModel& model, std::vector<EvalSequence>& sequences, std::span<const int32_t> prompt,
    const model::GenerateParams& params, double& prefill_seconds, double& decode_seconds) {
  const size_t n = sequences.size();
  const int32_t vocab = model.config().vocab_size;
  std::vector<model::SequenceKv*> children;
  for (EvalSequence& es : sequences) children.push_back(es.seq.get());
  model::PrefillTee tee(children, model.config().num_heads);
  std::vector<float> logits;
  auto start = std::chrono::steady_clock::now();
  const model::BatchEntry prefill{&tee, prompt, false};
  if (Status s = model.forward({&prefill, 1}, logits); !s) return Error{s.message()};
  prefill_seconds +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  start = std::chrono::steady_clock::now();

  std::vector<std::vector<int32_t>> out(n);
  std::vector<int32_t> next(n, sampling::argmax(std::span<const float>(logits.data(), vocab)));
  std::vector<bool> done(n, false);
  std::vector<size_t> live;
  std::vector<model::BatchEntry> batch;
  while (true) {
    live.clear();
    batch.clear();
    for (size_t i = 0; i < n; ++i) {
      if (done[i]) continue;
      if (!params.ignore_eos && model.tokenizer().is_end_of_generation(next[i])) {
        done[i] = true;
        continue;
      }
      out[i].push_back(next[i]);
      if (static_cast<int32_t>(out[i].size()) >= params.max_tokens) {
        done[i] = true;
        continue;
      }
      live.push_back(i);
      batch.push_back({sequences[i].seq.get(), std::span<const int32_t>(&next[i], 1), false});
    }
    if (batch.empty()) break;
    if (Status s = model.forward(batch, logits); !s) return Error{s.message()};
    for (size_t j = 0; j < live.size(); ++j) {
      next[live[j]] = sampling::argmax(std::span<const float>(logits.data() + j * vocab, vocab));
    }
  }
  decode_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return out;
}

}  // namespace

Result<nlohmann::json> run_passkey(model::LlamaModel& model, const EvalOptions& options,
                                   const std::vector<EvalMode>& modes) {
  if (options.chat && model.chat_template() == nullptr) {
    return Error{"--chat: " + model.chat_error()};
  }
  const PasskeyPrompts prompts(model, options.chat);
  const model::Tokenizer& tok = model.tokenizer();
  model::GenerateParams params;
  params.max_tokens = options.answer_tokens;
  params.sampling.temperature = 0;

  // successes[length][mode]
  std::vector<std::vector<int32_t>> successes(options.lengths.size(),
                                              std::vector<int32_t>(modes.size(), 0));
  double prefill_seconds = 0, decode_seconds = 0;
  nlohmann::json trials = nlohmann::json::array();
  for (size_t li = 0; li < options.lengths.size(); ++li) {
    const int32_t length = options.lengths[li];
    std::mt19937_64 rng(options.seed * 1000003ULL + static_cast<uint64_t>(length));
    for (int32_t t = 0; t < options.trials; ++t) {
      const std::string key = std::to_string(10000 + rng() % 90000);
      const double depth =
          options.trials > 1 ? 0.1 + 0.8 * t / static_cast<double>(options.trials - 1) : 0.5;
      const std::vector<int32_t> prompt = prompts.fit(length - options.answer_tokens, depth, key);
      if (static_cast<int32_t>(prompt.size()) > length - options.answer_tokens) {
        return Error{"length " + std::to_string(length) + " is too short for the passkey prompt (" +
                     std::to_string(prompt.size()) + " tokens without filler plus " +
                     std::to_string(options.answer_tokens) + " answer tokens)"};
      }
      nlohmann::json trial{{"length", length},
                           {"trial", t},
                           {"depth", depth},
                           {"key", key},
                           {"prompt_tokens", prompt.size()}};
      nlohmann::json answers = nlohmann::json::object();
      std::string line;
      std::vector<EvalSequence> sequences;
      for (size_t mi = 0; mi < modes.size(); ++mi) {
        model::LightTransferSettings settings = modes[mi].settings;
        if (settings.mode == model::LtMode::kRandom) settings.seed += static_cast<uint64_t>(t);
        auto es = make_eval_sequence(model, settings, length);
        if (!es) return Error{modes[mi].label + ": " + es.error().message};
        sequences.push_back(std::move(es).value());
      }
      auto decoded =
          decode_modes(model, sequences, prompt, params, prefill_seconds, decode_seconds);
      if (!decoded) return decoded.error();
      for (size_t mi = 0; mi < modes.size(); ++mi) {
        const std::string answer = tok.decode(decoded.value()[mi]);
        const bool ok = answer.find(key) != std::string::npos;
        successes[li][mi] += ok ? 1 : 0;
        answers[modes[mi].label] = {{"answer", answer},
                                    {"success", ok},
                                    {"lazy_layers", lazy_layer_list(*sequences[mi].seq)}};
        line += " " + modes[mi].label + (ok ? " ok" : " --");
      }
      trial["modes"] = answers;
      trials.push_back(trial);
      if (!options.quiet) {
        std::fprintf(stderr, "  length %d trial %d/%d depth %.2f key %s (%zu tokens):%s\n", length,
                     t + 1, options.trials, depth, key.c_str(), prompt.size(), line.c_str());
      }
    }
  }

  std::printf(
      "passkey retrieval accuracy (%%, %d trials per length, %s prompt; sink %d, window %d)\n",
      options.trials, options.chat ? "chat" : "plain", modes.front().settings.sink,
      modes.front().settings.window);
  std::printf("%-22s", "mode");
  for (int32_t n : options.lengths) std::printf(" %8d", n);
  std::printf("\n");
  nlohmann::json rows = nlohmann::json::array();
  for (size_t mi = 0; mi < modes.size(); ++mi) {
    std::printf("%-22s", modes[mi].label.c_str());
    nlohmann::json acc = nlohmann::json::array();
    for (size_t li = 0; li < options.lengths.size(); ++li) {
      const double pct = 100.0 * successes[li][mi] / options.trials;
      std::printf(" %8.1f", pct);
      acc.push_back({{"length", options.lengths[li]},
                     {"successes", successes[li][mi]},
                     {"trials", options.trials},
                     {"accuracy", pct}});
    }
    std::printf("\n");
    rows.push_back({{"mode", modes[mi].label},
                    {"lt_mode", std::string(model::to_string(modes[mi].settings.mode))},
                    {"score", std::string(model::to_string(modes[mi].settings.score))},
                    {"lazy_fraction", modes[mi].settings.lazy_fraction},
                    {"accuracy", acc}});
  }
  std::printf("time: %.1f s prefill (one per trial, shared by the modes), %.1f s decode\n",
              prefill_seconds, decode_seconds);
  return nlohmann::json{{"trials_per_length", options.trials},
                        {"chat", options.chat},
                        {"prefill_seconds", prefill_seconds},
                        {"decode_seconds", decode_seconds},
                        {"seed", options.seed},
                        {"answer_tokens", options.answer_tokens},
                        {"lengths", options.lengths},
                        {"modes", rows},
                        {"trials", trials}};
}

}  // namespace lightserve::eval
