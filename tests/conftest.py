"""Shared test setup.

Torch gets one thread: with two busy cores its default pool slows training ~35x.
Redis fixtures live in `tests/redis_fixtures.py`; small-model fixtures (tiny base,
trained adapters, cached per session) in `tests/model_fixtures.py`.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

pytest_plugins = []
for _name in ("tests.redis_fixtures", "tests.model_fixtures"):
    if os.path.exists(os.path.join(os.path.dirname(__file__), _name.split(".")[1] + ".py")):
        pytest_plugins.append(_name)
