"""The README's library example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_library_example_runs(capsys):
    text = README.read_text()
    start = text.index("Library (this block is run by `tests/test_readme.py`)")
    block = re.search(r"```python\n(.*?)```", text[start:], re.S)
    assert block, "the library example's ```python block is missing"
    namespace: dict = {}
    exec(compile(block.group(1), str(README), "exec"), namespace)
    result = namespace["result"]
    assert result.ok and result.fps == 25.0
    assert result.refined.shape == namespace["poses"].shape == (76, 17, 3)
    assert result.loss_curve.shape == (5,)
    assert capsys.readouterr().out.startswith("True (76, 17, 3) 25.0 ")
