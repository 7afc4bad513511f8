"""The npm packages the tests run, which `./serve.sh test` installs from tests/node/package.json
into .venvs/node before the suite starts (the suite itself runs without network)."""

import shutil
from pathlib import Path

NODE_DIR = Path(__file__).parents[1] / ".venvs" / "node"


def node_packages(*scripts: Path) -> Path:
    """The folder holding `node_modules`, with `scripts` copied next to it (ES modules resolve
    packages from the script's own folder); fails if the packages were not installed."""
    assert shutil.which("node"), "the Node tests need node (Node 20 or later)"
    assert (NODE_DIR / "node_modules").is_dir(), "the tests' npm packages are missing: run ./serve.sh test"
    for script in scripts:
        shutil.copy(script, NODE_DIR / script.name)
    return NODE_DIR
