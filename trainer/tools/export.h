// `ladder export CHECKPOINT --format hf --out DIR`: a trained dense model as a Hugging Face
// `transformers` folder, loadable with AutoModelForCausalLM.from_pretrained(DIR) and
// AutoTokenizer.from_pretrained(DIR):
//
//   config.json              LlamaForCausalLM, or Qwen3ForCausalLM when the model has QK-norm
//                            (Qwen3's per-head RMSNorm of queries and keys before the rotation)
//   model.safetensors        the weights, fp32, under transformers' names
//   generation_config.json   the end-of-document id as end of sequence
//   tokenizer.json + tokenizer_config.json   the byte tokenizer as a byte-level BPE without merges
//                            (ids 0..255 the bytes, 256 end of document: ladder's own ids), or
//   tokenizer.model + tokenizer_config.json  the SentencePiece model, for LlamaTokenizer
//
// ladder's forward-pass multipliers (muP and CompleteP, models/config.h ScaleFactors) have no
// transformers key, so they are folded into the weights: the attention scale into the queries (or
// their QK-norm gain), the residual branch multiplier into the output projections, the output
// multiplier into the readout (untied from the embedding when it is not 1). The exported model's
// logits equal ladder's (tests/trainer/test_export.cpp compares them within 1e-4).
//
// Mixture-of-experts, hybrid and ParScale models are refused: transformers has no architecture
// that computes what they compute.
#pragma once

#include <string>

namespace ladder {

struct ExportOptions {
  std::string checkpoint;
  std::string format = "hf";
  std::string out;
  std::string data;  // the dataset folder for the tokenizer; "": the recipe's data.path
};

// Writes the folder; throws ladder::Error for what cannot be exported.
void export_checkpoint(const ExportOptions& options);

}  // namespace ladder
