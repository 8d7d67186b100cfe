// Constrained decoding (sampling/constraint.h) over a small byte-level vocabulary: whatever the
// logits, a constrained sampler's output parses / matches / is one of the choices; invalid
// constraints are errors naming the field; masks and accept() agree.
#include "sampling/constraint.h"

#include <gtest/gtest.h>

#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "sampling/mask_workers.h"
#include "sampling/sampler.h"

namespace lightserve::sampling {
namespace {

// Ids 0..255: single bytes; then a few multi-byte tokens; then a control token; last: the stop id.
struct TestVocab {
  Vocabulary vocabulary;
  int32_t stop = 0;
  TestVocab() {
    for (int b = 0; b < 256; ++b) vocabulary.token_bytes.push_back(std::string(1, char(b)));
    for (const char* t : {"{\"", "\": ", "\", \"", "true", "false", "null", "yes", "no", "abc",
                          "  ", "\n", "[1, ", "}\n"}) {
      vocabulary.token_bytes.push_back(t);
    }
    vocabulary.token_bytes.push_back("");  // a control token
    stop = static_cast<int32_t>(vocabulary.token_bytes.size());
    vocabulary.token_bytes.push_back("");
    vocabulary.stop_ids = {stop};
    vocabulary.logits_width = stop + 3;  // padded, as GGUF vocabularies can be
  }
};

const TestVocab& vocab() {
  static const TestVocab v;
  return v;
}

const ConstraintCompiler& compiler() {
  static const ConstraintCompiler c(vocab().vocabulary);
  return c;
}

std::shared_ptr<const CompiledConstraint> compile(ConstraintSpec spec) {
  auto compiled = compiler().compile(spec);
  EXPECT_TRUE(compiled.ok()) << (compiled.ok() ? "" : compiled.error().message);
  return compiled.ok() ? compiled.value() : nullptr;
}

// Samples with random logits (seeded) until the stop id or `max_tokens`; the text and whether
// it stopped.
std::pair<std::string, bool> generate(std::shared_ptr<const CompiledConstraint> c, uint64_t seed,
                                      int max_tokens = 400, float temperature = 1.0f) {
  SamplingParams p;
  p.temperature = temperature;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  p.seed = seed;
  p.constraint = std::move(c);
  Sampler sampler(p);
  std::mt19937_64 rng(seed * 7919 + 1);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> logits(static_cast<size_t>(vocab().vocabulary.logits_width));
  std::string text;
  for (int i = 0; i < max_tokens; ++i) {
    for (float& l : logits) l = normal(rng);
    // Favour the stop id so that most runs end.
    logits[static_cast<size_t>(vocab().stop)] += 6.0f;
    const int32_t token = sampler.sample(logits);
    if (token == vocab().stop) return {text, true};
    EXPECT_LT(token, vocab().stop) << "a control or padding id was drawn";
    text += vocab().vocabulary.token_bytes[static_cast<size_t>(token)];
  }
  return {text, false};
}

TEST(Constraint, JsonObjectOutputsParse) {
  auto c = compile({ConstraintSpec::Kind::kJsonObject, {}, {}, "response_format"});
  int finished = 0;
  for (uint64_t seed = 0; seed < 200; ++seed) {
    const auto [text, stopped] = generate(c, seed);
    if (!stopped) continue;
    ++finished;
    nlohmann::json parsed;
    try {
      parsed = nlohmann::json::parse(text);
    } catch (const nlohmann::json::out_of_range&) {
      continue;  // valid JSON (RFC 8259 has no number limit) beyond a double, such as 8e83256
    } catch (const nlohmann::json::exception& e) {
      std::string hex;
      for (unsigned char ch : text.substr(0, 40)) hex += std::to_string(ch) + " ";
      FAIL() << e.what() << "\n" << hex;
    }
    EXPECT_TRUE(parsed.is_object()) << text;
  }
  EXPECT_GT(finished, 10);
}

TEST(Constraint, JsonSchemaOutputsValidate) {
  const std::string schema = R"({"type": "object", "properties": {
      "ok": {"type": "boolean"}, "n": {"type": "integer", "minimum": 0, "maximum": 99},
      "tag": {"enum": ["yes", "no"]}}, "required": ["ok", "n", "tag"],
      "additionalProperties": false})";
  auto c = compile({ConstraintSpec::Kind::kJsonSchema, schema, {}, "guided_json"});
  int finished = 0;
  for (uint64_t seed = 0; seed < 30; ++seed) {
    const auto [text, stopped] = generate(c, seed);
    if (!stopped) continue;
    ++finished;
    const nlohmann::json v = nlohmann::json::parse(text, nullptr, false);
    ASSERT_TRUE(v.is_object()) << text;
    EXPECT_EQ(v.size(), 3u) << text;
    ASSERT_TRUE(v.contains("ok") && v["ok"].is_boolean()) << text;
    ASSERT_TRUE(v.contains("n") && v["n"].is_number_integer()) << text;
    EXPECT_GE(v["n"].get<int>(), 0);
    EXPECT_LE(v["n"].get<int>(), 99);
    ASSERT_TRUE(v.contains("tag") && (v["tag"] == "yes" || v["tag"] == "no")) << text;
  }
  EXPECT_GT(finished, 10);
}

TEST(Constraint, ChoiceIsOneOfTheChoices) {
  auto c = compile({ConstraintSpec::Kind::kChoice, {}, {"yes", "no", "maybe \"so\""}, "x"});
  std::set<std::string> seen;
  for (uint64_t seed = 0; seed < 40; ++seed) {
    const auto [text, stopped] = generate(c, seed);
    ASSERT_TRUE(stopped);
    EXPECT_TRUE(text == "yes" || text == "no" || text == "maybe \"so\"") << text;
    seen.insert(text);
  }
  EXPECT_EQ(seen.size(), 3u);  // random logits reach every branch
}

TEST(Constraint, RegexMatches) {
  const std::string pattern = "[A-Z]{3}-[0-9]{2,4}";
  auto c = compile({ConstraintSpec::Kind::kRegex, pattern, {}, "guided_regex"});
  for (uint64_t seed = 0; seed < 30; ++seed) {
    const auto [text, stopped] = generate(c, seed);
    ASSERT_TRUE(stopped) << text;
    EXPECT_TRUE(std::regex_match(text, std::regex(pattern))) << text;
  }
}

TEST(Constraint, GbnfGrammar) {
  // llama.cpp's GBNF: a list of one to three words from a class, comma separated.
  const std::string grammar = "root ::= word (\", \" word){0,2}\nword ::= [a-c]+ # letters\n";
  auto c = compile({ConstraintSpec::Kind::kGrammar, grammar, {}, "grammar"});
  for (uint64_t seed = 0; seed < 30; ++seed) {
    const auto [text, stopped] = generate(c, seed, 400, 0.7f);
    if (!stopped) continue;
    EXPECT_TRUE(std::regex_match(text, std::regex("[a-c]+(, [a-c]+){0,2}"))) << text;
  }
}

TEST(Constraint, GreedyIsMaskedArgmax) {
  // Greedy under a choice constraint: token "n" has the top logit overall but "no" is only
  // reachable as n then o; "yes" starts with y. The top allowed first token wins.
  auto c = compile({ConstraintSpec::Kind::kChoice, {}, {"yes", "no"}, "x"});
  SamplingParams p;
  p.temperature = 0;
  p.constraint = c;
  Sampler s(p);
  std::vector<float> logits(static_cast<size_t>(vocab().vocabulary.logits_width), 0.0f);
  logits['a'] = 10;  // not allowed
  logits['y'] = 5;
  logits['n'] = 4;
  EXPECT_EQ(s.sample(logits), 'y');
}

TEST(Constraint, InvalidConstraintsNameTheField) {
  struct Case {
    ConstraintSpec spec;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {{ConstraintSpec::Kind::kJsonSchema, "{not json", {}, "guided_json"}, "'guided_json'"},
      {{ConstraintSpec::Kind::kJsonSchema, R"({"type": "nonsense"})", {}, "response_format"},
       "'response_format'"},
      {{ConstraintSpec::Kind::kRegex, "a(b", {}, "guided_regex"}, "'guided_regex'"},
      {{ConstraintSpec::Kind::kGrammar, "root ::= undefined_rule", {}, "grammar"}, "'grammar'"},
      {{ConstraintSpec::Kind::kGrammar, "start ::= \"a\"", {}, "grammar"}, "'grammar'"},
      {{ConstraintSpec::Kind::kChoice, {}, {}, "guided_choice"}, "empty"},
      {{ConstraintSpec::Kind::kStructuralTag, "{}", {}, "response_format"}, "'response_format'"},
  };
  for (const Case& c : cases) {
    auto compiled = compiler().compile(c.spec);
    ASSERT_FALSE(compiled.ok()) << c.spec.source;
    EXPECT_NE(compiled.error().message.find(c.expected), std::string::npos)
        << compiled.error().message;
    EXPECT_EQ(compiled.error().message.find(".cc:"), std::string::npos)
        << "a source location leaked: " << compiled.error().message;
  }
}

TEST(Constraint, MaskAndAcceptAgree) {
  auto c = compile({ConstraintSpec::Kind::kChoice, {}, {"abc", "no"}, "x"});
  ConstraintMatcher m(c);
  const std::vector<uint32_t>& mask = m.next_mask();
  auto allowed = [&](int32_t id) { return ((mask[id / 32] >> (id % 32)) & 1u) != 0; };
  EXPECT_TRUE(allowed('a'));
  EXPECT_TRUE(allowed('n'));
  EXPECT_FALSE(allowed('b'));
  EXPECT_FALSE(allowed(vocab().stop));
  const int32_t abc_token = 256 + 8;  // "abc"
  EXPECT_TRUE(allowed(abc_token));
  EXPECT_FALSE(m.accept('b'));
  EXPECT_TRUE(m.accept(abc_token));
  const std::vector<uint32_t>& done = m.next_mask();
  for (int32_t id = 0; id < vocab().vocabulary.logits_width; ++id) {
    EXPECT_EQ(((done[id / 32] >> (id % 32)) & 1u) != 0, id == vocab().stop) << id;
  }
  EXPECT_FALSE(m.terminated());
  EXPECT_TRUE(m.accept(vocab().stop));
  EXPECT_TRUE(m.terminated());
  EXPECT_FALSE(m.accept('a'));
}

TEST(Constraint, MaskLogitsBansExactlyWhatTheMaskBans) {
  // Mid-structure, with a logits width that is not a multiple of 32 (the word loop's tail).
  auto c = compile({ConstraintSpec::Kind::kJsonObject, {}, {}, "response_format"});
  ConstraintMatcher m(c);
  ASSERT_TRUE(m.accept(256));  // {"
  ASSERT_TRUE(m.accept('k'));
  const std::vector<uint32_t> mask = m.next_mask();
  const size_t width = static_cast<size_t>(vocab().vocabulary.logits_width);
  ASSERT_NE(width % 32, 0u);
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> logits(width);
  for (float& l : logits) l = normal(rng);
  std::vector<float> masked = logits;
  EXPECT_TRUE(m.mask_logits(masked));
  int num_allowed = 0;
  for (size_t id = 0; id < width; ++id) {
    const bool allowed = ((mask[id / 32] >> (id % 32)) & 1u) != 0;
    num_allowed += allowed;
    EXPECT_EQ(masked[id], allowed ? logits[id] : -std::numeric_limits<float>::infinity()) << id;
  }
  EXPECT_GT(num_allowed, 1);
  // Every allowed id already banned by the caller: false, the caller's cue to fall back.
  for (size_t id = 0; id < width; ++id) {
    if (((mask[id / 32] >> (id % 32)) & 1u) != 0) {
      masked[id] = -std::numeric_limits<float>::infinity();
    }
  }
  EXPECT_FALSE(m.mask_logits(masked));
}

// Masks filled ahead on worker threads (sampling/mask_workers.h) are the masks filled on demand:
// the same seeds give the same outputs, with 0 workers and with several.
TEST(Constraint, MaskWorkersChangeNoOutput) {
  const int saved = constraint_mask_threads();
  const std::vector<ConstraintSpec> specs = {
      {ConstraintSpec::Kind::kJsonSchema,
       R"({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]})",
       {},
       "guided_json"},
      {ConstraintSpec::Kind::kRegex, "[A-Z]{3}-[0-9]{2,4}", {}, "guided_regex"},
      {ConstraintSpec::Kind::kGrammar,
       "root ::= word (\", \" word){0,2}\nword ::= [a-c]+\n",
       {},
       "grammar"},
      {ConstraintSpec::Kind::kChoice, {}, {"yes", "no", "abc"}, "guided_choice"},
  };
  for (const ConstraintSpec& spec : specs) {
    auto c = compile(spec);
    for (uint64_t seed = 0; seed < 8; ++seed) {
      set_constraint_mask_threads(0);
      const auto on_demand = generate(c, seed, 200, 0.8f);
      set_constraint_mask_threads(3);
      const auto ahead = generate(c, seed, 200, 0.8f);
      EXPECT_EQ(on_demand, ahead) << spec.field << " seed " << seed;
    }
  }
  set_constraint_mask_threads(saved);
}

// A matcher dropped while a worker fills its next mask waits for it (ASan / TSan builds check
// that nothing touches the freed matcher).
TEST(Constraint, DroppingMatchersWithFillsInFlight) {
  const int saved = constraint_mask_threads();
  set_constraint_mask_threads(2);
  auto c = compile({ConstraintSpec::Kind::kJsonObject, {}, {}, "response_format"});
  for (int i = 0; i < 200; ++i) {
    ConstraintMatcher m(c);
    if (i % 2 == 0) {
      ASSERT_TRUE(m.accept(256));  // queues the next mask's fill
    }
    ConstraintMatcher moved(std::move(m));
  }
  set_constraint_mask_threads(saved);
}

}  // namespace
}  // namespace lightserve::sampling
