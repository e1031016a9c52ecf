#include "trainer/tools/export.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/files.h"
#include "core/hdf5.h"
#include "data/dataset.h"
#include "data/hf_tokenizer.h"
#include "trainer/tools/inference.h"

namespace ladder {
namespace fs = std::filesystem;
using json = nlohmann::ordered_json;
namespace {

// The safetensors format (huggingface/safetensors): an 8-byte little-endian header length, a JSON
// header naming each tensor's dtype, shape and byte range, padded with spaces to a multiple of 8,
// then the tensors' bytes back to back.
void write_safetensors(const fs::path& path,
                       const std::vector<std::pair<std::string, torch::Tensor>>& tensors) {
  json header = json::object();
  header["__metadata__"] = {{"format", "pt"}};
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    const uint64_t bytes = static_cast<uint64_t>(t.numel()) * sizeof(float);
    header[name] = {
        {"dtype", "F32"}, {"shape", t.sizes().vec()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  std::ofstream out(path, std::ios::binary);
  const uint64_t length = text.size();  // little-endian on every machine ladder builds for
  out.write(reinterpret_cast<const char*>(&length), sizeof length);
  out << text;
  for (const auto& [name, t] : tensors) {
    const torch::Tensor c = t.to(torch::kFloat32).contiguous();
    out.write(reinterpret_cast<const char*>(c.data_ptr<float>()),
              static_cast<std::streamsize>(c.numel() * sizeof(float)));
  }
  if (!out) throw Error(path.string(), "cannot write the file");
}

// ladder's byte tokenizer as a `tokenizers` file: byte-level BPE with no merges, so every byte is
// its own token with ladder's id, and end of document (256) an added special token.
json byte_tokenizer_json(int64_t eod) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b)
    vocab[data::byte_level_character(static_cast<unsigned char>(b))] = b;
  const json byte_level = {{"type", "ByteLevel"},
                           {"add_prefix_space", false},
                           {"trim_offsets", false},
                           {"use_regex", false}};
  return {{"version", "1.0"},
          {"truncation", nullptr},
          {"padding", nullptr},
          {"added_tokens", json::array({{{"id", eod},
                                         {"content", "<|endoftext|>"},
                                         {"single_word", false},
                                         {"lstrip", false},
                                         {"rstrip", false},
                                         {"normalized", false},
                                         {"special", true}}})},
          {"normalizer", nullptr},
          {"pre_tokenizer", byte_level},
          {"post_processor", nullptr},
          {"decoder", byte_level},
          {"model",
           {{"type", "BPE"},
            {"dropout", nullptr},
            {"unk_token", nullptr},
            {"continuing_subword_prefix", nullptr},
            {"end_of_word_suffix", nullptr},
            {"fuse_unk", false},
            {"byte_fallback", false},
            {"ignore_merges", false},
            {"vocab", vocab},
            {"merges", json::array()}}}};
}

}  // namespace

void export_checkpoint(const ExportOptions& o) {
  if (o.format != "hf")
    throw Error("--format", "'" + o.format + "' is not a format ladder writes (hf)");
  if (o.out.empty()) throw Error("--out", "name the folder to write");
  const Recipe r = checkpoint_recipe(o.checkpoint);
  const models::ModelConfig& m = r.model;
  const std::string arch = choice_name(models::kArchNames, m.arch);
  if (m.arch != models::Arch::Dense)
    throw Error(o.checkpoint,
                "a model of arch \"" + arch +
                    "\" cannot be exported: transformers has no architecture that computes what "
                    "ladder's " +
                    arch + " model does (export takes dense models)");
  const auto tokenizer = recipe_tokenizer(r, o.data);
  const std::string data_dir = o.data.empty() ? r.data.path : o.data;
  const data::DatasetMeta dataset = data::DatasetMeta::read(data_dir);

  h5::File f = h5::File::open(o.checkpoint, false);
  const auto param = [&](const std::string& name) { return h5::read_tensor(f, "params/" + name); };
  const int64_t vocab = h5::dataset_shape(f, "params/embedding").at(0);
  const int64_t head_dim = m.d_model / m.n_heads;
  // The multipliers folded into the weights (the header says where each goes).
  const double attention_scale =
      m.scales.attention_scale == 0
          ? 1.0
          : m.scales.attention_scale * std::sqrt(static_cast<double>(head_dim));
  const double residual = m.scales.residual_branch, logits_scale = m.scales.logits;
  const bool tied = m.tie_embeddings && logits_scale == 1.0;

  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  const torch::Tensor embedding = param("embedding");
  tensors.emplace_back("model.embed_tokens.weight", embedding);
  for (int64_t l = 0; l < m.n_layers; ++l) {
    const std::string ours = "layers." + std::to_string(l) + ".";
    const std::string theirs = "model.layers." + std::to_string(l) + ".";
    torch::Tensor wq = param(ours + "attn.wq");
    if (!m.qk_norm) wq = wq * attention_scale;
    tensors.emplace_back(theirs + "input_layernorm.weight", param(ours + "attn_norm"));
    tensors.emplace_back(theirs + "self_attn.q_proj.weight", wq);
    tensors.emplace_back(theirs + "self_attn.k_proj.weight", param(ours + "attn.wk"));
    tensors.emplace_back(theirs + "self_attn.v_proj.weight", param(ours + "attn.wv"));
    tensors.emplace_back(theirs + "self_attn.o_proj.weight", param(ours + "attn.wo") * residual);
    if (m.qk_norm) {
      tensors.emplace_back(theirs + "self_attn.q_norm.weight",
                           param(ours + "attn.q_norm") * attention_scale);
      tensors.emplace_back(theirs + "self_attn.k_norm.weight", param(ours + "attn.k_norm"));
    }
    tensors.emplace_back(theirs + "post_attention_layernorm.weight", param(ours + "mlp_norm"));
    tensors.emplace_back(theirs + "mlp.gate_proj.weight", param(ours + "mlp.w_gate"));
    tensors.emplace_back(theirs + "mlp.up_proj.weight", param(ours + "mlp.w_up"));
    tensors.emplace_back(theirs + "mlp.down_proj.weight", param(ours + "mlp.w_down") * residual);
  }
  tensors.emplace_back("model.norm.weight", param("final_norm"));
  if (!tied)
    tensors.emplace_back("lm_head.weight",
                         (m.tie_embeddings ? embedding : param("readout")) * logits_scale);
  f.close();

  const int64_t eod = tokenizer->eod_id();
  const std::string architecture = m.qk_norm ? "Qwen3ForCausalLM" : "LlamaForCausalLM";
  json config = {{"architectures", {architecture}},
                 {"model_type", m.qk_norm ? "qwen3" : "llama"},
                 {"vocab_size", vocab},
                 {"hidden_size", m.d_model},
                 {"intermediate_size", m.ffn_hidden},
                 {"num_hidden_layers", m.n_layers},
                 {"num_attention_heads", m.n_heads},
                 {"num_key_value_heads", m.n_kv_heads},
                 {"head_dim", head_dim},
                 {"hidden_act", "silu"},
                 {"max_position_embeddings", r.data.seq_len},
                 {"rms_norm_eps", m.norm_eps},
                 {"rope_theta", m.rope_theta},
                 {"rope_parameters", {{"rope_type", "default"}, {"rope_theta", m.rope_theta}}},
                 {"attention_bias", false},
                 {"attention_dropout", 0.0},
                 {"mlp_bias", false},
                 {"tie_word_embeddings", tied},
                 {"bos_token_id", eod},
                 {"eos_token_id", eod},
                 {"use_cache", true},
                 {"dtype", "float32"},
                 {"ladder", {{"checkpoint", o.checkpoint}, {"arch", arch}}}};
  if (m.qk_norm) config["use_sliding_window"] = false;

  const fs::path out(o.out);
  create_output_folder(out.string());
  write_text_file((out / "config.json").string(), config.dump(2) + "\n");
  write_text_file((out / "generation_config.json").string(),
                  json({{"bos_token_id", eod}, {"eos_token_id", eod}}).dump(2) + "\n");
  write_safetensors(out / "model.safetensors", tensors);
  if (tokenizer->kind() == "bytes") {
    write_text_file((out / "tokenizer.json").string(), byte_tokenizer_json(eod).dump(1) + "\n");
    write_text_file((out / "tokenizer_config.json").string(),
                    json({{"tokenizer_class", "PreTrainedTokenizerFast"},
                          {"eos_token", "<|endoftext|>"},
                          {"bos_token", "<|endoftext|>"},
                          {"model_max_length", r.data.seq_len},
                          {"clean_up_tokenization_spaces", false}})
                            .dump(2) +
                        "\n");
  } else if (tokenizer->kind() == "hf") {
    // The very file the dataset was encoded with, so transformers encodes exactly as training did.
    fs::copy_file(fs::path(data_dir) / dataset.tokenizer_model, out / "tokenizer.json",
                  fs::copy_options::overwrite_existing);
    const std::string eod_token = dynamic_cast<const data::HfTokenizer&>(*tokenizer).eod_token();
    write_text_file((out / "tokenizer_config.json").string(),
                    json({{"tokenizer_class", "PreTrainedTokenizerFast"},
                          {"eos_token", eod_token},
                          {"bos_token", eod_token},
                          {"add_bos_token", false},
                          {"add_eos_token", false},
                          {"model_max_length", r.data.seq_len},
                          {"clean_up_tokenization_spaces", false}})
                            .dump(2) +
                        "\n");
  } else {
    fs::copy_file(fs::path(data_dir) / dataset.tokenizer_model, out / "tokenizer.model",
                  fs::copy_options::overwrite_existing);
    write_text_file((out / "tokenizer_config.json").string(),
                    json({{"tokenizer_class", "LlamaTokenizer"},
                          {"eos_token", "</s>"},
                          {"unk_token", "<unk>"},
                          {"add_bos_token", false},
                          {"add_eos_token", false},
                          {"add_prefix_space", false},
                          {"legacy", false},
                          {"model_max_length", r.data.seq_len},
                          {"clean_up_tokenization_spaces", false}})
                            .dump(2) +
                        "\n");
  }
}

}  // namespace ladder
