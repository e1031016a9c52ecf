#include "data/tokenizer.h"

#include <gtest/gtest.h>

#include "core/error.h"
#include "test_util.h"

namespace ladder::data {
namespace {

const std::vector<std::string> kTexts = {
    "",
    "The quick brown fox.\n",
    "naïve café, Zürich — “quoted” ½ £5\n",
    "日本語のテキスト、中文文本，한국어 텍스트\n",
    "emoji 🙂🚀 and a tab\tand trailing spaces   \n\n  leading",
    std::string("bytes \x01\x7f\xc3 invalid utf-8 \xff\xfe"),
};

TEST(BytesTokenizer, RoundTripsAnyBytes) {
  BytesTokenizer tok;
  for (const auto& text : kTexts) {
    const auto ids = tok.encode(text);
    EXPECT_EQ(ids.size(), text.size());
    EXPECT_EQ(tok.decode(ids), text);
  }
  EXPECT_EQ(tok.vocab_size(), 257u);
  EXPECT_EQ(tok.eod_id(), 256u);
}

TEST(BytesTokenizer, EndOfDocumentHasNoText) {
  BytesTokenizer tok;
  std::vector<TokenId> ids = tok.encode("ab");
  ids.push_back(tok.eod_id());
  const auto more = tok.encode("cd");
  ids.insert(ids.end(), more.begin(), more.end());
  EXPECT_EQ(tok.decode(ids), "abcd");
}

// A small training corpus with a few thousand distinct made-up words, enough for 400 pieces of
// either model type.
std::vector<std::string> training_lines() {
  const char* syllables[] = {"ka", "lo",  "mi", "sen", "tra", "po", "qu", "ver", "da",  "ne",
                             "ri", "sto", "fu", "ga",  "le",  "xo", "bi", "zan", "ché", "wu"};
  std::vector<std::string> lines;
  uint32_t x = 12345;
  for (int i = 0; i < 3000; ++i) {
    std::string line;
    for (int w = 0; w < 8; ++w) {
      if (w) line += ' ';
      for (int k = 0; k < 3; ++k) {
        x = x * 1664525u + 1013904223u;  // a fixed LCG: the corpus is the same every run
        line += syllables[(x >> 16) % 20];
      }
    }
    lines.push_back(line);
  }
  return lines;
}

std::string train_small_model(const std::string& type) {
  const auto lines = training_lines();
  size_t next = 0;
  SentencePieceTrainingOptions options;
  options.model_type = type;
  options.vocab_size = 400;
  options.threads = 1;
  return train_sentencepiece(options, [&](std::string& s) {
    if (next == lines.size()) return false;
    s = lines[next++];
    return true;
  });
}

class SentencePiece : public ::testing::TestWithParam<std::string> {};

TEST_P(SentencePiece, TrainsAndRoundTripsNonAsciiText) {
  SentencePieceTokenizer tok(train_small_model(GetParam()), "test.model");
  EXPECT_EQ(tok.vocab_size(), 400u);
  EXPECT_EQ(tok.eod_id(), 1u);
  EXPECT_EQ(tok.kind(), "sentencepiece");
  for (const auto& text : kTexts) {
    if (text.find('\xff') != std::string::npos) continue;  // SentencePiece takes UTF-8 only
    const auto ids = tok.encode(text);
    EXPECT_EQ(tok.decode(ids), text) << text;
    for (auto id : ids)
      EXPECT_LT(id, tok.vocab_size());
  }
  // Merges happened: common words are fewer tokens than bytes.
  const std::string common = training_lines()[7];
  EXPECT_LT(tok.encode(common).size(), common.size() / 2);
}

INSTANTIATE_TEST_SUITE_P(Types, SentencePiece, ::testing::Values("bpe", "unigram"));

TEST(SentencePieceTokenizer, IdentityFollowsTheModelAndLoadsFromFile) {
  const std::string model = train_small_model("bpe");
  testing::TempDir dir;
  testing::write_file(dir.path("m.model"), model);
  auto loaded = SentencePieceTokenizer::load(dir.path("m.model"));
  SentencePieceTokenizer direct(model, "direct");
  EXPECT_EQ(loaded->identity(), direct.identity());
  EXPECT_EQ(loaded->identity().rfind("sentencepiece-", 0), 0u);
  EXPECT_EQ(loaded->encode("the model"), direct.encode("the model"));
}

TEST(SentencePieceTokenizer, RejectsGarbageAndBadOptions) {
  EXPECT_THROW(SentencePieceTokenizer("not a model", "x.model"), Error);
  EXPECT_THROW(SentencePieceTokenizer::load("/nonexistent.model"), Error);
  SentencePieceTrainingOptions options;
  options.vocab_size = 100;
  EXPECT_THROW(train_sentencepiece(options, [](std::string&) { return false; }), Error);
  options.vocab_size = 400;
  options.model_type = "wordpiece";
  EXPECT_THROW(train_sentencepiece(options, [](std::string&) { return false; }), Error);
}

}  // namespace
}  // namespace ladder::data
