"""What a user reads: warnings as single lines on the command line, a notebook settings cell with
relative paths and at most one warning, notebook cells without stray return values."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from lab2.ops import cli
from lab2.ops import notebook as context
from lab2.ops.notices import Lab2Warning, SyntheticDataWarning
from lab2.ops.sample import make_sample_dataset

PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def sample_project(tmp_path_factory):
    """A project folder holding only the synthetic sample (its default settings, as the
    notebooks and the command line generate it)."""
    home = tmp_path_factory.mktemp("project")
    make_sample_dataset(home / "data" / "sample", progress=False)
    return home


@pytest.fixture
def project(sample_project, monkeypatch):
    """The sample project as LAB2_HOME, on a machine without a GPU."""
    monkeypatch.setenv("LAB2_HOME", str(sample_project))
    for name in ("LAB2_DATA_DIR", "LAB2_SAMPLE_DIR", "LAB2_PROFILE", "LAB2_CACHE_DIR"):
        monkeypatch.setenv(name, "")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    return sample_project


def test_the_settings_cell_prints_relative_paths_and_one_warning(project, capsys):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ctx = context.setup()
    out = capsys.readouterr()
    lines = out.out.strip().splitlines()
    assert lines[0] == "data set: synthetic sample (data/sample/oxford-iiit-pet)"
    assert lines[1:3] == ["profile:  quick", "results:  runs/quick-sample"]
    assert len(lines) == 4 and lines[3].startswith("WARNING: the SYNTHETIC sample")
    assert "profile 'quick'" in lines[3]
    assert not [w for w in caught if issubclass(w.category, Lab2Warning)] and out.err == ""
    assert ctx.profile == "quick" and ctx.data == "synthetic sample"


def test_the_settings_cell_has_no_warning_for_the_report_setup(tmp_path):
    ctx = context.NotebookContext(tmp_path, "Oxford-IIIT Pet", "full", tmp_path / "runs")
    assert ctx.warning() is None and len(ctx.banner().splitlines()) == 3


def test_the_command_line_shows_a_library_warning_as_one_line(project, capsys):
    # no real data: `experiment` falls back to the sample with a SyntheticDataWarning; stop it
    # right after by asking for an impossible image size
    assert cli.main(["experiment", "--profile", "smoke", "--image-size", "40"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("lab2: no real data set in ") and "SYNTHETIC" in err[0]
    assert err[1].startswith("error: TrainConfig.image_size=40")
    assert len(err) == 2


def test_a_library_warning_is_a_warning_not_a_print(project, capsys):
    from lab2.ops.choose import choose_data_root
    with pytest.warns(SyntheticDataWarning, match="SYNTHETIC"):
        choose_data_root(project / "nothing", project / "data" / "sample")
    assert capsys.readouterr().err == ""


def test_saved_notebooks_show_no_stray_values_or_absolute_paths():
    for path in sorted((PROJECT / "notebooks").glob("0*.ipynb")):
        notebook = json.loads(path.read_text(encoding="utf-8"))
        for cell in notebook["cells"]:
            for output in cell.get("outputs", []):
                text = "".join(output.get("text", "")) + "".join(
                    output.get("data", {}).get("text/plain", ""))
                assert "PosixPath(" not in text and "WindowsPath(" not in text, path.name
                assert str(PROJECT) not in text, (path.name, text[:200])


def test_saved_notebooks_carry_no_timestamps():
    """A rerun's diff shows what changed in the outputs, not when each cell ran."""
    for path in sorted((PROJECT / "notebooks").glob("0*.ipynb")):
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            assert "execution" not in cell.get("metadata", {}), path.name


def test_the_runner_records_no_timestamps(tmp_path, monkeypatch):
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    import lab2.ops.runner as runner
    path = tmp_path / "n.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell("x = 1")]), path)
    runner.run_notebooks([path])
    assert "execution" not in nbformat.read(path, as_version=4).cells[0].metadata


def test_a_notebook_shows_an_error_lab2_raises_as_its_one_line(capsys, tmp_path):
    # a student who opens notebook 04 on an outdated folder read the fix at the bottom of a
    # traceback through lab2's internals; the command line has always shown just the line
    from IPython.core.interactiveshell import InteractiveShell
    shell = InteractiveShell.instance()
    try:
        context.one_line_errors(shell)
        shell.run_cell("from lab2.ops.experiment import load_experiment\n"
                       "load_experiment('no such folder')")
        shown = capsys.readouterr().out
        assert "FileNotFoundError: no no such folder/results.json: run python -m lab2 " \
               "experiment to write it\n(%tb shows where it was raised)" in shown
        assert "Traceback" not in shown and "experiment.py" not in shown
        shell.run_cell("int('x')")                        # not lab2's: the usual traceback
        shown = capsys.readouterr().out
        assert "Traceback" in shown and "invalid literal for int()" in shown
        # Kernel > Interrupt while lab2 works (here: while it writes a history)
        shell.run_cell("class Rows:\n    def __iter__(self):\n        raise KeyboardInterrupt\n"
                       "from lab2.ops.runs import write_history\n"
                       f"write_history({str(tmp_path / 'h.csv')!r}, Rows())")
        shown = capsys.readouterr().out
        assert shown.startswith("KeyboardInterrupt: stopped; what lab2 had saved is kept, and "
                                "the notebook's cells go on from there when run again\n") and \
            "Traceback" not in shown
        shell.run_cell("raise KeyboardInterrupt")         # not in lab2's work: as usual
        assert "Traceback" in capsys.readouterr().out
    finally:
        InteractiveShell.clear_instance()


def test_the_prediction_browser_says_which_data_set_its_figures_come_from(sample_root):
    # every other figure carried "data: synthetic sample — NOT Oxford-IIIT Pet"; the browser's
    # overlays and Dice did not
    import matplotlib.pyplot as plt

    from lab2.config import profile_config
    from lab2.data.index import load_split
    from lab2.models import model_for
    from lab2.ops.browser import prediction_browser
    config = profile_config("smoke", base_channels=4)
    name = load_split(sample_root, "test")[0].name
    plt.close("all")
    prediction_browser({"unet_raw": (model_for(config).eval(), config)}, sample_root, [name],
                       "synthetic sample")
    texts = [t.get_text() for t in plt.gcf().texts]
    assert "data: synthetic sample · profile: smoke — NOT Oxford-IIIT Pet" in texts
    plt.close("all")


@pytest.mark.parametrize("flags, message", [
    # a multiple of 16 suits UNet, not ResNet34-UNet: the UNet runs trained first (hours with
    # the report's profile), then the experiment stopped at the first ResNet34-UNet run
    (["--image-size", "80"], "TrainConfig.image_size=80: resnet34_unet needs a multiple of 32"),
    (["--seeds", "0", "-1"], "argument --seeds: must be at least 0, got -1"),
])
def test_an_experiment_checks_every_runs_settings_before_training_any(sample_root, tmp_path,
                                                                        capsys, flags, message):
    out = tmp_path / "exp"
    try:
        code = cli.main(["experiment", "--profile", "smoke", "--root", str(sample_root),
                         "--out", str(out), *flags])
    except SystemExit as e:                                  # argparse's refusal
        code = e.code
    assert code in (1, 2) and message in capsys.readouterr().err
    assert not list(out.glob("*/last.pt")) and not (out / "unet_raw").exists()


def test_version_is_one_line(capsys):
    from lab2 import __version__
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out == f"lab2 {__version__}\n"
