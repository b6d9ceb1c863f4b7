"""What installing mqstream puts on a user's import path: one name, ``mqstream``."""
import os
import subprocess
import sys
from pathlib import Path

USER_CODE = """
import mqstream.models.training, mqstream.streams.worker, mqstream.state.item, mqstream.cli
import models, state, streams
assert (models.OWNER, state.OWNER, streams.OWNER) == ("user",) * 3, "ours shadowed the user's"
assert mqstream.models.training.__name__ == "mqstream.models.training"
"""


def test_a_users_own_models_streams_and_state_packages_live_beside_ours(tmp_path):
    for name in ("models", "state", "streams"):  # every Django project has a `models`
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text('OWNER = "user"\n')
    run = subprocess.run([sys.executable, "-c", USER_CODE], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr


def test_an_install_from_the_source_tree_reads_the_shipped_history(tmp_path):
    """`pip install .`, as docker/Dockerfile installs it (not editable): the model job of
    docker/compose.yaml trains on the shipped data, and `replay` reads it, from the install."""
    root = Path(__file__).resolve().parent.parent
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", str(root), "-w", str(tmp_path / "wheel")],
                   check=True, capture_output=True, timeout=300)
    subprocess.run([*pip, "install", "--no-deps", "--target", str(tmp_path / "site"),
                    *map(str, (tmp_path / "wheel").glob("*.whl"))], check=True, capture_output=True, timeout=300)
    code = ("import mqstream; from mqstream.models.history import DATA_PATH; "
            "print(mqstream.__file__, DATA_PATH.exists())")
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(tmp_path / "site")})
    installed, found = run.stdout.split()
    assert installed.startswith(str(tmp_path / "site")) and found == "True", run.stderr
