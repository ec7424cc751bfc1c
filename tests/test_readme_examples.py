"""The README's plug-in examples are the real thing: the complete test file it shows is
tests/test_example_user_test.py, verbatim, and the commands it shows exist and are tested."""
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_shows_the_example_test_file_verbatim():
    example = (ROOT / "tests" / "test_example_user_test.py").read_text(encoding="utf-8")
    assert f"```python\n{example}```" in README


def test_readme_shows_the_commands_the_tests_run():
    assert "backprop-check run torch_ref/specs/worked_example.toml --impl scripts/seed_port.py:build" in README
    assert (ROOT / "scripts" / "seed_port.py").read_text(encoding="utf-8").count(
        "backprop-check run torch_ref/specs/worked_example.toml --impl scripts/seed_port.py:build") == 1
    for flag in ("--impl TARGET", "--fd [--fd-steps K]", "assert_lockstep", "not reported"):
        assert flag in README
