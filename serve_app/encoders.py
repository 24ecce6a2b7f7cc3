"""Sentence encoders behind one narrow interface: texts in, normalised float32 vectors out.

Two backends compute the same vectors (a unit test holds them to a cosine of 0.9999):

* `onnx` (the default on CPU): the sentence-transformers model exported once to ONNX
  (`serve_app.models.onnx_path`) and run by ONNX Runtime, then mean pooling and L2
  normalisation in numpy, as the model's own Pooling and Normalize modules do. On this
  2-core machine, with the vLLM engine busy on one core, one short query took 5.7 ms p50
  against 14-15 ms for PyTorch with one thread (and 480 ms with two: PyTorch's threads
  spin against the engine for the shared core). Its threads sleep when idle, so it runs
  two by default.
* `torch`: sentence-transformers itself, for GPUs and for models whose pooling is not a
  plain mean.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Protocol

import numpy as np

logger = logging.getLogger(__name__)


class TextEncoder(Protocol):
    dimension: int

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        """L2-normalised float32 vectors, shape (len(texts), dimension)."""
        ...

    def count_tokens(self, texts: list[str]) -> int: ...


class TorchEncoder:
    def __init__(self, model_dir: str, device: str, num_threads: int | None) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(num_threads or 1)
        self.model = SentenceTransformer(model_dir, device=device)
        dim = self.model.get_embedding_dimension()
        if dim is None:
            raise ValueError(f"{model_dir} does not report its embedding dimension")
        self.dimension = int(dim)

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        vectors = self.model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True)
        return np.asarray(vectors, dtype=np.float32)

    def count_tokens(self, texts: list[str]) -> int:
        return sum(len(ids) for ids in self.model.tokenizer(texts)["input_ids"])


def mean_pooling_config(model_dir: Path) -> int:
    """The model's max sequence length, after checking that it pools by a plain mean (the
    only pooling `OnnxEncoder` reproduces); ValueError naming the model otherwise."""
    pooling = model_dir / "1_Pooling" / "config.json"
    if not pooling.exists() or not json.loads(pooling.read_text()).get("pooling_mode_mean_tokens"):
        raise ValueError(f"{model_dir} does not pool by a mean of its tokens: use embedder.backend: torch")
    config = model_dir / "sentence_bert_config.json"
    return int(json.loads(config.read_text()).get("max_seq_length", 512)) if config.exists() else 512


class OnnxEncoder:
    _INPUTS = ("input_ids", "attention_mask", "token_type_ids")

    def __init__(self, model_dir: str, num_threads: int | None) -> None:
        import onnxruntime as ort
        from transformers import AutoTokenizer

        from serve_app import models

        self.max_length = mean_pooling_config(Path(model_dir))
        onnx_file = models.onnx_path(Path(model_dir))
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads or 2
        options.inter_op_num_threads = 1
        # Threads that spin between forward passes take a core from the engine beside them:
        # with a core kept busy, 2 spinning threads took a query from 5.5 to 7.8 ms p50 (13.7
        # p95); 2 sleeping threads 6.1 ms (6.5 p95) and a batch of 250 turns twice as fast
        # as one thread on an idle machine (5.8 s against 10.9 s).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
        self.dimension = int(self.encode(["dimension probe"], 1).shape[1])

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        # Longest first, as sentence-transformers does: texts of like length share a batch,
        # so little of a batch's work is padding.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        parts = [self._batch([texts[i] for i in order[start:start + batch_size]])
                 for start in range(0, len(order), batch_size)]
        if not parts:
            return np.empty((0, getattr(self, "dimension", 0)), np.float32)
        vectors = np.empty((len(texts), parts[0].shape[1]), np.float32)
        vectors[order] = np.concatenate(parts)
        return vectors

    def _batch(self, texts: list[str]) -> np.ndarray:
        tokens: Any = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                                     return_tensors="np")
        feeds = {name: np.asarray(tokens[name], dtype=np.int64) for name in self._INPUTS}
        hidden = self.session.run(None, feeds)[0]
        mask = feeds["attention_mask"][..., None].astype(np.float32)
        pooled = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
        norms = np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        return np.asarray(pooled / norms, dtype=np.float32)

    def count_tokens(self, texts: list[str]) -> int:
        return sum(len(ids) for ids in self.tokenizer(texts)["input_ids"])


def open_encoder(model: str, backend: str, device: str, num_threads: int | None) -> TextEncoder:
    """The encoder a configuration names; `model` is a config reference (`bundled:...` or a path)."""
    from serve_app import models

    model_dir = models.resolve(model)
    if backend == "onnx":
        return OnnxEncoder(model_dir, num_threads)
    return TorchEncoder(model_dir, device, num_threads)
