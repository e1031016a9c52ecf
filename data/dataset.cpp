#include "data/dataset.h"

#include <toml++/toml.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/hash.h"
#include "data/hf_tokenizer.h"

namespace ladder::data {
namespace fs = std::filesystem;

const ShardList& SplitMeta::domain(const std::string& name) const {
  std::string known;
  for (const auto& [domain, list] : domains) {
    if (domain == name) return list;
    known += (known.empty() ? "" : ", ") + domain;
  }
  throw Error("dataset", domains.empty() ? "has no domains (asked for \"" + name + "\")"
                                         : "has no domain \"" + name + "\" (it has " + known + ")");
}

const SplitMeta& DatasetMeta::split(const std::string& name) const {
  if (name == "train") return train;
  if (name == "val") return val;
  throw Error("dataset", "unknown split \"" + name + "\" (train or val)");
}

namespace {

toml::table shard_list_table(const ShardList& s) {
  toml::array shards;
  for (const auto& f : s.shards)
    shards.push_back(f);
  return toml::table{{"tokens", static_cast<int64_t>(s.tokens)},
                     {"documents", static_cast<int64_t>(s.documents)},
                     {"shards", shards}};
}

toml::table split_table(const SplitMeta& s) {
  toml::table t = shard_list_table(s);
  if (!s.domains.empty()) {
    toml::table domains;
    for (const auto& [name, list] : s.domains)
      domains.insert(name, shard_list_table(list));
    t.insert("domains", domains);
  }
  return t;
}

// Typed reads with errors that name the file, line and key.
struct MetaReader {
  const std::string& file;
  const toml::table& root;

  const toml::node& node(const std::string& key) const {
    const toml::node* n = root.at_path(key).node();
    if (!n) throw Error(file, "missing key " + key + " (not a ladder dataset, or a damaged one)");
    return *n;
  }
  std::string where(const toml::node& n) const {
    return file + ":" + std::to_string(n.source().begin.line);
  }
  std::string str(const std::string& key) const {
    const auto& n = node(key);
    if (!n.is_string()) throw Error(where(n), key + ": expected a string");
    return *n.value<std::string>();
  }
  int64_t integer(const std::string& key, int64_t min = 0) const {
    const auto& n = node(key);
    if (!n.is_integer()) throw Error(where(n), key + ": expected an integer");
    int64_t v = *n.value<int64_t>();
    if (v < min) throw Error(where(n), key + ": must be >= " + std::to_string(min));
    return v;
  }
  double number(const std::string& key) const {
    const auto& n = node(key);
    if (!n.is_number()) throw Error(where(n), key + ": expected a number");
    return *n.value<double>();
  }
  std::vector<std::string> strings(const std::string& key) const {
    const auto& n = node(key);
    const toml::array* a = n.as_array();
    if (!a) throw Error(where(n), key + ": expected an array of strings");
    std::vector<std::string> out;
    for (const auto& e : *a) {
      if (!e.is_string()) throw Error(where(e), key + ": expected an array of strings");
      out.push_back(*e.value<std::string>());
    }
    return out;
  }
  ShardList shard_list(const std::string& key) const {
    ShardList s;
    s.tokens = static_cast<uint64_t>(integer(key + ".tokens"));
    s.documents = static_cast<uint64_t>(integer(key + ".documents"));
    s.shards = strings(key + ".shards");
    return s;
  }
  SplitMeta split(const std::string& name, const std::vector<std::string>& domains) const {
    SplitMeta s;
    static_cast<ShardList&>(s) = shard_list(name);
    for (const auto& d : domains)
      s.domains.emplace_back(d, shard_list(name + ".domains." + d));
    return s;
  }
};

}  // namespace

DatasetMeta DatasetMeta::read(const std::string& dir) {
  const std::string file = (fs::path(dir) / "dataset.toml").string();
  if (!fs::exists(file)) {
    throw Error(dir, fs::exists(dir)
                         ? "not a prepared dataset (no dataset.toml); run `ladder prep`"
                         : "no such dataset folder; run `ladder prep --out " + dir + "`");
  }
  toml::table root;
  try {
    root = toml::parse_file(file);
  } catch (const toml::parse_error& e) {
    throw Error(file + ":" + std::to_string(e.source().begin.line),
                "invalid TOML: " + std::string(e.description()));
  }
  MetaReader r{file, root};
  if (r.str("format") != "ladder-tokens")
    throw Error(file, "format is not \"ladder-tokens\"; not a ladder dataset");
  const int64_t version = r.integer("version");
  if (version < 1 || version > kDatasetFormatVersion)
    throw Error(file, "unsupported dataset version " + std::to_string(version) +
                          " (this build reads versions 1 to " +
                          std::to_string(kDatasetFormatVersion) + ")");
  DatasetMeta m;
  m.tokenizer_kind = r.str("tokenizer.kind");
  m.tokenizer_identity = r.str("tokenizer.identity");
  m.tokenizer_model = root.at_path("tokenizer.model").value_or(std::string());
  m.eod_token = root.at_path("tokenizer.eod_token").value_or(std::string());
  m.vocab_size = static_cast<uint32_t>(r.integer("tokenizer.vocab_size", 1));
  m.eod_id = static_cast<TokenId>(r.integer("tokenizer.eod_id"));
  if (version >= 2 && root.contains("domains")) m.domains = r.strings("domains");
  for (const auto& d : m.domains)
    if (d.empty()) throw Error(file, "domains: a domain without a name");
  m.train = r.split("train", m.domains);
  m.val = r.split("val", m.domains);
  m.inputs = r.strings("prep.inputs");
  m.val_fraction = r.number("prep.val_fraction");
  m.seed = static_cast<uint64_t>(r.integer("prep.seed"));
  m.input_bytes = static_cast<uint64_t>(r.integer("prep.input_bytes"));
  return m;
}

void DatasetMeta::write(const std::string& dir) const {
  toml::array input_list;
  for (const auto& i : inputs)
    input_list.push_back(i);
  toml::table tokenizer{{"kind", tokenizer_kind},
                        {"identity", tokenizer_identity},
                        {"vocab_size", static_cast<int64_t>(vocab_size)},
                        {"eod_id", static_cast<int64_t>(eod_id)}};
  if (!tokenizer_model.empty()) tokenizer.insert("model", tokenizer_model);
  if (!eod_token.empty()) tokenizer.insert("eod_token", eod_token);
  toml::table root{{"format", "ladder-tokens"},
                   {"version", kDatasetFormatVersion},
                   {"tokenizer", tokenizer},
                   {"train", split_table(train)},
                   {"val", split_table(val)},
                   {"prep", toml::table{{"inputs", input_list},
                                        {"val_fraction", val_fraction},
                                        {"seed", static_cast<int64_t>(seed)},
                                        {"input_bytes", static_cast<int64_t>(input_bytes)}}}};
  if (!domains.empty()) {
    toml::array names;
    for (const auto& d : domains)
      names.push_back(d);
    root.insert("domains", names);
  }
  const std::string file = (fs::path(dir) / "dataset.toml").string();
  const std::string tmp = file + ".tmp";
  {
    std::ofstream out(tmp);
    out << "# Written by `ladder prep`. See data/dataset.h for the layout.\n" << root << "\n";
    if (!out) throw Error(tmp, "cannot write dataset metadata");
  }
  if (std::rename(tmp.c_str(), file.c_str()) != 0)
    throw Error(file, "cannot write dataset metadata");
}

std::unique_ptr<Tokenizer> load_dataset_tokenizer(const std::string& dir, const DatasetMeta& meta) {
  std::unique_ptr<Tokenizer> tok;
  const std::string where = (fs::path(dir) / "dataset.toml").string();
  if (meta.tokenizer_kind == "bytes") {
    tok = std::make_unique<BytesTokenizer>();
  } else if (meta.tokenizer_kind == "sentencepiece") {
    if (meta.tokenizer_model.empty()) throw Error(where, "tokenizer.model is missing");
    tok = SentencePieceTokenizer::load((fs::path(dir) / meta.tokenizer_model).string());
  } else if (meta.tokenizer_kind == "hf") {
    if (meta.tokenizer_model.empty()) throw Error(where, "tokenizer.model is missing");
    tok = HfTokenizer::load((fs::path(dir) / meta.tokenizer_model).string(), meta.eod_token);
  } else {
    throw Error(where, "unknown tokenizer.kind \"" + meta.tokenizer_kind + "\"");
  }
  if (tok->identity() != meta.tokenizer_identity)
    throw Error(where, "the tokenizer on disk (" + tok->identity() +
                           ") is not the one the dataset was made with (" +
                           meta.tokenizer_identity + ")");
  return tok;
}

TokenDataset::TokenDataset(const std::string& dir, const std::string& split,
                           const std::vector<std::string>& domains)
    : meta_(DatasetMeta::read(dir)) {
  const SplitMeta& s = meta_.split(split);
  std::string what = "the " + split + " split";
  std::vector<std::string> shards = s.shards;
  uint64_t tokens = s.tokens;
  if (!domains.empty()) {
    what += " of " + std::string(domains.size() == 1 ? "domain " : "domains ");
    shards.clear(), tokens = 0;
    for (size_t i = 0; i < domains.size(); ++i) {
      const ShardList* list = nullptr;
      try {
        list = &s.domain(domains[i]);
      } catch (const Error& e) {
        throw Error(dir, e.detail());
      }
      shards.insert(shards.end(), list->shards.begin(), list->shards.end());
      tokens += list->tokens;
      what += (i ? "+" : "") + domains[i];
    }
  }
  if (shards.empty()) throw Error(dir, what + " has no shards");
  const uint64_t tokenizer_hash = fnv1a64(meta_.tokenizer_identity);
  for (const auto& name : shards) {
    ShardReader shard((fs::path(dir) / name).string());
    const ShardHeader& h = shard.header();
    if (h.tokenizer_hash != tokenizer_hash || h.vocab_size != meta_.vocab_size)
      throw Error(shard.path(), "made with a different tokenizer than dataset.toml names (" +
                                    meta_.tokenizer_identity + ")");
    starts_.push_back(total_);
    total_ += shard.size();
    shards_.push_back(std::move(shard));
  }
  if (total_ != tokens)
    throw Error(dir, "the shards of " + what + " hold " + std::to_string(total_) +
                         " tokens but dataset.toml says " + std::to_string(tokens));
}

void TokenDataset::copy(uint64_t begin, uint64_t count, int64_t* out) const {
  if (begin + count > total_)
    throw std::out_of_range("TokenDataset::copy past the end of the split");
  // The shard holding `begin`: the last start <= begin.
  size_t i = std::upper_bound(starts_.begin(), starts_.end(), begin) - starts_.begin() - 1;
  while (count > 0) {
    const uint64_t local = begin - starts_[i];
    const uint64_t n = std::min(count, shards_[i].size() - local);
    shards_[i].copy(local, n, out);
    out += n;
    begin += n;
    count -= n;
    ++i;
  }
}

}  // namespace ladder::data
