"""The Hugging Face `tokenizers` library's ids, for test_hf_tokenizer to compare ladder's with.

    hf_tokenizer_reference.py OUT_DIR

Trains small byte-level BPE tokenizers laid out as GPT-2, Llama-3, Qwen2 and GPT-NeoX lay theirs out
(their pre-tokenizer regexes, normalizers, added tokens and options; a few hundred merges learnt on
a slice of the bundled corpus), plus one that exercises every Split behaviour, and copies the
shipped data/tokenizers/brown-bpe-4096.json. Writes

    OUT_DIR/<style>/tokenizer.json
    OUT_DIR/texts/<i>.bin                 the texts, raw bytes (some are not valid UTF-8)
    OUT_DIR/expected.json                 {style: [[ids of text 0], ...], "eod": {style: token}}

The library takes str, so a text that is not valid UTF-8 is given to it as Python decodes it with
errors="replace"; ladder must encode the raw bytes to the same ids.
"""
import gzip
import json
import pathlib
import shutil
import sys

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

ROOT = pathlib.Path(__file__).resolve().parents[2]

LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
          r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
         r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def corpus_slice(begin: int, size: int) -> str:
    with gzip.open(ROOT / "data/corpus/brown.txt.gz", "rb") as f:
        data = f.read()
    return data[begin:begin + size].decode("utf-8", errors="ignore")


def styles():
    """(name, tokenizer, special tokens, eod token, ignore_merges)."""
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    yield ("gpt2", None, pre_tokenizers.ByteLevel(add_prefix_space=False), ["<|endoftext|>"], False)
    yield ("gpt2_prefix_space", None, pre_tokenizers.ByteLevel(add_prefix_space=True),
           ["<|endoftext|>"], False)
    yield ("llama3", None,
           pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3), "isolated"), byte_level]),
           ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"], True)
    yield ("qwen2", normalizers.NFC(),
           pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN2), "isolated"), byte_level]),
           ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], False)
    yield ("neox", normalizers.NFC(), pre_tokenizers.ByteLevel(add_prefix_space=False),
           ["<|endoftext|>", "<|padding|>"], False)
    yield ("behaviours", normalizers.Sequence([normalizers.NFKC()]),
           pre_tokenizers.Sequence([
               pre_tokenizers.Split(",", "merged_with_previous"),
               pre_tokenizers.Split(Regex(r"\s+"), "merged_with_next"),
               pre_tokenizers.Split("-", "contiguous"),
               pre_tokenizers.Split(Regex("[;:]"), "removed"),
               pre_tokenizers.Split(Regex(r"\p{Lu}"), "isolated", invert=True),
               pre_tokenizers.Digits(individual_digits=True),
               pre_tokenizers.Digits(individual_digits=False),
               pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True),
           ]), ["</s>"], False)


def texts():
    t = [
        "Hello world",
        "  two leading spaces, trailing spaces   ",
        "Tabs\tand\nnewlines\n\n\nand\r\nCRLF\r\n",
        "I'm sure they'll say we'd DON'T WON'T it's",
        "digits 1234567890 12 3.14159 1,000,000 and 2024-12-07",
        "punctuation!!! ... ??? --- ;;; ::: (([[{{}}]])) <<>> @#$%^&*_+=|\\~`",
        "Caf\u00e9, na\u0131ve, cafe\u0301 (combining), \u00c5ngstr\u00f6m, stra\u00dfe, \ufb01ne ligature",
        "\u4e2d\u6587\u6587\u672c\uff0c\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3002\u0627\u0644\u0639\u0631\u0628\u064a\u0629 \u05e2\u05d1\u05e8\u05d9\u05ea",
        "emoji \U0001F600\U0001F680 family \U0001F468\u200D\U0001F469\u200D\U0001F467 flag \U0001F1EB\U0001F1F7 thumbs \U0001F44D\U0001F3FD",
        "no-break\u00a0space, ideographic\u3000space, line\u2028separator, nel\u0085x, zero\u200bwidth",
        "a NUL \x00 byte and control \x01\x7f chars",
        "special <|endoftext|> inside, <|im_start|>user\nhi<|im_end|> and <|end_of_text|>x<|eot_id|>",
        "</s> then <|padding|><|endoftext|><|endoftext|>",
        "    indented code:\n        return x  # comment\n",
        "Superscripts \u00b2\u00b3 and fractions \u00bd \u2153, roman \u2163, full-width \uff21\uff22\uff23\uff11\uff12",
        "x" * 300 + " " + "ab" * 200,
        "",
        " ",
        "\n",
        corpus_slice(100_000, 30_000),
        corpus_slice(5_000_000, 30_000),
    ]
    raw = [s.encode("utf-8") for s in t]
    raw += [
        b"invalid \xff byte",
        b"truncated \xe2\x82 euro",
        b"overlong \xc0\xaf slash and \xe0\x80\xaf",
        b"surrogate \xed\xa0\x80 half",
        b"beyond \xf4\x90\x80\x80 max and \xf5\x80",
        b"lone continuation \x80\x80 bytes \xbf",
        b"ends mid-sequence \xf0\x9f\x98",
    ]
    return raw


def main():
    out = pathlib.Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    training = corpus_slice(0, 400_000) + "\n1234567890 " * 50 + " \u00e9\u00e8\u4e2d\u6587 \U0001F600" * 20
    raw = texts()
    (out / "texts").mkdir(exist_ok=True)
    for i, b in enumerate(raw):
        (out / "texts" / f"{i}.bin").write_bytes(b)
    expected = {"eod": {}, "round_trip": {}}
    tokenizers = {}
    for name, normalizer, pre_tokenizer, special, ignore_merges in styles():
        tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
        if normalizer is not None:
            tok.normalizer = normalizer
        tok.pre_tokenizer = pre_tokenizer
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=special, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(training.split("\n\n"), trainer=trainer)
        if name == "neox":  # GPT-NeoX adds runs of spaces as normalized, non-special tokens
            tok.add_tokens([AddedToken(" " * n, normalized=True, special=False) for n in (2, 4, 8)])
        tokenizers[name] = tok
        expected["eod"][name] = special[0] if name != "llama3" else "<|end_of_text|>"
    shipped = ROOT / "data/tokenizers/brown-bpe-4096.json"
    tokenizers["shipped"] = Tokenizer.from_file(str(shipped))
    expected["eod"]["shipped"] = "<|endoftext|>"
    for name, tok in tokenizers.items():
        (out / name).mkdir(exist_ok=True)
        if name == "shipped":
            shutil.copy(shipped, out / name / "tokenizer.json")
        else:
            tok.save(str(out / name / "tokenizer.json"))
        ids = [tok.encode(b.decode("utf-8", errors="replace"), add_special_tokens=False).ids for b in raw]
        expected[name] = ids
        expected["round_trip"][name] = [tok.decode(i, skip_special_tokens=False) for i in ids]
    # The legacy merges format ("a b" strings, tokenizers < 0.20) must read the same.
    legacy = json.loads((out / "gpt2" / "tokenizer.json").read_text())
    legacy["model"]["merges"] = [" ".join(m) for m in legacy["model"]["merges"]]
    (out / "gpt2_legacy_merges").mkdir(exist_ok=True)
    (out / "gpt2_legacy_merges" / "tokenizer.json").write_text(json.dumps(legacy))
    assert Tokenizer.from_str(json.dumps(legacy)).encode("Hello world").ids == tokenizers["gpt2"].encode("Hello world").ids
    expected["gpt2_legacy_merges"] = expected["gpt2"]
    expected["eod"]["gpt2_legacy_merges"] = "<|endoftext|>"
    expected["round_trip"]["gpt2_legacy_merges"] = expected["round_trip"]["gpt2"]
    (out / "expected.json").write_text(json.dumps(expected))
    print(f"{len(raw)} texts, {len(expected['eod'])} tokenizers")


if __name__ == "__main__":
    main()
