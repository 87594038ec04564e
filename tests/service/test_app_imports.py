"""The API starts without the ML stack: an API that takes votes and serves boards never
pays torch's and transformers' ~300 MB and seconds (generation loads them on first use)."""

import subprocess
import sys


def test_creating_the_app_imports_neither_torch_nor_transformers(tmp_path):
    code = ("import sys\nfrom pathlib import Path\nfrom service.app import create_app\nfrom service.config import load_settings\n"
            "create_app(load_settings(), 'redis://127.0.0.1:1', worker=False)\n"
            "print([m for m in ('torch', 'transformers', 'peft') if m in sys.modules])")
    env = {"ARENA_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"
