"""whisper-ptq: evaluate post-training quantization of Whisper, one configuration at a time.

Importing ``lib`` is cheap: torch, transformers and the quantization
libraries are imported only when a model is loaded or quantized.

>>> from lib import QuantSpec
>>> QuantSpec(library="bnb", scheme="weight_only", weights="nf4").slug
'bnb-wo-nf4'
"""
from .config import ConfigError, NoiseSpec, QuantSpec, RunConfig

__all__ = ["ConfigError", "NoiseSpec", "QuantSpec", "RunConfig", "__version__"]
__version__ = "0.1.0"
