"""What installing mqstream puts on a user's import path: one name, ``mqstream``."""
import subprocess
import sys

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
