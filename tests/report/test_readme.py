"""Tests of the generated README blocks (bopkd/report/readme.py): replacing a block on temp files, the
``bopkd report --update-readme`` option, and that README.md's blocks equal the report files they name."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from bopkd.errors import BopkdError
from bopkd.report.readme import blocks, replace_block, update_readme
from tests.report.test_report import write_submission

ROOT = Path(__file__).resolve().parents[2]

README = """# Project

intro

<!-- results:begin reports/a/README_results.md -->
<!-- results:end reports/a/README_results.md -->

between

<!-- results:begin reports/b/README_results.md -->
old b
<!-- results:end reports/b/README_results.md -->

end
"""


def test_replace_block_on_temp_files(tmp_path):
    repo = tmp_path / "repo"
    (repo / "reports" / "a").mkdir(parents=True)
    readme = repo / "README.md"
    readme.write_text(README)
    a = repo / "reports" / "a" / "README_results.md"
    a.write_text("| x |\n|---|\n| 1 |\n")
    assert update_readme(readme, a) == "reports/a/README_results.md"
    text = readme.read_text()
    assert blocks(text) == {
        "reports/a/README_results.md": "| x |\n|---|\n| 1 |\n",
        "reports/b/README_results.md": "old b\n",
    }
    assert text.startswith("# Project\n\nintro\n\n") and text.endswith(
        "between\n\n" + README.split("between\n\n")[1]
    )
    assert update_readme(readme, a) and readme.read_text() == text  # idempotent
    a.write_text("new\n\n")
    update_readme(readme, a)
    assert blocks(readme.read_text())["reports/a/README_results.md"] == "new\n"
    assert replace_block(text, "reports/b/README_results.md", "") == text.replace("old b\n", "")

    c = repo / "reports" / "c.md"
    c.write_text("c")
    with pytest.raises(BopkdError, match=r"no block <!-- results:begin reports/c.md -->"):
        update_readme(readme, c)
    (tmp_path / "outside.md").write_text("x")
    with pytest.raises(BopkdError, match="not under"):
        update_readme(readme, tmp_path / "outside.md")
    twice = (
        README
        + "<!-- results:begin reports/b/README_results.md -->\n<!-- results:end reports/b/README_results.md -->\n"
    )
    with pytest.raises(BopkdError, match="appears 2 times"):
        replace_block(twice, "reports/b/README_results.md", "x")


def test_cli_report_updates_the_readme(tmp_path):
    from bopkd.cli import app

    r = tmp_path / "results"
    r.mkdir()
    for s, ar in enumerate((0.2, 0.3)):
        write_submission(
            r, f"bopkd-none-small-s{s}", role="student", backbone="small", kd="none", seed=s, ar=ar,
            mssd=0.2, mspd=0.6, vsd=0.1, add=0.1, per_obj={1: 0.1},
        )  # fmt: skip
    readme = tmp_path / "README.md"
    readme.write_text(README.replace("reports/a/", "reports/study/"))
    out = tmp_path / "reports" / "study"
    res = CliRunner().invoke(app, ["report", str(r), "--out", str(out), "--update-readme", str(readme)])
    assert res.exit_code == 0, res.output
    got = blocks(readme.read_text())["reports/study/README_results.md"]
    assert got == (out / "README_results.md").read_text() and "25.0 ± 7.1" in got


def test_readme_blocks_equal_their_report_files():
    """Each results block of the repository's README.md holds exactly the report file it names."""
    found = blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    if not found:
        pytest.skip("README.md has no <!-- results:begin ... --> block")
    missing = [name for name in found if not (ROOT / name).is_file()]
    assert not missing, f"README.md blocks name files that are not in the repository: {missing}"
    present = {name: ROOT / name for name in found}
    for name, path in present.items():
        want = path.read_text(encoding="utf-8").rstrip("\n")
        assert found[name].rstrip("\n") == want, (
            f"README.md block {name} differs from {path}: run bopkd report ... --update-readme README.md"
        )
