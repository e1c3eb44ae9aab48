"""``--overwrite`` never deletes a file sparsetrain did not write (issue 17, data loss).

Each case puts a sentinel file where a user would have one and checks that it
survives; an old run folder is moved aside to ``NAME.old-<time>``, not deleted.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sparsetrain.cli import main
from sparsetrain.cli.commands import prepare_run_dir
from sparsetrain.errors import SparsetrainError
from sparsetrain.train.config import load_config
from sparsetrain.train.folders import is_sparsetrain_folder, replace_folder


def make_run(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.yaml").write_text("seed: 0\n")
    (path / "summary.json").write_text("{}")
    (path / "metrics.jsonl").write_text("{}\n")
    return path


def cfg(name: str, root: Path | str = "runs") -> dict:
    return load_config(None, ["--run.name", name, "--run.dir", str(root)])


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_notes.txt").write_text("the user's own file")
    make_run(tmp_path / "runs" / "other-run")
    return tmp_path


@pytest.mark.parametrize("name", ["..", ".", "../..", "sub/../.."])
def test_a_run_name_outside_the_runs_root_is_refused(in_tmp, name):
    for overwrite in (True, False):
        with pytest.raises(SparsetrainError, match="refusing the run name"):
            prepare_run_dir(cfg(name), None, overwrite=overwrite)
    assert (in_tmp / "my_notes.txt").read_text() == "the user's own file"
    assert is_sparsetrain_folder(in_tmp / "runs" / "other-run")


def test_an_absolute_folder_with_user_files_is_refused(in_tmp, tmp_path_factory):
    mine = tmp_path_factory.mktemp("mine")
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(SparsetrainError, match="not a run folder sparsetrain wrote"):
        prepare_run_dir(cfg(str(mine)), None, overwrite=True)
    assert (mine / "thesis.tex").read_text() == "years of work"


def test_a_run_folder_with_a_user_file_inside_is_refused(in_tmp):
    run = make_run(in_tmp / "runs" / "mine")
    (run / "analysis.ipynb").write_text("{}")
    with pytest.raises(SparsetrainError, match="not a run folder"):
        prepare_run_dir(cfg("mine"), None, overwrite=True)
    assert (run / "analysis.ipynb").is_file()


def test_an_old_run_is_moved_aside_not_deleted(in_tmp):
    old = make_run(in_tmp / "runs" / "again")
    run_dir, resume = prepare_run_dir(cfg("again"), None, overwrite=True)
    assert run_dir == Path("runs") / "again" and not resume and not run_dir.exists()
    kept = [p for p in (in_tmp / "runs").iterdir() if p.name.startswith("again.old-")]
    assert len(kept) == 1 and (kept[0] / "summary.json").is_file()
    assert not old.exists()
    with pytest.raises(SparsetrainError, match="already exists"):  # without --overwrite nothing moves
        make_run(in_tmp / "runs" / "again")
        prepare_run_dir(cfg("again"), None, overwrite=False)


def test_the_command_line_refuses_run_name_dotdot_with_one_line(in_tmp, capsys):
    rc = main(["train", "--run.name", "..", "--overwrite", "--epochs", "1"])
    err = capsys.readouterr().err
    assert rc != 0 and "refusing the run name" in err and "Traceback" not in err
    assert sorted(p.name for p in in_tmp.iterdir()) == ["my_notes.txt", "runs"]


def test_imp_and_gems_folders_use_the_same_rule(tmp_path):
    from sparsetrain.procedures.lottery import make_imp_config, prepare_out
    imp = tmp_path / "imp"
    imp.mkdir()
    (imp / "imp.yaml").write_text("x: 1\n")
    (imp / "my_plot.svg").write_text("<svg/>")
    with pytest.raises(SparsetrainError, match="not a IMP folder sparsetrain wrote"):
        prepare_out(imp, load_config(None, []), make_imp_config({"rounds": 2}), resume=False, overwrite=True)
    assert (imp / "my_plot.svg").is_file()
    gems = make_run(tmp_path / "gems")
    assert replace_folder(gems, what="Gem-Miner folder").name.startswith("gems.old-")


def test_two_writers_cannot_share_a_run_folder_and_a_stale_lock_is_taken_over(tmp_path):
    import os
    import socket

    from sparsetrain.train.folders import LOCK_NAME, acquire_run_lock, release_run_lock
    run = make_run(tmp_path / "run")
    (run / LOCK_NAME).write_text(f"{os.getppid()} {socket.gethostname()}\n")  # a live process holds it
    with pytest.raises(SparsetrainError, match="in use by another sparsetrain process"):
        acquire_run_lock(run)
    with pytest.raises(SparsetrainError, match="in use"):  # --overwrite does not move it away either
        replace_folder(run)
    (run / LOCK_NAME).write_text(f"999999999 {socket.gethostname()}\n")  # its process is gone: stale
    assert acquire_run_lock(run).read_text().split()[0] == str(os.getpid())
    release_run_lock(run)
    assert not (run / LOCK_NAME).exists()


def test_resume_while_the_run_is_training_is_refused(tmp_path, capsys):
    import os
    import socket

    from sparsetrain.train.folders import LOCK_NAME
    run = make_run(tmp_path / "run")
    (run / LOCK_NAME).write_text(f"{os.getppid()} {socket.gethostname()}\n")
    rc = main(["train", "--resume", str(run)])
    err = capsys.readouterr().err
    assert rc != 0 and "in use by another sparsetrain process" in err and "Traceback" not in err


def test_compare_refuses_an_existing_folder_and_moves_only_an_earlier_comparison(in_tmp, capsys):
    args = ["compare", "--methods", "dense", "--seeds", "1", "--epochs", "1", "--data.num_samples", "300",
            "--model.width", "4", "--threads", "1", "--out"]
    mine = in_tmp / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    for extra in ([], ["--overwrite"]):
        assert main([*args, str(mine), *extra]) == 2
    assert (mine / "thesis.tex").read_text() == "years of work" and len(list(mine.iterdir())) == 1
    assert main([*args, "cmp"]) == 0 and (in_tmp / "cmp" / "compare.yaml").is_file()
    err = capsys.readouterr().err
    assert main([*args, "cmp"]) == 2 and "already exists. Pass --overwrite" in capsys.readouterr().err
    assert main([*args, "cmp", "--overwrite"]) == 0, err
    kept = [p for p in in_tmp.iterdir() if p.name.startswith("cmp.old-")]
    assert len(kept) == 1 and (kept[0] / "compare.md").is_file() and (in_tmp / "cmp" / "compare.md").is_file()
    assert main([*args, "."]) == 2 and (in_tmp / "my_notes.txt").is_file()
