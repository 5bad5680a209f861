"""The README's main job (the op demo) runs and verifies itself on a small batch."""

from pointins import demo


def test_demo_runs_and_checks(capsys):
    assert demo.main(["--points", "30000", "--clouds", "3", "--repeat", "1", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "MISMATCH" not in out
    assert out.count("identical") == 7 and out.count("matches") == 2
