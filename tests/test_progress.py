"""Progress output: a few plain lines on a non-terminal, a tqdm bar on a terminal."""

from __future__ import annotations

import io

from sceneloc.progress import PlainProgress, progress


def test_non_terminal_loop_of_1000_steps_prints_few_lines(capfd):
    total = 0
    for i in progress(range(1000), desc="stage", unit="step"):
        total += i
    assert total == sum(range(1000))                      # every item went through
    err = capfd.readouterr().err
    lines = err.splitlines()
    assert 3 <= len(lines) <= 6, lines
    assert "\r" not in err                                # no carriage-return redraws
    assert lines[0].startswith("stage: start (1000 step")
    assert any("50%" in line for line in lines)
    assert "done, 1000 step" in lines[-1]


def test_manual_updates_with_postfix_and_early_stop(capsys):
    with progress(total=200, desc="mapping", unit="s") as bar:
        for _ in range(120):
            bar.update(1)
            bar.set_postfix(loss="0.5000", refresh=False)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(":")[1].split()[0] for line in lines] == ["start", "25%", "50%", "stopped"]
    assert "120/200 s" in lines[-1] and "loss=0.5000" in lines[-1]


def test_resumed_bar_does_not_repeat_passed_milestones(capsys):
    bar = progress(total=100, initial=60, desc="mapping")
    bar.update(bar.n + 40 - bar.n)
    bar.close()
    bar.close()                                           # a second close prints nothing
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3 and "resuming at 60" in lines[0] and "75%" in lines[1]


def test_disabled_prints_nothing(capsys):
    assert list(progress([1, 2, 3], disable=True)) == [1, 2, 3]
    assert capsys.readouterr().err == ""


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_gets_a_tqdm_bar_with_eta():
    from tqdm import tqdm
    stream = _Terminal()
    bar = progress(total=10, desc="stage", file=stream, mininterval=0)
    assert isinstance(bar, tqdm) and not isinstance(bar, PlainProgress)
    for _ in range(5):
        bar.update(1)
    bar.close()
    assert "<" in stream.getvalue()                       # tqdm's "elapsed<remaining" ETA
