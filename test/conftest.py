import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The tests use tiny models: a second intra-op thread only adds synchronisation (and thrashes on
# a busy 2-core machine). ICEFALL_TEST_THREADS overrides.
torch.set_num_threads(int(os.environ.get("ICEFALL_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
