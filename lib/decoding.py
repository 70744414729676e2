"""The one decoding recipe: what ``generate`` receives is what a result records.

Greedy, English, transcribe, no timestamps, one ``generate`` call per batch (one 30 s window, as OpenAI's
``whisper.decode``), at most 440 new tokens, and a per-utterance token budget proportional to its duration,
so that a model that collapses into a repetition loop stops early instead of decoding to the cap.

>>> RECIPE.budget(6.0)
88
>>> RECIPE.generate_kwargs(max_new_tokens=440)["force_unique_generate_call"]
True
>>> outdated_fields({**RECIPE.as_dict(), "single_generate_call": None})
['single_generate_call']

Versions: 1 = transformers' long-form seek loop (``single_generate_call`` absent or None); 2 = one ``generate``
call per batch; 3 = version 2 plus the token budget.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

MAX_NEW_TOKENS = 440  # Whisper's 448-position decoder window less the prompt
END_OF_TEXT = 50257  # token ids >= this are special (end of text, prompt, timestamps)
PROMPT = (50258, 50259, 50359, 50363)  # <|startoftranscript|><|en|><|transcribe|><|notimestamps|>
RUN_FIELDS = ("max_new_tokens", "batch_size", "threads")  # set by a run's config, not by the recipe


@dataclass(frozen=True)
class DecodingRecipe:
    """Greedy decoding settings shared by every configuration (see the module docstring).

    ``budget_tokens_per_second`` and ``budget_extra_tokens`` set each utterance's token budget:
    ``ceil(rate x duration) + extra``, never above ``max_new_tokens``. fp32 whisper-base emits about 5 text
    tokens per second of audio at most on the LibriSpeech sample, and no working configuration more than
    about 8.5 (the Setup chapter shows the measured values), so 12 tokens/s + 16 leaves every such transcript
    untouched: greedy decoding is deterministic, so a transcript shorter than its budget is the one the
    unbudgeted decoder produces.
    """

    version: int = 3
    strategy: str = "greedy"
    num_beams: int = 1
    do_sample: bool = False
    language: str = "en"
    task: str = "transcribe"
    timestamps: bool = False
    single_generate_call: bool = True
    max_new_tokens: int = MAX_NEW_TOKENS
    budget_tokens_per_second: float = 12.0
    budget_extra_tokens: int = 16

    def budget(self, duration_s: float, max_new_tokens: int | None = None) -> int:
        """New tokens allowed for an utterance of ``duration_s`` seconds (end-of-text included)."""
        cap = max_new_tokens or self.max_new_tokens
        return min(cap, math.ceil(self.budget_tokens_per_second * duration_s) + self.budget_extra_tokens)

    def generate_kwargs(self, max_new_tokens: int | None = None,
                        durations: Sequence[float] | None = None) -> dict[str, Any]:
        """Keyword arguments for ``WhisperForConditionalGeneration.generate``; with ``durations`` (seconds, one
        per batch row) each row stops at its :meth:`budget`."""
        cap = max_new_tokens or self.max_new_tokens
        kwargs: dict[str, Any] = {"language": self.language, "task": self.task,
                                  "return_timestamps": self.timestamps, "num_beams": self.num_beams,
                                  "do_sample": self.do_sample, "force_unique_generate_call": self.single_generate_call,
                                  "max_new_tokens": cap}
        if durations is not None:
            kwargs["stopping_criteria"] = budget_stopping_criteria([self.budget(d, cap) for d in durations])
        return kwargs

    def as_dict(self, **run_fields: Any) -> dict[str, Any]:
        """What a result records: the recipe's fields plus the run's own (``batch_size``, ``threads``, ...)."""
        return {**dataclasses.asdict(self), **run_fields}


RECIPE = DecodingRecipe()


def budget_stopping_criteria(budgets: Sequence[int]):
    """A ``StoppingCriteriaList`` that ends row ``i`` once it has generated ``budgets[i]`` tokens.

    transformers pads a finished row with end-of-text; the other rows decode exactly as without it.
    """
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    limits = torch.tensor(list(budgets))

    class TokenBudget(StoppingCriteria):
        start: int | None = None

        def __call__(self, input_ids, scores, **kwargs):
            if self.start is None:  # first call: the prompt plus one generated token
                self.start = input_ids.shape[1] - 1
            return (input_ids.shape[1] - self.start) >= limits.to(input_ids.device)

    return StoppingCriteriaList([TokenBudget()])


def recipe_version(stored: dict[str, Any]) -> int:
    """Version of a recorded recipe, also for results recorded before versions existed."""
    if "version" in stored:
        return int(stored["version"])
    return 2 if stored.get("single_generate_call") else 1


def outdated_fields(stored: dict[str, Any] | None, rows: Callable[[], Iterable[dict[str, Any]]] | None = None,
                    recipe: DecodingRecipe = RECIPE) -> list[str]:
    """Fields where a recorded recipe differs from ``recipe`` in a way that can change a transcript.

    A result without a recipe (a footprint run) is never outdated. A version-2 result (no token budget) is
    still current when none of its transcripts reaches its budget, because the budget cannot have changed
    those; ``rows`` (a callable returning the stored rows) lets this be checked, and without it such a result
    counts as outdated on ``budget``.
    """
    if not stored:
        return []
    today = recipe.as_dict()
    differ = [k for k in ("strategy", "num_beams", "do_sample", "language", "task", "timestamps",
                          "single_generate_call") if stored.get(k) != today[k]]
    budget_fields = ("budget_tokens_per_second", "budget_extra_tokens")
    if all(k in stored for k in budget_fields):
        differ += [k for k in budget_fields if stored[k] != today[k]]
    elif not differ and (rows is None or exceeds_budget(rows(), recipe)):
        differ.append("budget")
    return differ


def exceeds_budget(rows: Iterable[dict[str, Any]], recipe: DecodingRecipe = RECIPE) -> bool:
    """Whether any stored transcript is longer than its token budget (it would have been cut)."""
    return any(r.get("text_tokens", 0) + 1 > recipe.budget(r["audio_seconds"]) for r in rows)
