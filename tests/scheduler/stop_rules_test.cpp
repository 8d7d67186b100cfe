#include "scheduler/stop_rules.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace lightserve::scheduler {
namespace {

StopRules rules(std::vector<std::string> stops, bool ignore_eos = false, int32_t max_tokens = 10) {
  const std::vector<int32_t> eos = {2};
  const std::vector<int32_t> stop_ids = {7};
  return StopRules(eos, stop_ids, std::move(stops), ignore_eos, max_tokens);
}

TEST(StopRulesTest, EosAndStopTokenIds) {
  StopRules r = rules({});
  EXPECT_TRUE(r.is_stop_token(2));
  EXPECT_TRUE(r.is_stop_token(7));
  EXPECT_FALSE(r.is_stop_token(3));
  StopRules ignoring = rules({}, /*ignore_eos=*/true);
  EXPECT_FALSE(ignoring.is_stop_token(2)) << "ignore_eos skips the end-of-generation ids";
  EXPECT_TRUE(ignoring.is_stop_token(7)) << "explicit stop_token_ids still apply";
}

TEST(StopRulesTest, MaxTokens) {
  StopRules r = rules({}, false, 3);
  EXPECT_FALSE(r.reached_length(2));
  EXPECT_TRUE(r.reached_length(3));
}

TEST(StopRulesTest, NoStopStringsStreamsEverything) {
  StopRules r = rules({});
  EXPECT_EQ(r.push_text("abc").text, "abc");
  EXPECT_EQ(r.held_text(), "");
}

// Each row: pieces pushed in order, then what was streamed in total and whether it stopped.
struct Row {
  std::vector<std::string> stops;
  std::vector<std::string> pieces;
  std::string streamed;
  bool stopped;
  std::string held_at_end;
};

TEST(StopRulesTest, HoldBackTable) {
  const std::vector<Row> rows = {
      // A stop string split over three tokens is caught and never streamed.
      {{"END"}, {"ab", "E", "N", "D", "zz"}, "ab", true, ""},
      // A prefix that does not complete is released as soon as it cannot match.
      {{"END"}, {"ab E", "x"}, "ab Ex", false, ""},
      // Text before the match in the same piece is streamed; the rest is dropped.
      {{"END"}, {"fooENDbar"}, "foo", true, ""},
      {{"END"}, {"hello EN", "D and more"}, "hello ", true, ""},
      // Held text at the end of input stays held until flush.
      {{"END"}, {"xyEN"}, "xy", false, "EN"},
      // Two stop strings: the earliest match wins, even inside held text of the other.
      {{"abcd", "bce"}, {"abc", "e"}, "a", true, ""},
      // Overlapping self-prefix: "aab" with text "aaab".
      {{"aab"}, {"a", "a", "a", "b"}, "a", true, ""},
      // Multi-byte UTF-8 stop string split inside a character.
      {{"\xC3\xA9t\xC3\xA9"}, {"x\xC3", "\xA9t", "\xC3\xA9", "!"}, "x", true, ""},
  };
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& row = rows[i];
    StopRules r = rules(row.stops);
    std::string streamed;
    bool stopped = false;
    for (const std::string& piece : row.pieces) {
      if (stopped) break;
      StopRules::TextResult result = r.push_text(piece);
      streamed += result.text;
      stopped = result.stopped;
      for (const std::string& s : row.stops) {
        EXPECT_EQ(streamed.find(s), std::string::npos) << "row " << i << " streamed " << s;
      }
    }
    EXPECT_EQ(streamed, row.streamed) << "row " << i;
    EXPECT_EQ(stopped, row.stopped) << "row " << i;
    EXPECT_EQ(r.held_text(), row.held_at_end) << "row " << i;
  }
}

TEST(StopRulesTest, FlushReleasesHeldText) {
  StopRules r = rules({"STOP"});
  EXPECT_EQ(r.push_text("go ST").text, "go ");
  EXPECT_EQ(r.flush(), "ST");
  EXPECT_EQ(r.held_text(), "");
}

}  // namespace
}  // namespace lightserve::scheduler
