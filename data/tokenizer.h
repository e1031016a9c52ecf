// Tokenizers: `bytes` (the 256 byte values plus an end-of-document id) and `sentencepiece` (BPE or
// unigram, trained here with libsentencepiece or loaded from a .model file).
//
// A tokenizer has an identity string that changes whenever its mapping could change (for
// SentencePiece a hash of the model bytes). Token shards record a hash of it, so a dataset can
// never be read with the wrong tokenizer.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace ladder::data {

using TokenId = uint32_t;

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::string kind() const = 0;      // "bytes" | "sentencepiece"
  virtual std::string identity() const = 0;  // e.g. "bytes-v1", "sentencepiece-3f2a9c01d4e5b6a7"
  virtual uint32_t vocab_size() const = 0;
  virtual TokenId eod_id() const = 0;  // appended after every document
  virtual void encode(std::string_view text, std::vector<TokenId>& out) const = 0;  // appends
  virtual std::string decode(const TokenId* ids, size_t count) const = 0;

  std::vector<TokenId> encode(std::string_view text) const {
    std::vector<TokenId> out;
    encode(text, out);
    return out;
  }
  std::string decode(const std::vector<TokenId>& ids) const {
    return decode(ids.data(), ids.size());
  }
};

// Byte-level tokenizer: ids 0..255 are the bytes, 256 is end-of-document. Lossless for any input.
class BytesTokenizer final : public Tokenizer {
 public:
  static constexpr TokenId kEod = 256;
  using Tokenizer::decode;
  using Tokenizer::encode;
  std::string kind() const override { return "bytes"; }
  std::string identity() const override { return "bytes-v1"; }
  uint32_t vocab_size() const override { return 257; }
  TokenId eod_id() const override { return kEod; }
  void encode(std::string_view text, std::vector<TokenId>& out) const override;
  std::string decode(const TokenId* ids, size_t count) const override;
};

// SentencePiece with settings that make decode(encode(x)) == x for any UTF-8 text: identity
// normalisation, no dummy prefix, whitespace kept, byte fallback for unseen characters. Id 0 is
// <unk>, id 1 is </s>, used as end-of-document.
class SentencePieceTokenizer final : public Tokenizer {
 public:
  // Loads a serialized model proto (the bytes of a .model file). `where` names it in errors.
  SentencePieceTokenizer(std::string model_bytes, const std::string& where);
  ~SentencePieceTokenizer() override;
  static std::unique_ptr<SentencePieceTokenizer> load(const std::string& path);
  using Tokenizer::decode;
  using Tokenizer::encode;

  std::string kind() const override { return "sentencepiece"; }
  std::string identity() const override { return identity_; }
  uint32_t vocab_size() const override;
  TokenId eod_id() const override;
  void encode(std::string_view text, std::vector<TokenId>& out) const override;
  std::string decode(const TokenId* ids, size_t count) const override;
  const std::string& model_bytes() const { return model_bytes_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string model_bytes_;
  std::string identity_;
};

struct SentencePieceTrainingOptions {
  std::string model_type = "bpe";  // "bpe" | "unigram"
  uint32_t vocab_size = 4096;
  int threads = 2;
  uint64_t max_sentences = 2'000'000;  // sentences sampled for training (SentencePiece's reservoir)
};

// Trains a model on the sentences that `next_sentence` yields (it returns false when done); returns
// the serialized model proto. Throws ladder::Error with SentencePiece's message if training fails.
std::string train_sentencepiece(const SentencePieceTrainingOptions& options,
                                const std::function<bool(std::string&)>& next_sentence);

}  // namespace ladder::data
