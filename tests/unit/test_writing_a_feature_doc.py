"""docs/writing-a-feature.md shows the example feature's files as they are: each code block that
names a file (its first line, `# path`) is that file of docs/examples, to the character, and
every file of the example is shown. The suite runs the example's tests
(tests/integration/test_writing_a_feature.py), so the document's code cannot drift from code
that works."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.processes import REPO_ROOT

DOC = REPO_ROOT / "docs/writing-a-feature.md"
EXAMPLES = REPO_ROOT / "docs/examples"
NAMED_BLOCK = re.compile(r"^```python\n(# (\S+)\n.*?)^```$", flags=re.MULTILINE | re.DOTALL)
# The paths the document shows, which are the product's, and where the example keeps the file.
SHOWN_AS = {"erp/features/order_audits/": "order_audits/", "tests/integration/": ""}


def example_file(shown: str) -> Path:
    for prefix, kept_in in SHOWN_AS.items():
        if shown.startswith(prefix):
            return EXAMPLES / (kept_in + shown.removeprefix(prefix))
    return REPO_ROOT / shown


def shown_blocks() -> dict[Path, str]:
    return {example_file(match[2]): match[1] for match in NAMED_BLOCK.finditer(DOC.read_text())}


def test_every_block_that_names_a_file_is_that_file():
    blocks = shown_blocks()
    assert len(blocks) >= 7
    for path, block in blocks.items():
        assert path.is_file(), f"the document shows {path}, which does not exist"
        assert block == path.read_text(), f"{path.relative_to(REPO_ROOT)} differs from its block in {DOC.name}"


def test_every_file_of_the_example_is_shown():
    files = {path for path in EXAMPLES.rglob("*.py") if path.read_text().strip()}
    assert files - set(shown_blocks()) == set()


def test_each_example_file_names_where_it_lives_in_the_product():
    for path in EXAMPLES.rglob("*.py"):
        text = path.read_text()
        if text.strip():
            assert text.startswith("# "), f"{path} starts with the path the document shows it under"
