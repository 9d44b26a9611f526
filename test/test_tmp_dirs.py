"""conftest's disk helpers: a module fixture's scoped_tmp_dir goes when the fixture is torn down
if its tests passed (kept if one failed, or when the retention policy keeps everything), and
drop_checkpoints deletes an experiment directory's checkpoints except those kept."""
from pathlib import Path

import pytest
from conftest import drop_checkpoints

pytest_plugins = ["pytester"]

# Run in an inner pytest session: a module fixture per corpus, as test_recipe_chain.py has.
INNER = '''
import pytest
from conftest import scoped_tmp_dir

SEEN = []


@pytest.fixture(scope="module", params=["a", "b"])
def work(request):
    d = scoped_tmp_dir(request, "work-" + request.param)
    (d / "epoch-1.pt").write_bytes(b"0" * 1000)
    SEEN.append(d)
    return d


def test_uses(work):
    if len(SEEN) == 2:  # the first corpus's directory went when its fixture was torn down
        assert {d.exists() for d in SEEN} == {KEEP_FIRST, True}
    assert not FAIL
'''


def _run(pytester, tmp_path, fail: bool, policy: str, keep_first: bool):
    pytester.makepyfile(test_inner=INNER.replace("FAIL", str(fail)).replace("KEEP_FIRST", str(keep_first)))
    base = tmp_path / "base"
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", f"--basetemp={base}",
                                          "-o", f"tmp_path_retention_policy={policy}")
    result.assert_outcomes(passed=0 if fail else 2, failed=2 if fail else 0)
    return sorted(p.name for p in base.iterdir() if p.is_dir() and not p.is_symlink())


def test_passing_module_directories_are_removed(pytester, tmp_path):
    assert _run(pytester, tmp_path, fail=False, policy="failed", keep_first=False) == []


def test_failing_module_directories_are_kept(pytester, tmp_path):
    assert _run(pytester, tmp_path, fail=True, policy="failed", keep_first=True) == ["work-a0", "work-b0"]


def test_policy_all_keeps_every_directory(pytester, tmp_path):
    assert _run(pytester, tmp_path, fail=False, policy="all", keep_first=True) == ["work-a0", "work-b0"]


def test_drop_checkpoints_keeps_what_is_named(tmp_path):
    for name in ("epoch-1.pt", "epoch-2.pt", "checkpoint-4.pt", "config.json"):
        (tmp_path / name).write_text("x")
    (tmp_path / "onnx").mkdir()
    (tmp_path / "onnx" / "model.pt").write_text("x")
    drop_checkpoints(tmp_path, keep=["epoch-2.pt"])
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == \
        ["config.json", "epoch-2.pt", "onnx", "onnx/model.pt"]
