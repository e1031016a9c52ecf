#include "data/hf_tokenizer.h"

#include <oniguruma.h>
#include <utf8proc.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <unordered_map>

#include "core/error.h"
#include "core/hash.h"

namespace ladder::data {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

// ----- UTF-8 -------------------------------------------------------------------------------------

constexpr std::string_view kReplacementCharacter = "\xEF\xBF\xBD";  // U+FFFD

// Length of the well-formed UTF-8 sequence at text[i], or 0 with `*subpart` set to the length of
// its maximal ill-formed subpart (Unicode 15, Table 3-7: the second byte's range depends on the
// first).
size_t utf8_sequence(std::string_view text, size_t i, size_t* subpart) {
  const auto b = static_cast<unsigned char>(text[i]);
  if (b < 0x80) return 1;
  size_t need = 0;
  unsigned char lo = 0x80, hi = 0xBF;
  if (b >= 0xC2 && b <= 0xDF) {
    need = 1;
  } else if (b == 0xE0) {
    need = 2, lo = 0xA0;
  } else if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF) {
    need = 2;
  } else if (b == 0xED) {
    need = 2, hi = 0x9F;
  } else if (b == 0xF0) {
    need = 3, lo = 0x90;
  } else if (b >= 0xF1 && b <= 0xF3) {
    need = 3;
  } else if (b == 0xF4) {
    need = 3, hi = 0x8F;
  } else {
    *subpart = 1;
    return 0;
  }
  size_t j = i + 1;
  for (size_t k = 0; k < need; ++k, ++j) {
    if (j >= text.size()) break;
    const auto c = static_cast<unsigned char>(text[j]);
    if (c < lo || c > hi) break;
    lo = 0x80, hi = 0xBF;
  }
  if (j - i == need + 1) return need + 1;
  *subpart = j - i;
  return 0;
}

bool is_ascii(std::string_view text) {
  for (unsigned char c : text)
    if (c >= 0x80) return false;
  return true;
}

// The code point of the (well-formed) UTF-8 sequence at text[i]; advances i.
char32_t next_code_point(std::string_view text, size_t& i) {
  utf8proc_int32_t cp = 0;
  const auto n = utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(text.data() + i),
                                  static_cast<utf8proc_ssize_t>(text.size() - i), &cp);
  i += n > 0 ? static_cast<size_t>(n) : 1;
  return static_cast<char32_t>(cp);
}

// ----- GPT-2's byte <-> character map ------------------------------------------------------------

bool byte_is_printable(int b) {
  return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
}

// The code point byte b maps to, and its inverse (the code points are all below 324).
struct ByteLevelMap {
  std::array<char32_t, 256> code{};
  std::array<int, 324> byte{};
  std::array<std::string, 256> utf8;
  ByteLevelMap() {
    byte.fill(-1);
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      code[b] = byte_is_printable(b) ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + n++);
      byte[code[b]] = b;
      const char32_t c = code[b];
      if (c < 0x80) {
        utf8[b] = std::string(1, static_cast<char>(c));
      } else {
        utf8[b] = {static_cast<char>(0xC0 | (c >> 6)), static_cast<char>(0x80 | (c & 0x3F))};
      }
    }
  }
  static const ByteLevelMap& get() {
    static const ByteLevelMap map;
    return map;
  }
};

// ----- Oniguruma ---------------------------------------------------------------------------------

// GPT-2's pre-tokenization regex, which a ByteLevel pre-tokenizer with `use_regex` applies.
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class Regex {
 public:
  Regex(const std::string& pattern, const std::string& where) {
    static std::once_flag once;
    std::call_once(once, [] {
      OnigEncoding encodings[] = {ONIG_ENCODING_UTF8};
      onig_initialize(encodings, 1);
    });
    OnigErrorInfo info;
    const auto* p = reinterpret_cast<const OnigUChar*>(pattern.data());
    const int r = onig_new(&regex_, p, p + pattern.size(), ONIG_OPTION_NONE, ONIG_ENCODING_UTF8,
                           ONIG_SYNTAX_DEFAULT, &info);
    if (r != ONIG_NORMAL) {
      OnigUChar message[ONIG_MAX_ERROR_MESSAGE_LEN];
      onig_error_code_to_str(message, r, &info);
      throw Error(where, "the regex " + pattern +
                             " does not compile: " + reinterpret_cast<const char*>(message));
    }
  }
  ~Regex() { onig_free(regex_); }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // The matches in `text`, left to right, as the `onig` crate's find_iter gives them to
  // `tokenizers`: each search starts where the last match ended, and an empty match right after the
  // last one is skipped by one character.
  void find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const {
    out.clear();
    const auto* begin = reinterpret_cast<const OnigUChar*>(text.data());
    const auto* end = begin + text.size();
    OnigRegion* region = onig_region_new();
    size_t from = 0;
    size_t last_match_end = std::string_view::npos;
    while (from <= text.size()) {
      const int r = onig_search(regex_, begin, end, begin + from, end, region, ONIG_OPTION_NONE);
      if (r < 0) break;  // ONIG_MISMATCH (errors cannot occur on well-formed UTF-8)
      const auto s = static_cast<size_t>(region->beg[0]), e = static_cast<size_t>(region->end[0]);
      if (s == e && last_match_end == e) {
        if (from >= text.size()) break;
        size_t next = from;
        next_code_point(text, next);
        from = next;
        continue;
      }
      out.emplace_back(s, e);
      from = e;
      last_match_end = e;
    }
    onig_region_free(region, 1);
  }

 private:
  regex_t* regex_ = nullptr;
};

// ----- Splitting a piece of text (tokenizers' NormalizedString::split) ---------------------------

enum class Behavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

struct Span {
  size_t begin, end;
  bool flag;  // a match, then (after the behaviour) "remove"
};

// Spans covering `n` bytes from the matches, as tokenizers' Pattern::find_matches returns them.
std::vector<Span> cover(size_t n, const std::vector<std::pair<size_t, size_t>>& matches) {
  std::vector<Span> spans;
  if (n == 0) return {{0, 0, false}};
  size_t prev = 0;
  for (const auto& [s, e] : matches) {
    if (prev != s) spans.push_back({prev, s, false});
    spans.push_back({s, e, true});
    prev = e;
  }
  if (prev != n) spans.push_back({prev, n, false});
  return spans;
}

// Appends the pieces of `text` that `spans` (matches flagged) and `behavior` give, empty ones left
// out. Mirrors tokenizers' SplitDelimiterBehavior case by case.
void split_by(std::string_view text, std::vector<Span> spans, Behavior behavior, bool invert,
              std::vector<std::string>& out) {
  if (invert)
    for (auto& s : spans)
      s.flag = !s.flag;
  std::vector<Span> pieces;
  switch (behavior) {
    case Behavior::Isolated:
      for (auto s : spans)
        pieces.push_back({s.begin, s.end, false});
      break;
    case Behavior::Removed:
      pieces = spans;
      break;
    case Behavior::Contiguous: {
      bool previous = false;
      for (const auto& s : spans) {
        if (s.flag == previous && !pieces.empty())
          pieces.back().end = s.end;
        else
          pieces.push_back({s.begin, s.end, false});
        previous = s.flag;
      }
      break;
    }
    case Behavior::MergedWithPrevious: {
      bool previous = false;
      for (const auto& s : spans) {
        if (s.flag && !previous && !pieces.empty())
          pieces.back().end = s.end;
        else
          pieces.push_back({s.begin, s.end, false});
        previous = s.flag;
      }
      break;
    }
    case Behavior::MergedWithNext: {
      bool previous = false;
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->flag && !previous && !pieces.empty())
          pieces.back().begin = it->begin;
        else
          pieces.push_back({it->begin, it->end, false});
        previous = it->flag;
      }
      std::reverse(pieces.begin(), pieces.end());
      break;
    }
  }
  for (const auto& p : pieces)
    if (!p.flag && p.begin < p.end) out.emplace_back(text.substr(p.begin, p.end - p.begin));
}

Behavior parse_behavior(const std::string& name, const std::string& where) {
  if (name == "Removed") return Behavior::Removed;
  if (name == "Isolated") return Behavior::Isolated;
  if (name == "MergedWithPrevious") return Behavior::MergedWithPrevious;
  if (name == "MergedWithNext") return Behavior::MergedWithNext;
  if (name == "Contiguous") return Behavior::Contiguous;
  throw Error(where, "unknown Split behavior \"" + name + "\"");
}

// One step of the pre-tokenizer.
struct PreTokenizerStep {
  enum class Kind { Regex, Literal, Digits, ByteLevel } kind;
  std::unique_ptr<Regex> regex;  // Regex, and ByteLevel with use_regex
  std::string literal;
  Behavior behavior = Behavior::Isolated;
  bool invert = false;
  bool add_prefix_space = false;

  void apply(const std::string& piece, std::vector<std::string>& out,
             std::vector<std::pair<size_t, size_t>>& matches) const {
    switch (kind) {
      case Kind::Regex:
        regex->find_all(piece, matches);
        split_by(piece, cover(piece.size(), matches), behavior, invert, out);
        return;
      case Kind::Literal: {
        matches.clear();
        if (literal.empty()) {
          split_by(piece, {{0, piece.size(), false}}, behavior, invert, out);
          return;
        }
        for (size_t at = piece.find(literal); at != std::string::npos;
             at = piece.find(literal, at + literal.size()))
          matches.emplace_back(at, at + literal.size());
        split_by(piece, cover(piece.size(), matches), behavior, invert, out);
        return;
      }
      case Kind::Digits: {
        matches.clear();
        for (size_t i = 0; i < piece.size(); ++i)
          if (piece[i] >= '0' && piece[i] <= '9') matches.emplace_back(i, i + 1);
        split_by(piece, cover(piece.size(), matches), behavior, false, out);
        return;
      }
      case Kind::ByteLevel: {
        const std::string prefixed =
            add_prefix_space && (piece.empty() || piece[0] != ' ') ? " " + piece : piece;
        if (!regex) {
          if (!prefixed.empty()) out.push_back(prefixed);
          return;
        }
        regex->find_all(prefixed, matches);
        split_by(prefixed, cover(prefixed.size(), matches), Behavior::Isolated, false, out);
        return;
      }
    }
  }
};

// Unicode normalization forms, as utf8proc options.
int normalization_options(const std::string& type) {
  if (type == "NFC") return UTF8PROC_STABLE | UTF8PROC_COMPOSE;
  if (type == "NFD") return UTF8PROC_STABLE | UTF8PROC_DECOMPOSE;
  if (type == "NFKC") return UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT;
  if (type == "NFKD") return UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT;
  return 0;
}

std::string normalize(const std::string& text, int options) {
  if (is_ascii(text)) return text;  // every normalization form leaves ASCII as it is
  utf8proc_uint8_t* result = nullptr;
  const auto n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                              static_cast<utf8proc_ssize_t>(text.size()), &result,
                              static_cast<utf8proc_option_t>(options));
  if (n < 0) return text;  // cannot happen on well-formed UTF-8
  std::string out(reinterpret_cast<const char*>(result), static_cast<size_t>(n));
  std::free(result);
  return out;
}

struct AddedToken {
  std::string content;  // normalized when `normalized`
  TokenId id;
  bool special;
};

// Leftmost-longest search for a set of added tokens (tokenizers uses Aho-Corasick with
// MatchKind::LeftmostLongest; the sets are small, so candidates by first byte suffice).
class AddedTokenMatcher {
 public:
  void add(const AddedToken& token) {
    if (token.content.empty()) return;
    auto& list = by_first_byte_[static_cast<unsigned char>(token.content[0])];
    list.push_back(token);
    std::stable_sort(list.begin(), list.end(), [](const AddedToken& a, const AddedToken& b) {
      return a.content.size() > b.content.size();
    });
    empty_ = false;
  }
  bool empty() const { return empty_; }
  // The first match at or after `from`: its position and token, or npos.
  std::pair<size_t, const AddedToken*> find(std::string_view text, size_t from) const {
    for (size_t i = from; i < text.size(); ++i) {
      for (const auto& token : by_first_byte_[static_cast<unsigned char>(text[i])])
        if (text.compare(i, token.content.size(), token.content) == 0) return {i, &token};
    }
    return {std::string_view::npos, nullptr};
  }

 private:
  std::array<std::vector<AddedToken>, 256> by_first_byte_;
  bool empty_ = true;
};

// Calls `text_piece(string)` and `token(id)` in order over `text` cut at the matcher's tokens.
template <class TextFn, class TokenFn>
void cut_added_tokens(const AddedTokenMatcher& matcher, std::string_view text, TextFn text_piece,
                      TokenFn token) {
  size_t at = 0;
  while (at < text.size()) {
    const auto [pos, match] =
        matcher.empty() ? std::pair<size_t, const AddedToken*>{std::string_view::npos, nullptr}
                        : matcher.find(text, at);
    if (!match) {
      text_piece(text.substr(at));
      return;
    }
    if (pos > at) text_piece(text.substr(at, pos - at));
    token(match->id);
    at = pos + match->content.size();
  }
}

std::string json_string(const json& j, const char* key) {
  const auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

bool json_true(const json& j, const char* key) {
  const auto it = j.find(key);
  return it != j.end() && it->is_boolean() && it->get<bool>();
}

}  // namespace

std::string byte_level_character(unsigned char b) {
  return ByteLevelMap::get().utf8[b];
}

std::string replace_invalid_utf8(std::string_view text) {
  std::string out;
  size_t clean = 0;  // text[clean, i) is well-formed and not yet copied
  size_t i = 0;
  while (i < text.size()) {
    size_t subpart = 0;
    const size_t n = utf8_sequence(text, i, &subpart);
    if (n > 0) {
      i += n;
      continue;
    }
    out.append(text.substr(clean, i - clean));
    out.append(kReplacementCharacter);
    i += subpart;
    clean = i;
  }
  if (clean == 0) return std::string(text);
  out.append(text.substr(clean));
  return out;
}

// ----- The tokenizer -----------------------------------------------------------------------------

struct HfTokenizer::Impl {
  std::vector<int> normalizers;  // utf8proc options, applied in order
  std::vector<PreTokenizerStep> pre_tokenizer;
  AddedTokenMatcher raw_added, normalized_added;
  std::unordered_map<TokenId, std::string> added_content;  // id -> text, for decoding

  // BPE over bytes: the id of each byte's character, and (left id, right id) -> (rank, merged id).
  std::array<TokenId, 256> byte_id{};
  std::unordered_map<uint64_t, std::pair<uint32_t, TokenId>> merges;
  std::unordered_map<std::string, TokenId> vocab;  // byte-level strings, for ignore_merges
  std::vector<std::string> tokens;                 // id -> byte-level string ("" where none)
  bool ignore_merges = false;
  uint32_t vocab_size = 0;
  TokenId eod = 0;
  std::string eod_token;

  static uint64_t pair_key(TokenId a, TokenId b) { return (uint64_t{a} << 32) | b; }

  std::string normalized(const std::string& text) const {
    std::string s = text;
    for (const int options : normalizers)
      s = normalize(s, options);
    return s;
  }

  // BPE of one pre-tokenized piece (Sennrich et al. 2016; tokenizers' Word::merge_all): repeatedly
  // merge the adjacent pair of lowest rank, the leftmost of equal ones.
  void encode_piece(std::string_view piece, std::vector<TokenId>& out) const {
    const size_t n = piece.size();
    if (n == 0) return;
    if (ignore_merges) {
      std::string chars;
      const auto& map = ByteLevelMap::get();
      for (unsigned char c : piece)
        chars += map.utf8[c];
      const auto it = vocab.find(chars);
      if (it != vocab.end()) {
        out.push_back(it->second);
        return;
      }
    }
    if (n == 1) {
      out.push_back(byte_id[static_cast<unsigned char>(piece[0])]);
      return;
    }
    struct Symbol {
      TokenId id;
      int prev, next;
      bool alive;
    };
    struct Candidate {
      uint32_t rank;
      int pos;
      TokenId merged;
      bool operator>(const Candidate& o) const {
        return rank != o.rank ? rank > o.rank : pos > o.pos;
      }
    };
    std::vector<Symbol> symbols(n);
    for (size_t i = 0; i < n; ++i)
      symbols[i] = {byte_id[static_cast<unsigned char>(piece[i])], static_cast<int>(i) - 1,
                    i + 1 < n ? static_cast<int>(i + 1) : -1, true};
    std::vector<Candidate> heap;
    const auto consider = [&](int left) {
      const int right = symbols[left].next;
      if (right < 0) return;
      const auto it = merges.find(pair_key(symbols[left].id, symbols[right].id));
      if (it == merges.end()) return;
      heap.push_back({it->second.first, left, it->second.second});
      std::push_heap(heap.begin(), heap.end(), std::greater<>());
    };
    for (size_t i = 0; i + 1 < n; ++i)
      consider(static_cast<int>(i));
    while (!heap.empty()) {
      std::pop_heap(heap.begin(), heap.end(), std::greater<>());
      const Candidate top = heap.back();
      heap.pop_back();
      Symbol& left = symbols[top.pos];
      if (!left.alive || left.next < 0) continue;
      Symbol& right = symbols[left.next];
      const auto it = merges.find(pair_key(left.id, right.id));
      if (it == merges.end() || it->second.second != top.merged) continue;
      left.id = top.merged;
      right.alive = false;
      left.next = right.next;
      if (right.next >= 0) symbols[right.next].prev = top.pos;
      if (left.prev >= 0) consider(left.prev);
      consider(top.pos);
    }
    for (int i = 0; i >= 0; i = symbols[i].next)
      out.push_back(symbols[i].id);
  }

  // Normalizes, cuts out the normalized added tokens, pre-tokenizes and encodes one piece of text
  // that holds no raw added token.
  void encode_text(std::string_view raw, std::vector<TokenId>& out) const {
    const std::string text = normalized(std::string(raw));
    std::vector<std::string> pieces, next;
    std::vector<std::pair<size_t, size_t>> matches;
    cut_added_tokens(
        normalized_added, text,
        [&](std::string_view segment) {
          pieces.assign(1, std::string(segment));
          for (const auto& step : pre_tokenizer) {
            next.clear();
            for (const auto& p : pieces)
              step.apply(p, next, matches);
            pieces.swap(next);
          }
          for (const auto& p : pieces)
            encode_piece(p, out);
        },
        [&](TokenId id) { out.push_back(id); });
  }
};

HfTokenizer::HfTokenizer(std::string json_text, const std::string& where,
                         const std::string& eod_token)
    : impl_(std::make_unique<Impl>()), json_(std::move(json_text)) {
  json j;
  try {
    j = json::parse(json_);
  } catch (const json::exception& e) {
    throw Error(where, std::string("not a tokenizer.json (JSON does not parse): ") + e.what());
  }
  if (!j.is_object() || !j.contains("model"))
    throw Error(where, "not a tokenizer.json: no \"model\" object");
  Impl& m = *impl_;
  const auto unsupported = [&](const std::string& what) {
    throw Error(where, what +
                           " is not supported (ladder reads byte-level BPE tokenizers: GPT-2, "
                           "Llama-3, Qwen2, GPT-NeoX style)");
  };

  // The model: byte-level BPE.
  const json& model = j["model"];
  const std::string type = json_string(model, "type");
  if (type != "BPE") unsupported("model type \"" + type + "\"");
  if (model.contains("dropout") && !model["dropout"].is_null() &&
      model["dropout"].get<double>() > 0)
    unsupported("BPE dropout (it makes encoding random)");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (!json_string(model, key).empty()) unsupported(std::string("model.") + key);
  m.ignore_merges = json_true(model, "ignore_merges");
  if (!model.contains("vocab") || !model["vocab"].is_object())
    throw Error(where, "model.vocab is missing");
  TokenId max_id = 0;
  for (const auto& [token, id] : model["vocab"].items()) {
    const auto v = id.get<TokenId>();
    m.vocab.emplace(token, v);
    max_id = std::max(max_id, v);
  }
  m.tokens.assign(size_t{max_id} + 1, std::string());
  for (const auto& [token, id] : m.vocab)
    m.tokens[id] = token;
  const auto& map = ByteLevelMap::get();
  for (int b = 0; b < 256; ++b) {
    const auto it = m.vocab.find(map.utf8[b]);
    if (it == m.vocab.end()) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "0x%02x", b);
      throw Error(where, std::string("model.vocab lacks the byte-level character of byte ") + hex +
                             ": not a byte-level BPE vocabulary");
    }
    m.byte_id[b] = it->second;
  }
  const json& merges = model.contains("merges") ? model["merges"] : json::array();
  uint32_t rank = 0;
  for (const auto& merge : merges) {
    std::string left, right;
    if (merge.is_string()) {  // "a b" (tokenizers < 0.20)
      const std::string s = merge.get<std::string>();
      const size_t space = s.find(' ', 1);
      if (space == std::string::npos)
        throw Error(where, "model.merges: \"" + s + "\" is not a pair");
      left = s.substr(0, space), right = s.substr(space + 1);
    } else if (merge.is_array() && merge.size() == 2) {  // ["a", "b"]
      left = merge[0].get<std::string>(), right = merge[1].get<std::string>();
    } else {
      throw Error(where, "model.merges[" + std::to_string(rank) + "] is not a pair");
    }
    const auto a = m.vocab.find(left), b = m.vocab.find(right), ab = m.vocab.find(left + right);
    if (a == m.vocab.end() || b == m.vocab.end() || ab == m.vocab.end())
      throw Error(where, "model.merges[" + std::to_string(rank) + "] (\"" + left + "\", \"" +
                             right + "\") names a token the vocabulary lacks");
    m.merges.emplace(Impl::pair_key(a->second, b->second), std::make_pair(rank, ab->second));
    ++rank;
  }

  // The normalizer.
  const auto add_normalizer = [&](const json& n) {
    const std::string t = json_string(n, "type");
    const int options = normalization_options(t);
    if (options == 0) unsupported("normalizer \"" + t + "\"");
    m.normalizers.push_back(options);
  };
  if (j.contains("normalizer") && !j["normalizer"].is_null()) {
    const json& n = j["normalizer"];
    if (json_string(n, "type") == "Sequence") {
      for (const auto& step : n["normalizers"])
        add_normalizer(step);
    } else {
      add_normalizer(n);
    }
  }

  // The pre-tokenizer: its steps, ByteLevel last.
  const auto add_step = [&](const json& p) {
    const std::string t = json_string(p, "type");
    PreTokenizerStep step;
    if (t == "ByteLevel") {
      step.kind = PreTokenizerStep::Kind::ByteLevel;
      step.add_prefix_space = json_true(p, "add_prefix_space");
      if (!p.contains("use_regex") || json_true(p, "use_regex"))
        step.regex = std::make_unique<Regex>(kGpt2Pattern, where);
    } else if (t == "Split") {
      const json& pattern = p["pattern"];
      if (pattern.contains("Regex")) {
        step.kind = PreTokenizerStep::Kind::Regex;
        step.regex = std::make_unique<Regex>(pattern["Regex"].get<std::string>(), where);
      } else if (pattern.contains("String")) {
        step.kind = PreTokenizerStep::Kind::Literal;
        step.literal = pattern["String"].get<std::string>();
      } else {
        throw Error(where, "pre_tokenizer Split: pattern is neither Regex nor String");
      }
      step.behavior = parse_behavior(json_string(p, "behavior"), where);
      step.invert = json_true(p, "invert");
    } else if (t == "Digits") {
      step.kind = PreTokenizerStep::Kind::Digits;
      step.behavior = json_true(p, "individual_digits") ? Behavior::Isolated : Behavior::Contiguous;
    } else {
      unsupported("pre_tokenizer \"" + t + "\"");
    }
    if (!m.pre_tokenizer.empty() &&
        m.pre_tokenizer.back().kind == PreTokenizerStep::Kind::ByteLevel)
      unsupported("a pre_tokenizer step after ByteLevel");
    m.pre_tokenizer.push_back(std::move(step));
  };
  if (j.contains("pre_tokenizer") && !j["pre_tokenizer"].is_null()) {
    const json& p = j["pre_tokenizer"];
    if (json_string(p, "type") == "Sequence") {
      for (const auto& step : p["pretokenizers"])
        add_step(step);
    } else {
      add_step(p);
    }
  }
  if (m.pre_tokenizer.empty() || m.pre_tokenizer.back().kind != PreTokenizerStep::Kind::ByteLevel)
    unsupported(
        "a BPE without a ByteLevel pre-tokenizer (SentencePiece-style BPE, as Llama-2's; "
        "prepare those with --tokenizer sentencepiece --sp-model tokenizer.model)");

  // Added tokens.
  if (j.contains("added_tokens")) {
    for (const auto& t : j["added_tokens"]) {
      const std::string content = json_string(t, "content");
      const auto id = t.at("id").get<TokenId>();
      for (const char* key : {"single_word", "lstrip", "rstrip"})
        if (json_true(t, key))
          unsupported("added token \"" + content + "\" with " + key + " = true");
      const bool normalized = json_true(t, "normalized");
      const AddedToken token{normalized ? m.normalized(content) : content, id,
                             json_true(t, "special")};
      (normalized ? m.normalized_added : m.raw_added).add(token);
      m.added_content[id] = content;
      max_id = std::max(max_id, id);
    }
  }
  m.vocab_size = max_id + 1;

  // The end-of-document token.
  const auto lookup = [&](const std::string& content) -> std::optional<TokenId> {
    for (const auto& [id, text] : m.added_content)
      if (text == content) return id;
    const auto it = m.vocab.find(content);
    if (it != m.vocab.end()) return it->second;
    return std::nullopt;
  };
  if (!eod_token.empty()) {
    const auto id = lookup(eod_token);
    if (!id) throw Error(where, "has no token \"" + eod_token + "\" to end documents with");
    m.eod = *id, m.eod_token = eod_token;
  } else {
    for (const char* name : {"<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|im_end|>"}) {
      for (const auto& [id, text] : m.added_content)
        if (text == name) m.eod = id, m.eod_token = name;
      if (!m.eod_token.empty()) break;
    }
    if (m.eod_token.empty())
      throw Error(where,
                  "names no end-of-document token (none of <|endoftext|>, <|end_of_text|>, </s>, "
                  "<eos>, <|im_end|> is an added token): name one with --eod-token");
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx",
                static_cast<unsigned long long>(hash_words(fnv1a64(json_), fnv1a64(m.eod_token))));
  identity_ = std::string("hf-") + hex;
}

HfTokenizer::~HfTokenizer() = default;

std::unique_ptr<HfTokenizer> HfTokenizer::load(const std::string& path,
                                               const std::string& eod_token) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path, "cannot read the tokenizer file");
  std::stringstream bytes;
  bytes << in.rdbuf();
  std::string eod = eod_token;
  const fs::path config = fs::path(path).parent_path() / "tokenizer_config.json";
  if (eod.empty() && fs::exists(config)) {
    std::ifstream c(config);
    try {
      const json cfg = json::parse(c);
      if (cfg.contains("eos_token")) {
        const json& e = cfg["eos_token"];
        eod = e.is_string() ? e.get<std::string>() : json_string(e, "content");
      }
    } catch (const json::exception& e) {
      throw Error(config.string(), std::string("JSON does not parse: ") + e.what());
    }
  }
  return std::make_unique<HfTokenizer>(bytes.str(), path, eod);
}

uint32_t HfTokenizer::vocab_size() const {
  return impl_->vocab_size;
}
TokenId HfTokenizer::eod_id() const {
  return impl_->eod;
}
const std::string& HfTokenizer::eod_token() const {
  return impl_->eod_token;
}

void HfTokenizer::encode(std::string_view text, std::vector<TokenId>& out) const {
  const std::string clean = replace_invalid_utf8(text);
  cut_added_tokens(
      impl_->raw_added, clean, [&](std::string_view piece) { impl_->encode_text(piece, out); },
      [&](TokenId id) { out.push_back(id); });
}

std::string HfTokenizer::decode(const TokenId* ids, size_t count) const {
  const auto& map = ByteLevelMap::get();
  std::string text;
  for (size_t i = 0; i < count; ++i) {
    const auto added = impl_->added_content.find(ids[i]);
    if (added != impl_->added_content.end()) {
      text += added->second;
      continue;
    }
    if (ids[i] >= impl_->tokens.size()) continue;
    const std::string& token = impl_->tokens[ids[i]];
    for (size_t at = 0; at < token.size();) {
      const char32_t c = next_code_point(token, at);
      if (c < map.byte.size() && map.byte[c] >= 0) text += static_cast<char>(map.byte[c]);
    }
  }
  return text;
}

}  // namespace ladder::data
