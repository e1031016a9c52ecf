"""Trains the shipped tokenizer: a GPT-2-style byte-level BPE on the bundled corpus's training split.

    build/ladder prep --input data/corpus/brown.txt.gz --tokenizer bytes --out data/brown
    ~/.cache/ladder/torch-2.15.0/bin/python data/tokenizers/train_brown_bpe.py \
        --dataset data/brown --vocab 4096 --out data/tokenizers/brown-bpe-4096.json

The documents are read back from the bytes dataset's training shards (data/shard.h: a 64-byte header,
then uint16 ids; 256 ends a document), so the tokenizer never sees the validation split. Trained with
Hugging Face `tokenizers` exactly as GPT-2's is laid out: the ByteLevel pre-tokenizer with GPT-2's
regex, no normalizer, `<|endoftext|>` the one special token (the end of a document).
"""
import argparse
import pathlib
import tomllib

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers


def training_documents(dataset: pathlib.Path):
    meta = tomllib.loads((dataset / "dataset.toml").read_text())
    if meta["tokenizer"]["kind"] != "bytes":
        raise SystemExit(f"{dataset}: prepare it with --tokenizer bytes")
    for shard in meta["train"]["shards"]:
        ids = np.fromfile(dataset / shard, dtype=np.uint16, offset=64)
        ends = np.flatnonzero(ids == 256)
        start = 0
        for end in ends:
            yield ids[start:end].astype(np.uint8).tobytes().decode("utf-8")
            start = end + 1


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", type=pathlib.Path, default=pathlib.Path("data/brown"))
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--out", type=pathlib.Path, required=True)
    a = p.parse_args()

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=a.vocab,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    documents = list(training_documents(a.dataset))
    tok.train_from_iterator(documents, trainer=trainer, length=len(documents))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(a.out))
    text = " ".join(documents[:20])
    print(f"{a.out}: {tok.get_vocab_size()} tokens from {len(documents)} documents; "
          f"{len(text.encode()) / len(tok.encode(text).ids):.2f} bytes per token on the first 20")


if __name__ == "__main__":
    main()
