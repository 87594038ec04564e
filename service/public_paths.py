"""No server path in an API answer: artifacts are named by ids, files relative to the data dir.

Applied once, at the HTTP boundary (`create_app`'s after-request hook and its error
responses), so a path kept in a job result, a candidate's lineage or an error message is
never shown as the server's absolute layout: a path under the data dir becomes
`$ARENA_DATA_DIR/…` (what `arena` on the server resolves), any other absolute path under a
path-valued key (a base model's directory) becomes its last component, its name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

#: Keys whose values are file-system paths in what the service stores.
PATH_KEYS = frozenset({"path", "adapter_dir", "out_dir", "report_dir", "base_path", "adapter", "source", "results_path",
                       "samples_path", "dir", "docs_path", "yaml_path", "checkpoint", "resumed_from",
                       "dataset"})  # a task's JSONL file (a dataset ref, NAME@N:SPLIT, is never absolute)
DATA_DIR_NAME = "$ARENA_DATA_DIR"


#: Data dirs of the apps made in this process. Litestar resolves a handler's after-request
#: hook once and keeps it on the (module-level) handler, so the hook cannot close over one
#: app's settings: it redacts every data dir registered here (one in a deployed process).
_ROOTS: set[str] = set()


def register_data_dir(data_dir: Path) -> None:
    _ROOTS.update({str(data_dir), str(data_dir.resolve())})


class PathRedactor:
    def __init__(self, data_dir: Path | None = None) -> None:
        if data_dir is not None:
            register_data_dir(data_dir)
        # Sorted once per answer, not once per string in it (a board has hundreds).
        self.roots = sorted(_ROOTS, key=len, reverse=True)  # the longest spelling first

    def text(self, value: str) -> str:
        for root in self.roots:
            if root in value:
                value = value.replace(root, DATA_DIR_NAME)
        return value

    def __call__(self, obj: Any, key: str | None = None) -> Any:
        if isinstance(obj, str):
            shown = self.text(obj)
            if key in PATH_KEYS and shown == obj and os.path.isabs(obj):
                return Path(obj).name  # outside the data dir: a name, not the server's layout
            return shown
        if isinstance(obj, dict):
            return {k: self(v, "path" if key == "paths" else k) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [self(v, key) for v in obj]
        return obj
