"""crjepa/cli/publish.py: `crjepa push` offline fails with one clear sentence."""

from __future__ import annotations

from helpers import run_python


def test_offline_push_fails_with_one_clear_sentence(cli_workdir, tmp_path):
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_TOKEN": ""}
    proc = run_python(["-m", "crjepa.cli", "push", str(cli_workdir / "emb"), "someone/crjepa-emb"], tmp_path, **env)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "HF_HUB_OFFLINE" in lines[0], proc.stderr
