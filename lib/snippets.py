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
          "calibration", "calibration_folds")


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


#: The placeholders a reader replaces (the tests replace them with the embedded whisper-base and the JFK clip).
MODEL, AUDIO = "openai/whisper-small", "audio.flac"

PRELUDE = f'''from transformers import WhisperForConditionalGeneration, WhisperProcessor

from lib.config import QuantSpec
from lib.data import load_audio
from lib.quantize import quantize
from lib.transcribe import features, generate

model = WhisperForConditionalGeneration.from_pretrained("{MODEL}")  # or your fine-tune
processor = WhisperProcessor.from_pretrained("{MODEL}")
audio = load_audio("{AUDIO}")  # float32, resampled to 16 kHz mono'''
APPLY = '''spec = {spec}
model, info = quantize(model, spec{extra})
ids = generate(model, features(processor, [audio]), durations=[len(audio) / 16_000])
print(processor.batch_decode(ids, skip_special_tokens=True))'''

#: Per runtime, the runtime's own tools on a model directory of one's own: (language, code) blocks, run in order.
NATIVE = {
    "torch_cast": [("python", '''import torch

model = WhisperForConditionalGeneration.from_pretrained("{model}", torch_dtype=torch.{weights})  # no library''')],
    "ctranslate2": [
        ("bash", '''# CTranslate2's converter; --copy_files keeps the tokenizer beside the model, so it loads offline
# (add preprocessor_config.json where the model folder has one: large-v3's 128 mel bins are read from it)
ct2-transformers-converter --model {model} --output_dir whisper-small-ct2 --quantization {compute} \\
    --copy_files tokenizer.json --force'''),
        ("python", '''from faster_whisper import WhisperModel  # the CTranslate2 front end deployers use

model = WhisperModel("whisper-small-ct2", device="cpu", compute_type="{compute}", cpu_threads=2)
segments, _ = model.transcribe("{audio}", language="en", beam_size=1, temperature=0.0, without_timestamps=True,
                               condition_on_previous_text=False, vad_filter=False)
print(" ".join(segment.text.strip() for segment in segments))''')],
    "onnxruntime": [("python", '''# ONNX Runtime: the harness's export (encoder.onnx, decoder.onnx with KV cache) is in model.model_dir
# while the object lives: copy it out to ship it
import shutil

shutil.copytree(model.model_dir, "whisper-small-onnx", dirs_exist_ok=True)''')],
    "openvino": [("python", '''# OpenVINO + NNCF: the harness's IR (encoder.xml/.bin, decoder.xml/.bin) is in model.model_dir;
# copy it out, then load with openvino.Core().compile_model("whisper-small-ov/encoder.xml", "CPU")
import shutil

shutil.copytree(model.model_dir, "whisper-small-ov", dirs_exist_ok=True)''')],
    "whisper_cpp": [("python", '''# whisper.cpp: write the f16 ggml file, quantize it with whisper.cpp's own tool ({fmt}), then run it
# with pywhispercpp; with a whisper.cpp build, `whisper-cli -m ggml-small-{fmt}.bin -f audio.wav -l en -bs 1 -nt`
# runs the same file (not run by the tests: no whisper-cli binary here)
import subprocess

from pywhispercpp.model import Model
from transformers import WhisperForConditionalGeneration, WhisperProcessor

from lib.data import load_audio
from lib.runtimes.ggml import write_ggml
from lib.runtimes.whisper_cpp_build import native_build  # cmake-builds whisper.cpp for this CPU on first use

model = WhisperForConditionalGeneration.from_pretrained("{model}")
write_ggml(model, WhisperProcessor.from_pretrained("{model}"), "ggml-small-f16.bin", fmt="f16")
if "{fmt}" != "f16":
    subprocess.run([native_build().quantize, "ggml-small-f16.bin", "ggml-small-{fmt}.bin", "{fmt}"], check=True)
audio = load_audio("{audio}")  # float32, resampled to 16 kHz mono
segments = Model("ggml-small-{fmt}.bin", n_threads=2).transcribe(audio, language="en")
print(" ".join(segment.text for segment in segments))''')],
}


def snippet_blocks(spec: QuantSpec, prelude: bool = True) -> list[tuple[str, str]]:
    """``(language, code)`` blocks that apply ``spec`` to a reader's own Whisper, in the order they run: the
    harness's call (``prelude``: after the imports and the model loading of :data:`PRELUDE`), then, for a
    deployment runtime, the runtime's own tools (:data:`NATIVE`)."""
    extra = ", processor=processor" if spec.library in NATIVE and spec.library != "torch_cast" else ""
    if spec.calibration_count:  # calibration: a list of lib.data.Utterance, never utterances you score
        extra = ", calibration=calibration, processor=processor"
    harness = (PRELUDE + "\n" if prelude else "") + APPLY.format(spec=spec_line(spec), extra=extra)
    blocks = [("python", harness)]
    from .runtimes.ctranslate2 import compute_type
    from .runtimes.whisper_cpp import ggml_format

    fmt = ggml_format(spec) if spec.library == "whisper_cpp" else spec.weights
    fill = {"weights": spec.weights, "fmt": fmt, "model": MODEL, "audio": AUDIO}
    if spec.library == "ctranslate2":
        fill["compute"] = compute_type(spec)
    for language, code in NATIVE.get(spec.library, []):
        if language == "python" and spec.library in ("onnxruntime", "openvino"):
            blocks[0] = ("python", blocks[0][1] + "\n\n" + code.format(**fill))  # uses the harness's model
        else:
            blocks.append((language, code.format(**fill)))
    return blocks


def snippet(spec: QuantSpec, prelude: bool = True) -> str:
    """The Python of :func:`snippet_blocks` as one text (shell blocks as comments)."""
    return "\n\n".join(code if language == "python" else "\n".join("# " + line for line in code.splitlines())
                        for language, code in snippet_blocks(spec, prelude))


def pick_snippets(box: dict) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """``(goal, configuration, blocks)`` for each pick of a ship box (:func:`lib.ship.ship_box`) that names one."""
    from .grids import GRIDS, expand_grid, grid_path
    from .ship import GOAL_NAMES

    specs = {job.slug: job.config.quant for g in GRIDS for job in expand_grid(grid_path(g))}
    out = []
    for goal, title in GOAL_NAMES.items():
        pick = box[goal]
        if pick.get("configuration") and pick.get("slug") in specs:
            out.append((title.lower(), pick["configuration"], snippet_blocks(specs[pick["slug"]], prelude=False)))
    return out


def ship_snippets(df) -> list[tuple[str, list[str], list[tuple[str, str]]]]:
    """``(configuration, goals, blocks)`` for every ship-box pick on a measured CPU class, each configuration
    once, with the goals and classes that pick it."""
    from .ship import measured_classes, ship_box

    seen: dict[str, dict[str, list[str]]] = {}
    code: dict[str, list[tuple[str, str]]] = {}
    for cpu_class in measured_classes(df):
        for goal, configuration, blocks in pick_snippets(ship_box(df, cpu_class)):
            seen.setdefault(configuration, {}).setdefault(goal, []).append(cpu_class)
            code[configuration] = blocks
    return [(name, [f"{goal} on {', '.join(classes)}" for goal, classes in seen[name].items()], blocks)
            for name, blocks in code.items()]


def ship_snippets_markdown(df):
    """Markdown (for a notebook cell) with the code of every ship-box pick (:func:`ship_snippets`)."""
    from IPython.display import Markdown

    picks = ship_snippets(df)
    if not picks:
        return Markdown("No configuration is picked on any measured CPU class.")
    parts = [f"First, for every pick:\n\n```python\n{PRELUDE}\n```"]
    for name, goals, blocks in picks:
        parts.append(f"**{name}** ({'; '.join(goals)}):")
        parts += [f"```{language}\n{code}\n```" for language, code in blocks]
    return Markdown("\n\n".join(parts))
