"""How a reader applies one of the study's configurations in their own code: a few lines per library or runtime.

Each snippet has two parts: the harness's own call (``lib.quantize.quantize`` applies any
:class:`~lib.config.QuantSpec` to a transformers Whisper, with the same library calls the study made), and,
for a deployment runtime, the runtime's native commands for a model directory of one's own. The snippets are
built from the spec, so the Reproduce page shows the configurations the report picked, not typed ones.

>>> print(spec_line(QuantSpec(library="ctranslate2", scheme="dynamic", weights="int8", activations="int8")))
QuantSpec(library='ctranslate2', scheme='dynamic', weights='int8', activations='int8')
"""
from __future__ import annotations

from .config import QuantSpec

DEFAULTS = QuantSpec()
FIELDS = ("library", "scheme", "weights", "activations", "granularity", "group_size", "scope", "proj_out",
          "calibration")


def spec_line(spec: QuantSpec) -> str:
    """The ``QuantSpec(...)`` constructor call that rebuilds ``spec`` (default fields left out)."""
    args = [f"{f}={getattr(spec, f)!r}" for f in FIELDS if getattr(spec, f) != getattr(DEFAULTS, f)]
    if spec.options:
        args.append(f"options={dict(spec.options)!r}")
    if spec.layers:  # a per-layer recipe (experiments/mixed.yml)
        args.append(f"layers={list(spec.layers)!r}")
    if spec.overrides:
        args.append(f"overrides={ {pattern: dict(setting) for pattern, setting in spec.overrides}!r}")
    args += [f"{f}={getattr(spec, f)!r}" for f in ("depth", "recipe") if getattr(spec, f) is not None]
    return f"QuantSpec({', '.join(args)})"


PRELUDE = '''from transformers import WhisperForConditionalGeneration, WhisperProcessor

from lib.config import QuantSpec
from lib.quantize import quantize
from lib.transcribe import features, generate

model = WhisperForConditionalGeneration.from_pretrained("openai/whisper-small")  # or your fine-tune
processor = WhisperProcessor.from_pretrained("openai/whisper-small")'''
APPLY = '''spec = {spec}
model, info = quantize(model, spec{extra})
ids = generate(model, features(processor, [audio]), durations=[len(audio) / 16_000])  # audio: 16 kHz mono
print(processor.batch_decode(ids, skip_special_tokens=True))'''

NATIVE = {
    "torch_cast": '''# no library: cast the whole model
model = model.to(torch.{weights})''',
    "ctranslate2": '''# CTranslate2 / faster-whisper on your own checkpoint
# ct2-transformers-converter --model openai/whisper-small --output_dir whisper-small-ct2 --quantization {compute} \\
#     --copy_files tokenizer.json preprocessor_config.json  # offline, faster-whisper reads the tokenizer from here
from faster_whisper import WhisperModel

model = WhisperModel("whisper-small-ct2", device="cpu", compute_type="{compute}", cpu_threads=2)
segments, _ = model.transcribe(audio, language="en", beam_size=1, temperature=0.0, without_timestamps=True,
                               condition_on_previous_text=False, vad_filter=False)''',
    "onnxruntime": '''# ONNX Runtime: the harness's export (encoder.onnx, decoder.onnx with KV cache) is in info["model_files"];
# runtime.model_dir holds it while the object lives: copy it out to ship it
import shutil
shutil.copytree(model.model_dir, "whisper-small-onnx")''',
    "openvino": '''# OpenVINO + NNCF: the harness's IR (encoder.xml/.bin, decoder.xml/.bin) is in model.model_dir;
# copy it out, then load with openvino.Core().compile_model("whisper-small-ov/encoder.xml", "CPU")
import shutil
shutil.copytree(model.model_dir, "whisper-small-ov")''',
    "whisper_cpp": '''# whisper.cpp: the harness writes ggml-model.bin ({fmt}) from the transformers weights
import shutil
shutil.copy(model.model_dir / "ggml-model.bin", "ggml-small-{fmt}.bin")
# then: whisper-cli -m ggml-small-{fmt}.bin -f audio.wav -l en -bo 1 -bs 1 -nt -t 2''',
}


def snippet(spec: QuantSpec, prelude: bool = True) -> str:
    """Python (and shell comments) that apply ``spec`` to a reader's own Whisper (``prelude``: with the
    imports and the model loading, :data:`PRELUDE`)."""
    extra = ", processor=processor" if spec.library in NATIVE and spec.library != "torch_cast" else ""
    if spec.scheme == "static":  # calibration: a list of lib.data.Utterance, never utterances you score
        extra = ", calibration=calibration, processor=processor"
    code = (PRELUDE + "\n" if prelude else "") + APPLY.format(spec=spec_line(spec), extra=extra)
    native = NATIVE.get(spec.library)
    if native:
        from .runtimes.ctranslate2 import compute_type
        from .runtimes.whisper_cpp import FORMAT

        fill = {"weights": spec.weights, "fmt": FORMAT.get(spec.weights, spec.weights)}
        if spec.library == "ctranslate2":
            fill["compute"] = compute_type(spec)
        code += "\n\n" + native.format(**fill)
    return code


def pick_snippets(box: dict) -> list[tuple[str, str, str]]:
    """``(goal, configuration, code)`` for each pick of a ship box (:func:`lib.ship.ship_box`) that names one."""
    from .grids import GRIDS, expand_grid, grid_path

    specs = {job.slug: job.config.quant for g in GRIDS for job in expand_grid(grid_path(g))}
    out = []
    for goal, title in (("fastest", "fastest within the accuracy budget"),
                        ("smallest_no_loss", "smallest with no measurable loss"),
                        ("max_compression", "maximum compression that still works")):
        pick = box[goal]
        if pick.get("configuration") and pick.get("slug") in specs:
            out.append((title, pick["configuration"], snippet(specs[pick["slug"]], prelude=False)))
    return out


def ship_snippets_markdown(df):
    """Markdown (for a notebook cell) with the code of every ship-box pick, per measured CPU class; the same
    configuration picked on several classes is shown once, with the classes that pick it."""
    from IPython.display import Markdown

    from .ship import measured_classes, ship_box

    seen: dict[str, list[str]] = {}
    code: dict[str, tuple[str, str]] = {}
    for cpu_class in measured_classes(df):
        for goal, configuration, text in pick_snippets(ship_box(df, cpu_class)):
            seen.setdefault(configuration, []).append(f"{goal} on {cpu_class}")
            code[configuration] = (configuration, text)
    if not code:
        return Markdown("No configuration is picked on any measured CPU class.")
    parts = [f"First, for every pick:\n\n```python\n{PRELUDE}\n```"]
    parts += [f"**{name}** ({'; '.join(seen[name])}):\n\n```python\n{text}\n```" for name, text in code.values()]
    return Markdown("\n\n".join(parts))
