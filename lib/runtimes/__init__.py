"""Deployment runtimes behind the harness's model interface.

A runtime (CTranslate2, ONNX Runtime, OpenVINO, whisper.cpp) is a ``library``
value like any quantization library.  Its backend module (``lib.runtimes.<name>``)
exposes ``SUPPORTED``/``validate(spec)`` as the others do, and
``convert(model, spec, calibration, processor, calibration_tokens) -> (RuntimeModel, dict)``
which writes the fp32 transformers Whisper into the runtime's own model
directory, loads it, and returns a :class:`RuntimeModel`.  That object answers
what the harness asks of a transformers model:

* ``generate(input_features, max_new_tokens=..., **hf_kwargs)`` -> ``LongTensor``
  of token ids, prompt ``<|startoftranscript|><|en|><|transcribe|><|notimestamps|>``
  included, padded with end-of-text, so ``tokenizer.batch_decode`` works as is;
  greedy, no temperature fallback, no VAD, no previous-text conditioning;
* ``get_encoder()`` -> an object whose forward can be hooked (``register_forward_pre_hook``,
  ``register_forward_hook``) and called (``.last_hidden_state``), so
  :func:`lib.transcribe.encoder_timer` and the encoder cosine work unchanged;
* ``disk_bytes()`` -> bytes of the model directory the runtime loads (its size);
* ``teacher_forced_logits(input_features [1,80,3000], decoder_input_ids [1,T]) -> [1,T,vocab]``
  where the runtime exposes decoder logits (``None`` class attribute ``logits_note`` says why not).

Every library is imported lazily: ``import lib`` never needs a runtime.

>>> PROMPT
[50258, 50259, 50359, 50363]
"""
from __future__ import annotations

import importlib
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

from ..models import ENGLISH, EOT, FIRST_TIMESTAMP, NO_TIMESTAMPS, SOT, TRANSCRIBE

PROMPT = [SOT, ENGLISH, TRANSCRIBE, NO_TIMESTAMPS]
#: keyword arguments of :func:`lib.transcribe.generate` that restate the recipe every runtime follows
RECIPE_KWARGS = {"language": "en", "task": "transcribe", "return_timestamps": False, "num_beams": 1,
                 "do_sample": False, "force_unique_generate_call": True}


class NotOffered(RuntimeError):
    """A kernel or compute type this CPU does not offer (CTranslate2 int16 on AMD, bf16 where no BF16 unit is).

    A row outcome, never a harness error: the run is recorded as failed with ``outcome: "not offered on this
    CPU"`` and the reason, e.g. ``NotOffered("CTranslate2 4.8.5 on this CPU has no int16 compute type")``.
    """

    outcome = "not offered on this CPU"


def require(module: str, pip: str):
    """Import a runtime's package, or fail with the one-line fix.

    >>> require("json", "json").__name__
    'json'
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{module} is not installed ({exc}); pip install {pip} "
                          "(pinned in requirements.txt)") from None


def runtime_dir(prefix: str) -> tempfile.TemporaryDirectory:
    """A fresh temporary model directory under the user cache (real disk, never the repository)."""
    from ..models import cache_dir

    root = cache_dir() / "runtimes"
    root.mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryDirectory(prefix=f"{prefix}-", dir=root)


def directory_bytes(path: Path | str) -> int:
    """Bytes of every file under ``path`` (the model directory a runtime loads)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def directory_files(path: Path | str) -> dict[str, int]:
    path = Path(path)
    if path.is_file():
        return {path.name: path.stat().st_size}
    return {str(p.relative_to(path)): p.stat().st_size for p in sorted(path.rglob("*")) if p.is_file()}


def save_transformers(model, processor, target: Path) -> Path:
    """Save an fp32 transformers Whisper with its processor (what converters read)."""
    model.save_pretrained(target)
    if processor is not None:
        processor.save_pretrained(target)
    return target


class EncoderOutput:
    def __init__(self, last_hidden_state):
        self.last_hidden_state = last_hidden_state


class _Handle:
    def __init__(self, hooks: list, fn):
        self.hooks, self.fn = hooks, fn

    def remove(self) -> None:
        if self.fn in self.hooks:
            self.hooks.remove(self.fn)


class HookedEncoder:
    """A runtime's encoder with torch-style forward hooks, so the harness can time it.

    ``encode(features) -> state`` is the runtime's own call; ``hidden(state)`` turns its
    output into a float32 ``[B, 1500, d_model]`` tensor for ``last_hidden_state``.

    >>> enc = HookedEncoder(lambda x: x * 2, lambda s: s)
    >>> seen = []
    >>> h = enc.register_forward_hook(lambda m, i, o: seen.append(o))
    >>> enc.run(3), seen
    (6, [6])
    """

    def __init__(self, encode: Callable, hidden: Callable | None = None):
        self.encode, self.hidden = encode, hidden
        self._pre: list = []
        self._post: list = []

    def register_forward_pre_hook(self, fn):
        self._pre.append(fn)
        return _Handle(self._pre, fn)

    def register_forward_hook(self, fn):
        self._post.append(fn)
        return _Handle(self._post, fn)

    @property
    def exposes_output(self) -> bool:
        """Whether ``self(features).last_hidden_state`` works (whisper.cpp's encoder output is not reachable)."""
        return self.hidden is not None

    def begin(self, features) -> None:
        for fn in list(self._pre):
            fn(self, (features,))

    def end(self, features, out) -> None:
        for fn in list(self._post):
            fn(self, (features,), out)

    def run(self, features):
        self.begin(features)
        out = self.encode(features)
        self.end(features, out)
        return out

    def __call__(self, features):
        import torch

        if self.hidden is None:
            raise NotImplementedError("this runtime does not expose its encoder output")
        return EncoderOutput(torch.as_tensor(self.hidden(self.run(features))).float())


class RuntimeModel:
    """What a runtime backend returns: the harness's view of a transformers Whisper.

    Subclasses set ``runtime`` (the library value), ``model_dir``, ``encoder`` (a
    :class:`HookedEncoder`) and implement :meth:`decode` (encoder state -> lists of
    generated ids, prompt excluded) and, where they can, :meth:`teacher_forced_logits`.
    """

    runtime = "?"
    logits_note: str | None = None  # why teacher_forced_logits is unavailable, if it is
    feature_input = True  # False: the runtime computes its own log-mel from audio (whisper.cpp)

    def __init__(self, model_dir: Path, keep: Any = None, suppress_tokens: Sequence[int] = (),
                 begin_suppress_tokens: Sequence[int] = ()):
        self.model_dir = Path(model_dir)
        self._keep = keep  # a TemporaryDirectory: the model directory lives as long as this object
        self.suppress_tokens = list(suppress_tokens)
        self.begin_suppress_tokens = list(begin_suppress_tokens)
        self.encoder: HookedEncoder | None = None

    # -- what the harness calls -------------------------------------------------------------
    def eval(self):
        return self

    def parameters(self):
        return iter(())  # no torch parameters: the harness feeds float32 features

    def get_encoder(self) -> HookedEncoder:
        return self.encoder

    def disk_bytes(self) -> int:
        return directory_bytes(self.model_dir)

    def generate(self, input_features, max_new_tokens: int = 440, min_new_tokens: int = 0,
                 logits_processor=None, **kwargs):
        """Greedy decode of a batch; returns prompt + tokens + end-of-text, padded with end-of-text."""
        import torch

        wrong = {k: v for k, v in kwargs.items() if RECIPE_KWARGS.get(k, object()) != v}
        if wrong:
            raise TypeError(f"{self.runtime} runs only the study's recipe; unsupported generate arguments {wrong}")
        forced = bool(logits_processor) or min_new_tokens > 0
        if forced and min_new_tokens != max_new_tokens:
            raise TypeError("a runtime supports only forced-length decoding (min_new_tokens == max_new_tokens)")
        sequences = self.decode_batch(input_features, max_new_tokens, forced)
        rows = [PROMPT + list(s) + ([EOT] if len(s) < max_new_tokens else []) for s in sequences]
        width = max(len(r) for r in rows)
        return torch.tensor([r + [EOT] * (width - len(r)) for r in rows], dtype=torch.long)

    def decode_batch(self, input_features, max_new_tokens: int, forced: bool) -> list[list[int]]:
        """Encode the batch once (hooked), then decode it: generated ids per utterance, prompt excluded."""
        return self.decode(self.encoder.run(input_features), input_features, max_new_tokens, forced)

    def decode(self, state, input_features, max_new_tokens: int, forced: bool) -> list[list[int]]:
        raise NotImplementedError

    def teacher_forced_logits(self, input_features, decoder_input_ids):
        raise NotImplementedError(f"{self.runtime}: {self.logits_note or 'no teacher-forced logits'}")

    def describe(self) -> dict[str, Any]:
        return {"runtime": self.runtime, "model_files": directory_files(self.model_dir),
                "disk_bytes": self.disk_bytes(), "teacher_forced_logits": self.logits_note is None,
                "logits_note": self.logits_note, "input": "harness log-mel features" if self.feature_input
                else "16 kHz audio (the runtime computes its own log-mel)"}


def greedy_loop(step: Callable, batch: int, max_new_tokens: int, forced: bool, suppress: Sequence[int],
                begin_suppress: Sequence[int]) -> list[list[int]]:
    """Greedy decoding shared by the runtimes whose decoder is a graph (ONNX Runtime, OpenVINO).

    ``step(ids [B, T] int64 numpy) -> logits [B, vocab] numpy`` runs the decoder on the new tokens
    (the prompt first, then one token a step) and keeps its own KV cache.  The same logits rules as
    transformers' generate for this recipe: ``suppress_tokens`` always, ``begin_suppress_tokens`` at
    the first generated position; ``forced`` (footprint) also masks end-of-text and timestamps so
    that exactly ``max_new_tokens`` are decoded.
    """
    import numpy as np

    ids = np.tile(np.array(PROMPT, dtype=np.int64), (batch, 1))
    done = np.zeros(batch, dtype=bool)
    out: list[list[int]] = [[] for _ in range(batch)]
    new = ids
    for i in range(max_new_tokens):
        logits = np.array(step(new), dtype=np.float32, copy=True)
        if suppress:
            logits[:, list(suppress)] = -np.inf
        if i == 0 and begin_suppress:
            logits[:, list(begin_suppress)] = -np.inf
        if forced:
            logits[:, FIRST_TIMESTAMP:] = -np.inf
            logits[:, EOT] = -np.inf
        token = logits.argmax(-1)
        token[done] = EOT
        for b in range(batch):
            if not done[b]:
                if token[b] == EOT:
                    done[b] = True
                else:
                    out[b].append(int(token[b]))
        if done.all():
            break
        new = token[:, None].astype(np.int64)
    return out


def thread_count() -> int:
    """The harness's thread count (``torch.set_num_threads`` is set before a model is loaded)."""
    import torch

    return int(torch.get_num_threads())

