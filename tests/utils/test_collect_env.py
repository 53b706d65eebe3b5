import subprocess
import sys

from d2ext.layers._ops import C_IMPORT_ERROR


def test_collect_env_reports_extension_and_detectron2():
    out = subprocess.run(
        [sys.executable, "-m", "d2ext.utils.collect_env"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "detectron2 " in out and "detectron2._C" in out
    if C_IMPORT_ERROR is None:
        assert "d2ext._C" in out and "built @" in out
        assert "d2ext::box_jitter" in out and "CPU" in out
    else:
        assert "NOT BUILT" in out
