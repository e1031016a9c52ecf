// Hugging Face tokenizer.json files: ladder's ids against the `tokenizers` library's (from the
// project's virtual environment) for tokenizers laid out as GPT-2, Llama-3, Qwen2 and NeoX lay
// theirs out, on varied and invalid text and on the bundled corpus; and the files ladder refuses.
#include "data/hf_tokenizer.h"

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "core/error.h"
#include "test_util.h"

namespace ladder::data {
namespace {

using json = nlohmann::json;

// Runs the reference script once for the whole suite.
class HfTokenizerReference : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    const auto r = testing::run_command(std::string(LADDER_PYTHON) + " " + LADDER_SOURCE_DIR +
                                        "/tests/data/hf_tokenizer_reference.py " + dir_->path());
    ASSERT_EQ(r.status, 0) << r.output;
    expected_ = new json(json::parse(testing::read_file(dir_->path("expected.json"))));
  }
  static void TearDownTestSuite() {
    delete expected_;
    delete dir_;
  }
  static std::string text(size_t i) {
    return testing::read_file(dir_->path("texts/" + std::to_string(i) + ".bin"));
  }
  static testing::TempDir* dir_;
  static json* expected_;
};
testing::TempDir* HfTokenizerReference::dir_ = nullptr;
json* HfTokenizerReference::expected_ = nullptr;

TEST_F(HfTokenizerReference, IdsEqualTheLibrarysForEveryStyleAndText) {
  size_t styles = 0;
  for (const auto& [style, eod] : (*expected_)["eod"].items()) {
    SCOPED_TRACE(style);
    const auto tok = HfTokenizer::load(dir_->path(style + "/tokenizer.json"));
    EXPECT_EQ(tok->eod_token(), eod.get<std::string>());
    const json& ids = (*expected_)[style];
    size_t mismatches = 0;
    for (size_t i = 0; i < ids.size(); ++i) {
      const auto expected = ids[i].get<std::vector<TokenId>>();
      const auto got = tok->encode(text(i));
      if (got != expected && ++mismatches <= 3) {
        size_t first = 0;
        while (first < got.size() && first < expected.size() && got[first] == expected[first])
          ++first;
        ADD_FAILURE() << style << " text " << i << ": " << got.size() << " ids, the library's "
                      << expected.size() << "; first difference at id " << first;
      }
      // Decoding gives the library's decoding (the text itself where nothing was normalized or
      // removed).
      EXPECT_EQ(tok->decode(got), (*expected_)["round_trip"][style][i].get<std::string>())
          << style << " text " << i;
    }
    EXPECT_EQ(mismatches, 0u);
    ++styles;
  }
  EXPECT_EQ(styles, 8u);
}

TEST_F(HfTokenizerReference, EncodingIsThreadSafe) {
  const auto tok = HfTokenizer::load(dir_->path("llama3/tokenizer.json"));
  const json& ids = (*expected_)["llama3"];
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 5; ++t)
    threads.emplace_back([&, t] {
      for (size_t i = t; i < ids.size(); i += 2)
        if (tok->encode(text(i)) != ids[i].get<std::vector<TokenId>>()) ++failures;
    });
  for (auto& t : threads)
    t.join();
  EXPECT_EQ(failures.load(), 0);
}

TEST_F(HfTokenizerReference, IdentityFollowsTheFileAndTheEndOfDocumentToken) {
  const auto a = HfTokenizer::load(dir_->path("qwen2/tokenizer.json"));
  const auto b = HfTokenizer::load(dir_->path("qwen2/tokenizer.json"), "<|im_end|>");
  const auto c = HfTokenizer::load(dir_->path("neox/tokenizer.json"));
  EXPECT_EQ(a->identity().rfind("hf-", 0), 0u);
  EXPECT_NE(a->identity(), b->identity());
  EXPECT_NE(a->identity(), c->identity());
  EXPECT_EQ(a->identity(), HfTokenizer::load(dir_->path("qwen2/tokenizer.json"))->identity());
  EXPECT_NE(a->eod_id(), b->eod_id());
  EXPECT_EQ(b->decode(std::vector<TokenId>{b->eod_id()}), "<|im_end|>");
  // A tokenizer_config.json beside the file names the end-of-document token.
  testing::write_file(dir_->path("qwen2/tokenizer_config.json"),
                      R"({"eos_token": {"content": "<|im_end|>"}})");
  EXPECT_EQ(HfTokenizer::load(dir_->path("qwen2/tokenizer.json"))->identity(), b->identity());
  std::filesystem::remove(dir_->path("qwen2/tokenizer_config.json"));
}

TEST(ReplaceInvalidUtf8, ReplacesMaximalSubpartsAsPythonDoes) {
  EXPECT_EQ(replace_invalid_utf8("plain \xc3\xa9 text"), "plain \xc3\xa9 text");
  const std::string r = "\xef\xbf\xbd";
  EXPECT_EQ(replace_invalid_utf8("a\xff"
                                 "b"),
            "a" + r + "b");
  EXPECT_EQ(replace_invalid_utf8("\xe2\x82"
                                 "x"),
            r + "x");                                                  // one subpart
  EXPECT_EQ(replace_invalid_utf8("\xc0\xaf"), r + r);                  // C0 never starts a sequence
  EXPECT_EQ(replace_invalid_utf8("\xed\xa0\x80"), r + r + r);          // surrogates: ED then 80-9F
  EXPECT_EQ(replace_invalid_utf8("\xf0\x9f\x98"), r);                  // truncated at the end
  EXPECT_EQ(replace_invalid_utf8("\xf4\x90\x80\x80"), r + r + r + r);  // above U+10FFFF
}

TEST(ByteLevelCharacter, IsGpt2sMap) {
  EXPECT_EQ(byte_level_character('A'), "A");
  EXPECT_EQ(byte_level_character(' '), "\xc4\xa0");   // Ġ
  EXPECT_EQ(byte_level_character('\n'), "\xc4\x8a");  // Ċ
  EXPECT_EQ(byte_level_character(0xAD), "\xc5\x83");  // the last unprintable byte: U+0143
  EXPECT_EQ(byte_level_character(0xFF), "\xc3\xbf");  // printable bytes map to themselves
}

// What ladder cannot encode as the library does is refused, naming the file and what it holds.
TEST(HfTokenizer, UnsupportedFilesAreRefused) {
  json base = json::parse(
      testing::read_file(std::string(LADDER_SOURCE_DIR) + "/data/tokenizers/brown-bpe-4096.json"));
  const auto error = [](const json& j, const std::string& eod = "") {
    try {
      HfTokenizer tok(j.dump(), "t/tokenizer.json", eod);
    } catch (const Error& e) {
      EXPECT_EQ(e.where(), "t/tokenizer.json");
      return e.detail();
    }
    return std::string("no error");
  };
  json unigram = base;
  unigram["model"] = {{"type", "Unigram"}, {"vocab", json::array()}};
  EXPECT_NE(error(unigram).find("model type \"Unigram\" is not supported"), std::string::npos);
  json metaspace = base;
  metaspace["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "\xe2\x96\x81"}};
  EXPECT_NE(error(metaspace).find("pre_tokenizer \"Metaspace\" is not supported"),
            std::string::npos);
  json none = base;
  none["pre_tokenizer"] = nullptr;
  EXPECT_NE(error(none).find("without a ByteLevel pre-tokenizer"), std::string::npos);
  json lowercase = base;
  lowercase["normalizer"] = {{"type", "Lowercase"}};
  EXPECT_NE(error(lowercase).find("normalizer \"Lowercase\" is not supported"), std::string::npos);
  json dropout = base;
  dropout["model"]["dropout"] = 0.1;
  EXPECT_NE(error(dropout).find("BPE dropout"), std::string::npos);
  json lstrip = base;
  lstrip["added_tokens"][0]["lstrip"] = true;
  EXPECT_NE(error(lstrip).find("with lstrip = true is not supported"), std::string::npos);
  json merges = base;
  merges["model"]["merges"][0] = json::array({"zz", "qq"});
  EXPECT_NE(error(merges).find("names a token the vocabulary lacks"), std::string::npos);
  EXPECT_NE(error(base, "<|nope|>").find("has no token \"<|nope|>\""), std::string::npos);
  json no_eod = base;
  no_eod["added_tokens"][0]["content"] = "<|pad|>";
  EXPECT_NE(error(no_eod).find("name one with --eod-token"), std::string::npos);
  try {
    HfTokenizer tok("{not json", "t/tokenizer.json");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(e.detail().find("JSON does not parse"), std::string::npos);
  }
  EXPECT_THROW(HfTokenizer::load("/nonexistent/tokenizer.json"), Error);
}

}  // namespace
}  // namespace ladder::data
