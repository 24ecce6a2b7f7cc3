"""The ONNX encoder computes the vectors sentence-transformers computes (the real MiniLM)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from serve_app import models
from serve_app.encoders import OnnxEncoder, TorchEncoder, mean_pooling_config, open_encoder
from serve_app.settings import EmbedderSettings

TEXTS = [
    "When did Caroline go to the LGBTQ support group?",
    "Melanie: I painted a lake sunrise last year!",
    "ok",
    "a much longer text " * 200,  # past the model's 256 tokens: truncated the same way by both
    "Ünïcödé, emoji 🎉 and numbers 12,345.67",
]


@pytest.fixture(scope="module")
def encoders() -> tuple[OnnxEncoder, TorchEncoder]:
    path = models.resolve("bundled:all-MiniLM-L6-v2")
    return OnnxEncoder(path, 1), TorchEncoder(path, "cpu", 1)


def test_onnx_and_torch_give_the_same_vectors(encoders: tuple[OnnxEncoder, TorchEncoder]) -> None:
    onnx, torch = encoders
    a, b = onnx.encode(TEXTS, 2), torch.encode(TEXTS, 64)  # different batches: padding must not matter
    assert a.shape == b.shape == (len(TEXTS), 384) and a.dtype == np.float32
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert float(np.min(np.sum(a * b, axis=1))) > 0.9999
    assert onnx.count_tokens(TEXTS) == torch.count_tokens(TEXTS)


def test_an_empty_batch_is_an_empty_matrix(encoders: tuple[OnnxEncoder, TorchEncoder]) -> None:
    assert encoders[0].encode([], 8).shape == (0, 384)


def test_onnx_refuses_a_model_that_does_not_pool_by_a_mean(tmp_path: Path) -> None:
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text('{"pooling_mode_cls_token": true}')
    with pytest.raises(ValueError, match="backend: torch"):
        mean_pooling_config(tmp_path)


def test_onnx_is_the_default_and_runs_only_on_the_cpu() -> None:
    settings = EmbedderSettings()
    assert (settings.backend, settings.num_threads) == ("onnx", None)
    encoder = open_encoder(settings.model, settings.backend, settings.device, settings.num_threads)
    assert encoder.dimension == settings.dimension
    with pytest.raises(ValueError, match="needs backend torch"):
        EmbedderSettings(device="cuda")
    assert EmbedderSettings(device="cuda", backend="torch").backend == "torch"
