"""Base models: register a local Hugging Face causal-LM directory (or a hub id where a hub
is reachable), or build the offline tiny base."""

from __future__ import annotations

import json
import time
from pathlib import Path

from service.domain import BaseModel, check_name
from service.errors import InvalidInput, Unavailable


def describe_model_dir(path: Path) -> dict:
    """Parameters, vocab size, context length and chat-template presence of a model directory,
    read from its files without loading the weights."""
    config_file = path / "config.json"
    if not config_file.is_file():
        raise InvalidInput(f"{path}: not a Hugging Face model directory (no config.json)")
    config = json.loads(config_file.read_text())
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        raise InvalidInput(f"{path}: no weights (*.safetensors or *.bin) next to config.json")
    params = 0
    try:
        from safetensors import safe_open

        for f in path.glob("*.safetensors"):
            with safe_open(str(f), "pt") as st:
                for key in st.keys():
                    shape = st.get_slice(key).get_shape()
                    n = 1
                    for d in shape:
                        n *= d
                    params += n
    except Exception:  # noqa: BLE001 - the count is informative only
        params = 0
    tok_config = path / "tokenizer_config.json"
    chat = (path / "chat_template.jinja").exists() or (tok_config.exists() and "chat_template" in json.loads(tok_config.read_text()))
    return {
        "parameters": params,
        "vocab_size": int(config.get("vocab_size", 0)),
        "context_length": int(config.get("max_position_embeddings", 0)),
        "chat_template": bool(chat),
    }


def resolve_base_source(source: str) -> Path:
    """A local directory as is; anything else is tried as a hub id (fails clearly offline)."""
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise InvalidInput(f"{source}: expected a model directory, got a file")
        return path.resolve()
    if source.count("/") == 1 and not source.startswith((".", "/")):
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(source, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"]))
        except Exception as exc:  # noqa: BLE001 - any hub failure means the same thing to the user
            raise Unavailable(
                f"could not download {source!r} from the Hugging Face hub ({type(exc).__name__}); this machine may have no "
                "network access: download the model elsewhere and pass its directory, or build one with `arena base tiny`"
            ) from None
    raise InvalidInput(f"{source}: no such directory (and not a hub id of the form org/name)")


def make_base(name: str, path: Path, source: str) -> BaseModel:
    check_name(name, "base name")
    info = describe_model_dir(path)
    return BaseModel(name=name, path=str(path), source=source, created_at=time.time(), **info)
