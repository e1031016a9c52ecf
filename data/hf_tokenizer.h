// Hugging Face `tokenizers` files (tokenizer.json): byte-level BPE, as GPT-2, Llama-3, Qwen2 and
// GPT-NeoX / Pythia ship it.
//
// Encoding follows the `tokenizers` library step by step, so that the ids are exactly the ones
// `Tokenizer.encode(text, add_special_tokens=False)` gives (tests/data/hf_tokenizer_reference.py
// checks it against the library on varied text and on the bundled corpus):
//
//   1. Added tokens (special or not) are cut out of the text first, leftmost-longest: those with
//      `normalized: false` on the raw text, the others on the normalized text of what is left.
//   2. Normalizer: none, NFC, NFD, NFKC, NFKD, or a Sequence of them (through utf8proc).
//   3. Pre-tokenizer: Split (a regex or string pattern with any of its behaviours), Digits, and
//      ByteLevel last (its GPT-2 regex when `use_regex`, a space prefixed to each piece when
//      `add_prefix_space`), alone or in a Sequence. Regexes run on Oniguruma, the engine
//      `tokenizers` itself uses, so \p{L}, \s and look-ahead mean what they mean there.
//   4. Model: BPE over the bytes of each piece, lowest merge rank first (leftmost on ties), with
//      `ignore_merges` (a piece that is itself in the vocabulary is one token, as in Llama-3).
//
// No post-processor runs: ladder appends the end-of-document token itself and adds no
// beginning-of-text token. Anything else a tokenizer.json may hold (WordPiece or Unigram models,
// Metaspace, BPE dropout, added tokens that strip whitespace) is refused when the file is read,
// naming what is not supported, rather than encoded differently from the library.
//
// Text that is not valid UTF-8 is encoded as Python's `bytes.decode("utf-8", errors="replace")`
// would pass it to the library: each maximal invalid subpart becomes U+FFFD.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "data/tokenizer.h"

namespace ladder::data {

class HfTokenizer final : public Tokenizer {
 public:
  // `json` is the text of a tokenizer.json; `where` names it in errors. `eod_token` is the content
  // of the token appended after every document; empty picks the first special added token among
  // <|endoftext|>, <|end_of_text|>, </s>, <eos>, <|im_end|> (an error names the choices if none).
  HfTokenizer(std::string json, const std::string& where, const std::string& eod_token = "");
  ~HfTokenizer() override;
  // Reads `path`; without `eod_token`, the `eos_token` of a tokenizer_config.json beside it, if
  // any.
  static std::unique_ptr<HfTokenizer> load(const std::string& path,
                                           const std::string& eod_token = "");
  using Tokenizer::decode;
  using Tokenizer::encode;

  std::string kind() const override { return "hf"; }
  // "hf-<FNV-1a 64 of the file's bytes and the end-of-document token>".
  std::string identity() const override { return identity_; }
  uint32_t vocab_size() const override;
  TokenId eod_id() const override;
  void encode(std::string_view text, std::vector<TokenId>& out) const override;
  std::string decode(const TokenId* ids, size_t count) const override;

  const std::string& file_text() const { return json_; }  // the file's bytes, as read
  const std::string& eod_token() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string json_;
  std::string identity_;
};

// GPT-2's map of bytes to printable characters (Radford et al. 2019, encoder.py bytes_to_unicode),
// which a ByteLevel pre-tokenizer applies: byte b becomes the character returned, as UTF-8.
std::string byte_level_character(unsigned char b);

// `text` with every maximal subpart of an ill-formed UTF-8 sequence replaced by U+FFFD (Unicode
// 15, §3.9 "U+FFFD Substitution of Maximal Subparts", as Python's decoder does).
std::string replace_invalid_utf8(std::string_view text);

}  // namespace ladder::data
