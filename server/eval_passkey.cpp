// `lightserve eval --task passkey`: the synthetic passkey retrieval task (Mohtashami & Jaggi's
// landmark-attention prompt as used by LongLoRA and others). Filler sentences up to the target
// length, one line with a random 5-digit key at a depth that varies over trials, then the
// question; greedy decoding; success when the answer contains the key. Every mode sees the same
// prompts (paired comparison).
#include <chrono>
#include <cstdio>
#include <random>

#include "model/generate.h"
#include "server/eval_tasks.h"

namespace lightserve::cli {
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
    std::string body = std::string(kIntro) + "\n";
    for (int32_t i = 0; i < before; ++i) body += (i ? " " : "") + std::string(kFiller);
    body += "\nThe pass key is " + key + ". Remember it. " + key + " is the pass key.\n";
    for (int32_t i = before; i < units; ++i) body += (i > before ? " " : "") + std::string(kFiller);
    if (!chat_) return body + "\nWhat is the pass key? The pass key is";
    std::vector<model::ChatMessage> messages{{"user", body + "\nWhat is the pass key?"}};
    return model_.chat_template()->render(messages, /*add_generation_prompt=*/true) +
           "The pass key is";
  }

  std::vector<int32_t> encode(const std::string& text) const {
    const model::Tokenizer& tok = model_.tokenizer();
    return tok.encode(text, tok.add_bos_token(), /*parse_special=*/chat_);
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
  std::vector<double> seconds(modes.size(), 0);
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
      nlohmann::json trial{{"length", length}, {"trial", t}, {"depth", depth}, {"key", key},
                           {"prompt_tokens", prompt.size()}};
      nlohmann::json answers = nlohmann::json::object();
      std::string line;
      for (size_t mi = 0; mi < modes.size(); ++mi) {
        model::LightTransferSettings settings = modes[mi].settings;
        if (settings.mode == model::LtMode::kRandom) settings.seed += static_cast<uint64_t>(t);
        auto es = make_eval_sequence(model.config(), settings, length);
        if (!es) return Error{modes[mi].label + ": " + es.error().message};
        const auto start = std::chrono::steady_clock::now();
        auto result = model::generate(model, *es->seq, prompt, params);
        if (!result) return Error{modes[mi].label + ": " + result.error().message};
        seconds[mi] += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        const std::string answer = tok.decode(result.value().tokens);
        const bool ok = answer.find(key) != std::string::npos;
        successes[li][mi] += ok ? 1 : 0;
        answers[modes[mi].label] = {{"answer", answer}, {"success", ok},
                                    {"lazy_layers", lazy_layer_list(*es->seq)}};
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

  std::printf("passkey retrieval accuracy (%%, %d trials per length, %s prompt; sink %d, window %d)\n",
              options.trials, options.chat ? "chat" : "plain", modes.front().settings.sink,
              modes.front().settings.window);
  std::printf("%-16s", "mode");
  for (int32_t n : options.lengths) std::printf(" %8d", n);
  std::printf(" %9s\n", "seconds");
  nlohmann::json rows = nlohmann::json::array();
  for (size_t mi = 0; mi < modes.size(); ++mi) {
    std::printf("%-16s", modes[mi].label.c_str());
    nlohmann::json acc = nlohmann::json::array();
    for (size_t li = 0; li < options.lengths.size(); ++li) {
      const double pct = 100.0 * successes[li][mi] / options.trials;
      std::printf(" %8.1f", pct);
      acc.push_back({{"length", options.lengths[li]}, {"successes", successes[li][mi]},
                     {"trials", options.trials}, {"accuracy", pct}});
    }
    std::printf(" %9.1f\n", seconds[mi]);
    rows.push_back({{"mode", modes[mi].label},
                    {"lt_mode", std::string(model::to_string(modes[mi].settings.mode))},
                    {"lazy_fraction", modes[mi].settings.lazy_fraction},
                    {"seconds", seconds[mi]},
                    {"accuracy", acc}});
  }
  return nlohmann::json{{"trials_per_length", options.trials}, {"chat", options.chat},
                        {"seed", options.seed}, {"answer_tokens", options.answer_tokens},
                        {"lengths", options.lengths}, {"modes", rows}, {"trials", trials}};
}

}  // namespace lightserve::cli
