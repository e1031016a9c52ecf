"""Loads what `ladder export --format hf` wrote with transformers, as a user would, and compares its
logits with ladder's on the same tokens. Used by test_export.

    check_hf_export.py DIR TOKENS LOGITS BATCH SEQ VOCAB TEXT IDS EOS

TOKENS: int64 [BATCH, SEQ], LOGITS: float32 [BATCH, SEQ, VOCAB] (raw, little-endian); IDS: ladder's
token ids of TEXT, comma-separated; EOS: ladder's end-of-document id. Exit 0 when the largest
difference is at most 1e-4 and the tokenizer gives ladder's ids for TEXT, decodes them back to TEXT
and ends sequences with EOS.
"""
import sys

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

folder, tokens_file, logits_file = sys.argv[1:4]
batch, seq, vocab = (int(v) for v in sys.argv[4:7])
text = sys.argv[7]
expected_ids = [int(i) for i in sys.argv[8].split(",")]
eos = int(sys.argv[9])

model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
model.eval()
tokens = torch.from_numpy(np.fromfile(tokens_file, dtype=np.int64).reshape(batch, seq))
expected = np.fromfile(logits_file, dtype=np.float32).reshape(batch, seq, vocab)
with torch.no_grad():
    logits = model(tokens).logits.numpy()
error = float(np.abs(logits - expected).max())
print(f"{type(model).__name__}: max |logits - ladder's| = {error:.3g} (largest logit {np.abs(expected).max():.3g})")

tokenizer = AutoTokenizer.from_pretrained(folder)
ids = tokenizer(text)["input_ids"]
same_ids = ids == expected_ids
round_trip = tokenizer.decode(ids) == text
print(f"{type(tokenizer).__name__}: ladder's ids {same_ids}, round trip {round_trip}, "
      f"eos {tokenizer.eos_token_id}")
if not same_ids:
    print("transformers:", ids, "\nladder:      ", expected_ids)
sys.exit(0 if error <= 1e-4 and same_ids and round_trip and tokenizer.eos_token_id == eos else 1)
