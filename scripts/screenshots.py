"""Regenerate the --html screenshots the docs show (docs/assets/), with Debian's headless chromium:

    .venv/bin/python scripts/screenshots.py

html_example.png  `backprop-check example --html`: the seed's chain rule for w5 and w1, then its run
html_failing.png  a zoo mistake caught at its first mismatch (the page opens there)
"""
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from torch_ref.cli.main import main  # noqa: E402

SHOTS = {
    "html_example.png": (["example"], "iteration=0", (1200, 1500)),
    "html_failing.png": (["run", "worked_example", "--steps", "3", "--quiet", "--impl",
                          "torch_ref.zoo.mistakes:HiddenErrorOneOutput"], "", (1200, 1500)),
}


def shoot(argv, fragment, size, target):
    browser = shutil.which("chromium")
    if browser is None:
        sys.exit("scripts/screenshots.py: needs chromium (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "page.html"
        main(argv + ["--html", str(page)])
        subprocess.run([browser, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
                        f"--window-size={size[0]},{size[1]}", f"--screenshot={target}", f"file://{page}#{fragment}"],
                       check=True, capture_output=True, timeout=120)


if __name__ == "__main__":
    torch.set_num_threads(1)
    for name, (argv, fragment, size) in SHOTS.items():
        shoot(argv, fragment, size, ROOT / "docs" / "assets" / name)
        print(f"docs/assets/{name}")
