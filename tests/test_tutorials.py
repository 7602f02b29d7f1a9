"""The tutorials in docs/tutorials/ run as tests, so that they never go out of date.

Every ```` ```python ```` block of a tutorial runs, in order, in one namespace per tutorial (a
later block sees what the earlier ones defined), in a fresh temporary working directory. A block
whose fence says ```` ```python no-run ```` is shown to the reader but not run (for things that
need a GPU, Graphviz, or minutes); blocks in any other language (```` ```text ````,
```` ```bash ````) are not run either. A failing block fails the test with the tutorial's file,
the block's number and its first line in the Markdown file; the traceback points at lines of the
Markdown file itself.

What a tutorial changes in tinyfw's global settings (default dtype, gradient mode, the random
generator) is put back afterwards, so the tutorials cannot disturb the other tests.
"""
import re
import traceback
from pathlib import Path

import pytest

import tinyfw as fw
from tinyfw import autograd
from tinyfw import random as fw_random

TUTORIALS_DIR = Path(__file__).resolve().parent.parent / "docs" / "tutorials"
TUTORIALS = sorted(TUTORIALS_DIR.glob("*.md"))

FENCE = re.compile(r"^(`{3,}|~{3,})\s*([\w+-]*)\s*(.*)$")
NO_RUN = "no-run"


class Block:
    """One fenced code block: its language, the words after it, its first line of code."""

    def __init__(self, language, options, first_line, code):
        self.language, self.options, self.first_line, self.code = (language, options,
                                                                   first_line, code)

    @property
    def runs(self):
        return self.language == "python" and NO_RUN not in self.options


def _closes(line, fence):
    """Whether ``line`` closes a block opened with ``fence``: only fence characters, as many."""
    s = line.strip()
    return bool(s) and set(s) == {fence[0]} and len(s) >= len(fence)


def code_blocks(text, source="<markdown>"):
    """Every fenced code block of a Markdown text, in order. A fence is closed by a line of the
    same fence characters, at least as many; an unclosed fence is a ValueError."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, language, options = m.group(1), m.group(2).lower(), m.group(3).split()
        start = i + 1
        i += 1
        while i < len(lines) and not _closes(lines[i], fence):
            i += 1
        if i == len(lines):
            raise ValueError(f"{source}: the code fence opened on line {start} is never closed")
        blocks.append(Block(language, options, start + 1, "\n".join(lines[start:i]) + "\n"))
        i += 1
    return blocks


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """A temporary working directory; tinyfw's global settings restored afterwards."""
    monkeypatch.chdir(tmp_path)
    dtype, grad_mode = fw.get_default_dtype(), autograd.is_grad_enabled()
    seed, state = fw_random.initial_seed(), fw_random.get_rng_state()
    yield tmp_path
    fw.set_default_dtype(dtype)
    autograd._grad_enabled = grad_mode
    fw_random.manual_seed(seed)
    fw_random.set_rng_state(state)


def run_tutorial(path):
    """Run the python blocks of the tutorial at ``path`` in one namespace; fail naming the
    block that raised."""
    name = path.relative_to(TUTORIALS_DIR.parent.parent)
    blocks = [b for b in code_blocks(path.read_text(encoding="utf-8"), str(name)) if b.runs]
    namespace = {"__name__": f"tutorial_{path.stem}"}
    for number, block in enumerate(blocks, 1):
        # padded so that line numbers in tracebacks are the Markdown file's
        source = "\n" * (block.first_line - 1) + block.code
        try:
            exec(compile(source, str(path), "exec"), namespace)
        except Exception as e:  # noqa: BLE001  any error of a block fails the tutorial
            pytest.fail(f"{name}: python block {number} of {len(blocks)} (line "
                        f"{block.first_line}) raised {type(e).__name__}: {e}\n\n"
                        f"{traceback.format_exc(limit=-8)}", pytrace=False)
    return namespace


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs(path, isolated):
    run_tutorial(path)


def test_the_tutorials_are_there():
    stems = [p.stem for p in TUTORIALS]
    for prefix in ("01_", "02_", "03_", "04_"):
        assert any(s.startswith(prefix) for s in stems), (prefix, stems)
    for path in TUTORIALS:
        runnable = [b for b in code_blocks(path.read_text(encoding="utf-8"), path.name) if b.runs]
        assert len(runnable) >= 3, f"{path.name} has {len(runnable)} runnable python blocks"


# ------------------------------------------------------------------------------- the runner

def test_code_blocks_order_languages_and_no_run():
    text = "\n".join([
        "# Title",                   # 1
        "```python",                 # 2
        "a = 1",                     # 3
        "```",                       # 4
        "text",                      # 5
        "```python no-run",          # 6
        "raise SystemExit",          # 7
        "```",                       # 8
        "```bash",                   # 9
        "ls",                        # 10
        "```",                       # 11
        "````python",                # 12
        "b = '''",                   # 13
        "```",                       # 14: inside a longer fence, not a close
        "'''",                       # 15
        "````",                      # 16
    ])
    blocks = code_blocks(text)
    assert [(b.language, b.options, b.first_line) for b in blocks] == [
        ("python", [], 3), ("python", ["no-run"], 7), ("bash", [], 10), ("python", [], 13)]
    assert [b.runs for b in blocks] == [True, False, False, True]
    assert blocks[0].code == "a = 1\n"
    assert blocks[3].code == "b = '''\n```\n'''\n"


def test_unclosed_fence_is_an_error():
    with pytest.raises(ValueError, match="x.md: the code fence opened on line 2 is never closed"):
        code_blocks("text\n```python\na = 1\n", "x.md")


def test_a_failing_block_names_the_tutorial_block_and_line(tmp_path):
    fake_dir = tmp_path / "docs" / "tutorials"
    fake_dir.mkdir(parents=True)
    path = fake_dir / "99_broken.md"
    path.write_text("# Broken\n\n```python\nx = 2\n```\n\n```python no-run\nboom\n```\n\n"
                    "```python\ny = x + 1\nassert y == 4, 'y is ' + str(y)\n```\n")
    original = TUTORIALS_DIR
    globals()["TUTORIALS_DIR"] = fake_dir
    try:
        with pytest.raises(pytest.fail.Exception) as info:
            run_tutorial(path)
    finally:
        globals()["TUTORIALS_DIR"] = original
    message = str(info.value)
    assert "docs/tutorials/99_broken.md: python block 2 of 2 (line 12)" in message
    assert "AssertionError: y is 3" in message
    assert "99_broken.md\", line 13" in message       # the Markdown file's own line number
