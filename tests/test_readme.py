"""The README's quickstart runs as written."""

import os
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_names_the_two_commands():
    text = README.read_text()
    assert "make demo" in text and "make test" in text


@pytest.mark.slow
def test_quickstart_runs(tmp_path, capsys, smollm2):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python quickstart"
    cwd = os.getcwd()
    os.chdir(tmp_path)
    namespace: dict = {}
    try:
        for i, block in enumerate(blocks):  # one session: later blocks use earlier names
            exec(compile(block, f"README block {i}", "exec"), namespace)
    finally:
        os.chdir(cwd)
    out = capsys.readouterr().out
    assert "torch.Size([1, 1, 576])" in out and "2032 torch.Size([512, 576])" in out
    res = namespace["res"]  # the patching example: heads at the last position
    assert res.shape == (30, 9, 1) and res.n_prompts == 8
    assert len(res.normalized().top(3)) == 3
