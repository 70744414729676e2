"""whisper.cpp built natively for this CPU, as deployers get it: on first use, into the cache.

The sources are whisper.cpp v1.8.5 as shipped in the pywhispercpp 1.5.1 sdist (the same code as the wheel's
libwhisper, which is built for AVX2 only), checked against :data:`SDIST_SHA256` on every download.  cmake
builds, CPU only, Release, ``GGML_NATIVE=ON`` (``-march=native``), shared libraries, two targets: ``whisper``
(libwhisper.so with its libggml*) and ``whisper-quantize`` (the official ``quantize`` tool).  The build lives in
``<cache>/whisper.cpp/<sdist sha256[:12]>-<cpu flags hash[:12]>/`` with ``build.json`` beside it
(paths, ``whisper_print_system_info()``, cmake flags, build seconds); a finished build is reused.

>>> cpu_key("avx2 fma f16c")[:8] == cpu_key("f16c fma avx2")[:8]
True

E.g. ``native_build().quantize`` is the ``whisper-quantize`` binary: ``[quantize, "in-f16.bin", "out.bin", "q4_k"]``.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import tarfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

SDIST_URL = ("https://files.pythonhosted.org/packages/9f/35/610787a277e177e6b7983277a35a2969c0876b46c0d889bc6a0c4b4ac4a7/"
             "pywhispercpp-1.5.1.tar.gz")
SDIST_SHA256 = "5df897e5dd9d9f16804fc937bd85b9f5880a0b29a55f8843585e0e03d76195e5"
SOURCE = "pywhispercpp-1.5.1/whisper.cpp"  # whisper.cpp v1.8.5 inside the sdist
CMAKE_FLAGS = ["-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON", "-DBUILD_SHARED_LIBS=ON", "-DGGML_CCACHE=OFF",
               "-DWHISPER_BUILD_TESTS=OFF", "-DWHISPER_BUILD_EXAMPLES=ON", "-DWHISPER_BUILD_SERVER=OFF",
               "-DWHISPER_SDL2=OFF", "-DWHISPER_CURL=OFF", "-DGGML_CUDA=OFF", "-DGGML_METAL=OFF",
               "-DGGML_VULKAN=OFF", "-DGGML_BLAS=OFF", "-DGGML_BACKEND_DL=OFF"]
TARGETS = ("whisper", "whisper-quantize")


class BuildError(RuntimeError):
    """The native build failed (a compile error, a wrong download); the message names the fix."""


class BuildUnavailable(BuildError):
    """The native build cannot be made on this machine: no cmake / C++ compiler, or the sources cannot be fetched."""


@dataclass
class BuildInfo:
    """A finished native build: ``library`` (libwhisper.so), ``quantize`` (the binary), what it was built with."""

    directory: str
    library: str
    quantize: str
    system_info: str
    cmake_flags: list[str]
    cpu_flags_sha256: str
    sdist_sha256: str
    build_seconds: float
    compiler: str
    struct_sizes: list[int] | None = None  # sizeof(whisper_context_params), sizeof(whisper_full_params) in C


def cpu_flags() -> str:
    """The CPU's feature flags (``/proc/cpuinfo``), sorted; the machine name elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return " ".join(sorted(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return platform.machine() + " " + platform.processor()


def cpu_key(flags: str | None = None) -> str:
    """sha256 of the sorted CPU flags: a ``-march=native`` build is reused only on a CPU with the same flags."""
    return hashlib.sha256(" ".join(sorted((flags if flags is not None else cpu_flags()).split())).encode()).hexdigest()


def build_root() -> Path:
    from ..models import cache_dir

    return cache_dir() / "whisper.cpp"


def _sdist() -> Path:
    """The sdist in the cache, downloaded once and checked against :data:`SDIST_SHA256` (every download)."""
    import urllib.request

    from ..models import sha256_file

    target = build_root() / "pywhispercpp-1.5.1.tar.gz"
    if target.exists() and sha256_file(target) == SDIST_SHA256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".part")
    try:
        with urllib.request.urlopen(SDIST_URL, timeout=120) as response, open(partial, "wb") as out:
            shutil.copyfileobj(response, out)
    except OSError as exc:
        raise BuildUnavailable(f"could not download the whisper.cpp sources ({exc}); put pywhispercpp-1.5.1.tar.gz "
                         f"(sha256 {SDIST_SHA256[:12]}...) at {target}") from None
    digest = sha256_file(partial)
    if digest != SDIST_SHA256:
        partial.unlink()
        raise BuildError(f"{SDIST_URL} hashes to {digest[:12]}..., expected {SDIST_SHA256[:12]}...; not building it")
    os.replace(partial, target)
    return target


def _tools() -> tuple[str, str]:
    cmake, cxx = shutil.which("cmake"), os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if not cmake or not cxx or not (shutil.which("cc") or shutil.which("gcc") or os.environ.get("CC")):
        raise BuildUnavailable("building whisper.cpp needs cmake and a C/C++ compiler: apt-get install cmake g++ "
                         "(or pip install cmake; brew install cmake on macOS)")
    return cmake, cxx


def system_info(library: Path | str) -> str:
    """``whisper_print_system_info()`` of a libwhisper, in a fresh process (so two libwhispers never share one)."""
    code = ("import ctypes, sys; lib = ctypes.CDLL(sys.argv[1]); lib.whisper_print_system_info.restype = "
            "ctypes.c_char_p; print(lib.whisper_print_system_info().decode())")
    import sys

    done = subprocess.run([sys.executable, "-c", code, str(library)], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise BuildError(f"could not load {library}: {done.stderr.strip().splitlines()[-1:]}")
    return done.stdout.strip()


def struct_sizes(directory: Path) -> list[int]:
    """The C sizes of the two structs :mod:`lib.runtimes.whisper_ctypes` mirrors, from the build's own headers."""
    from .whisper_ctypes import SIZES_C

    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    source = directory / "src" / SOURCE
    (directory / "sizes.c").write_text(SIZES_C)
    done = subprocess.run([cc, "-I", str(source / "include"), "-I", str(source / "ggml" / "include"),
                           str(directory / "sizes.c"), "-o", str(directory / "sizes")], capture_output=True, text=True)
    if done.returncode != 0:
        raise BuildError(f"could not compile the struct-size check: {done.stderr.strip()[-300:]}")
    return [int(v) for v in subprocess.run([str(directory / "sizes")], capture_output=True, text=True,
                                           check=True).stdout.split()]


def native_build(jobs: int | None = None, log=None) -> BuildInfo:
    """The native whisper.cpp build for this CPU, built on the first call (minutes), then read from ``build.json``.

    ``jobs``: parallel compile jobs (default: all cores); ``log``: a callable for progress lines (default: none).
    """
    directory = build_root() / f"{SDIST_SHA256[:12]}-{cpu_key()[:12]}"
    record = directory / "build.json"
    if record.exists():
        info = BuildInfo(**json.loads(record.read_text()))
        if Path(info.library).exists() and Path(info.quantize).exists():
            if info.struct_sizes is None:
                info.struct_sizes = struct_sizes(directory)
                record.write_text(json.dumps(asdict(info), indent=1) + "\n")
            return info
    cmake, cxx = _tools()
    tarball = _sdist()
    say = log or (lambda _line: None)
    if directory.exists():
        shutil.rmtree(directory)
    (directory / "src").mkdir(parents=True)
    with tarfile.open(tarball) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(SOURCE + "/")]
        tar.extractall(directory / "src", members=members, filter="data")
    source, build = directory / "src" / SOURCE, directory / "build"
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    start = time.perf_counter()
    steps = [[cmake, "-S", str(source), "-B", str(build), *generator, *CMAKE_FLAGS],
             [cmake, "--build", str(build), "--config", "Release", "-j", str(jobs or os.cpu_count() or 1),
              "--target", *TARGETS]]
    for step in steps:
        say(" ".join(step))
        done = subprocess.run(step, capture_output=True, text=True)
        (directory / "build.log").open("a").write(done.stdout + done.stderr)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise BuildError(f"whisper.cpp build failed ({step[1]}): {' | '.join(tail)}; full log in "
                             f"{directory / 'build.log'}")
    seconds = time.perf_counter() - start
    library = next(iter(sorted(build.rglob("libwhisper.so*")) + sorted(build.rglob("libwhisper*.dylib"))), None)
    quantize = next(iter(sorted(p for p in build.rglob("whisper-quantize") if p.is_file())), None)
    if library is None or quantize is None:
        raise BuildError(f"whisper.cpp built, but libwhisper / whisper-quantize are missing under {build}")
    compiler = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
    info = BuildInfo(directory=str(directory), library=str(library), quantize=str(quantize),
                     system_info=system_info(library), cmake_flags=CMAKE_FLAGS, cpu_flags_sha256=cpu_key(),
                     sdist_sha256=SDIST_SHA256, build_seconds=round(seconds, 1),
                     compiler=compiler[0] if compiler else cxx, struct_sizes=struct_sizes(directory))
    record.write_text(json.dumps(asdict(info), indent=1) + "\n")
    return info


def quantize_file(info: BuildInfo, source: Path | str, target: Path | str, fmt: str) -> dict[str, int]:
    """``whisper-quantize source target fmt`` (fmt: q4_0 ... q6_k, as the tool names them); tensor counts by type."""
    from .ggml import type_counts

    done = subprocess.run([info.quantize, str(source), str(target), fmt], capture_output=True, text=True)
    if done.returncode != 0:
        raise ValueError(f"whisper-quantize {fmt} failed (exit {done.returncode}): "
                         f"{' | '.join((done.stderr or done.stdout).strip().splitlines()[-2:])}")
    return type_counts(target)
