"""Training, resume, NaN guard, evaluation, prediction and the experiment, on a generated sample."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from lab2.config import TrainConfig, profile_config
from lab2.metrics import DiceMeter
from lab2.ops import cli, fingerprint
from lab2.ops.checkpoint import load_checkpoint
from lab2.ops.evaluation import evaluate_checkpoint, load_trained_model
from lab2.ops.experiment import REPORTED_DICE, load_results, run_experiment
from lab2.ops.loaders import open_dataset
from lab2.ops.predict import predict_files
from lab2.ops.runs import read_history
from lab2.ops.sample import make_sample_dataset
from lab2.ops.trainer import LossGuard, compile_model, train
from lab2.predict import predict_margin
from lab2.train import NonFiniteLossError

SMOKE = dict(image_size=64, base_channels=4, epochs=3, batch_size=4, max_train_samples=12,
             max_eval_samples=6, num_workers=0, device="cpu")   # exact resume is a CPU property


@pytest.fixture(scope="module")
def learn_root(tmp_path_factory):
    """A sample large enough to learn from in seconds."""
    root = tmp_path_factory.mktemp("learn")
    make_sample_dataset(root, n_trainval=220, n_test=20, size=96, progress=False)
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory, sample_root):
    """A tiny trained run (smoke-sized) shared by the evaluate / predict tests."""
    out = tmp_path_factory.mktemp("runs") / "unet"
    train(profile_config("smoke", **SMOKE), sample_root, out, progress=False)
    return out


def all_foreground_dice(root, size: int) -> float:
    meter = DiceMeter()
    ds = open_dataset(root, "val", size, progress=False)
    for i in range(len(ds)):
        mask = ds[i][1]
        meter.update(torch.ones_like(mask)[None], mask[None])
    return meter.mean


@pytest.mark.slow
@pytest.mark.parametrize("model,samples,epochs,lr", [
    # at this size UNet predicts all background for 8 epochs, then learns (val Dice 0.58 at
    # epoch 9, 0.64 at 12); ResNet34-UNet learns from epoch 2 (0.56 at epoch 4)
    ("unet", 160, 12, 3e-3), ("resnet34_unet", 120, 6, 1e-3)])
def test_a_short_run_beats_the_all_foreground_predictor(learn_root, tmp_path, model, samples,
                                                        epochs, lr):
    config = profile_config("smoke", model=model, image_size=64, base_channels=8, epochs=epochs,
                            batch_size=4, lr=lr, max_train_samples=samples,
                            max_eval_samples=None)
    result = train(config, learn_root, tmp_path / model, progress=False)
    trivial = all_foreground_dice(learn_root, 64)
    best = result["best_dice"]
    assert best > trivial + 0.2, f"best val Dice {best:.3f} vs all-foreground {trivial:.3f}"


def test_run_folder_holds_config_history_checkpoints_and_provenance(trained):
    for name in ("config.json", "run.json", "history.csv", "last.pt", "best.pt"):
        assert (trained / name).is_file(), name
    history = read_history(trained / "history.csv")
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert all(np.isfinite(h["train_loss"]) and 0 <= h["val_dice"] <= 1 for h in history)
    run = json.loads((trained / "run.json").read_text(encoding="utf-8"))
    assert run["data"] == "synthetic sample" and len(run["dataset_fingerprint"]) == 16
    assert run["git_commit"]
    state = load_checkpoint(trained / "last.pt")  # weights_only=True
    assert state["epoch"] == 3 and state["config"]["model"] == "unet"
    assert {"model", "optimizer", "scheduler", "rng", "history"} <= set(state)
    assert "scaler" not in state          # only fp16 runs carry a GradScaler's state



def test_the_code_stamp_of_a_table_keeps_saying_the_code_was_changed():
    # results.md cut the hash to 12 characters and with it the "+dirty" of uncommitted changes
    from lab2.ops.runs import short_commit
    commit = "0c7784b01f51" + "a" * 28
    assert short_commit(commit) == "0c7784b01f51"
    assert short_commit(commit + "+dirty") == "0c7784b01f51+dirty"
    assert short_commit("installed 1.0") == "installed 1.0"


def test_re_executed_notebooks_do_not_make_the_code_stamp_dirty(tmp_path, monkeypatch):
    # report saves the notebooks in place before notebook 03 rewrites Table 1: the table said
    # "+dirty" for code nobody had changed
    import shutil
    import subprocess

    import lab2.ops.runs as runs_module
    if shutil.which("git") is None:
        pytest.skip("needs git")
    for name in ("lab2/train.py", "notebooks/03_training.ipynb"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("1\n", encoding="utf-8")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    for command in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "x"]):
        subprocess.run(git + command, check=True)
    monkeypatch.setattr(runs_module, "source_checkout", lambda: tmp_path)
    (tmp_path / "notebooks/03_training.ipynb").write_text("2\n", encoding="utf-8")
    assert not runs_module.git_commit().endswith("+dirty")
    (tmp_path / "lab2/train.py").write_text("2\n", encoding="utf-8")
    assert runs_module.git_commit().endswith("+dirty")

def _weights(path):
    return load_checkpoint(path)["model"]


@pytest.mark.parametrize("workers", [0, 2])
def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(sample_root, tmp_path, workers):
    config = profile_config("smoke", **{**SMOKE, "num_workers": workers})
    train(config, sample_root, tmp_path / "straight", progress=False)

    def interrupt(epoch, batch):
        if epoch == 1 and batch == 1:  # mid-epoch 2
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train(config, sample_root, tmp_path / "resumed", progress=False, on_batch=interrupt)
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["epoch"] == 1
    train(config, sample_root, tmp_path / "resumed", resume=True, progress=False)

    a, b = _weights(tmp_path / "straight" / "last.pt"), _weights(tmp_path / "resumed" / "last.pt")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    ha = read_history(tmp_path / "straight" / "history.csv")
    hb = read_history(tmp_path / "resumed" / "history.csv")
    assert [(h["train_loss"], h["val_dice"]) for h in ha] == [(h["train_loss"], h["val_dice"])
                                                              for h in hb]


def test_a_resume_says_which_settings_edited_in_config_json_it_does_not_use(
        sample_root, tmp_path, caplog):
    """Students edit ``config.json`` to train on with a new learning rate; lab2 rewrote it in
    silence and went on with the old one. The resume now names each edited setting and the flag
    that applies it; a setting the command itself changes (``--epochs``) is not named."""
    config = profile_config("smoke", **{**SMOKE, "epochs": 1})
    out = tmp_path / "run"
    train(config, sample_root, out, progress=False)
    record = json.loads((out / "config.json").read_text(encoding="utf-8"))
    record.update(lr=0.01, base_channels=8, epochs=7)
    (out / "config.json").write_text(json.dumps(record), encoding="utf-8")
    with caplog.at_level("WARNING", logger="lab2"):
        train(config.replace(epochs=2), sample_root, out, resume=True, progress=False)
    said = [r.getMessage() for r in caplog.records if "config.json says" in r.getMessage()]
    assert len(said) == 1, caplog.text
    assert "says base_channels 8, lr 0.01, but the run goes on with base_channels 4, lr 0.001" \
        in said[0]
    assert "--resume --lr 0.01;" in said[0] and "--config" in said[0] and "epochs" not in said[0]
    assert json.loads((out / "config.json").read_text(encoding="utf-8"))["lr"] == 0.001
    caplog.clear()
    with caplog.at_level("WARNING", logger="lab2"):   # the record is the run's again: no word
        train(config.replace(epochs=3), sample_root, out, resume=True, progress=False)
    assert "config.json says" not in caplog.text


def test_a_run_folder_copied_to_another_machine_resumes_on_its_data_there(
        sample_root, tmp_path, monkeypatch):
    """``--resume`` without ``--root`` took the data root recorded in last.pt, which names the
    first machine's folder: "no data set in /home/alice/...". Where that folder is missing,
    it now takes the default data root, whose fingerprint is checked as always."""
    import shutil
    first = tmp_path / "alice" / "data"
    shutil.copytree(sample_root / "oxford-iiit-pet", first / "oxford-iiit-pet")
    out = tmp_path / "run"
    args = ["--num-workers", "0", "--device", "cpu"]
    assert cli.main(["train", "--model", "unet", "--profile", "smoke", "--epochs", "1",
                     "--root", str(first), "--out", str(out), *args]) == 0
    first.rename(tmp_path / "bob-data")                        # the other machine's folder
    monkeypatch.setenv("LAB2_DATA_DIR", str(tmp_path / "bob-data"))
    assert cli.main(["train", "--resume", "--epochs", "2", "--out", str(out), *args]) == 0
    assert load_checkpoint(out / "last.pt")["epoch"] == 2
    assert cli.main(["evaluate", "--checkpoint", str(out / "best.pt")]) == 0


def test_a_quiet_run_reads_the_data_set_without_a_bar(tmp_path, monkeypatch, capsys):
    # each process of a torchrun run trains quietly but rank 0: the first reading of the real
    # data set (its fingerprint, seconds) showed a bar on every one of them
    make_sample_dataset(tmp_path / "data", n_trainval=10, n_test=5, size=64, progress=False)
    monkeypatch.setattr(fingerprint, "BAR_BYTES", 0)             # a bar for any data set
    monkeypatch.setattr(fingerprint, "RECENT_S", 0.0)            # read once, as a real one
    fingerprint._seen.clear()
    train(profile_config("smoke", **{**SMOKE, "epochs": 1}), tmp_path / "data",
          tmp_path / "run", progress=False)
    assert "reading the data set" not in capsys.readouterr().err
    fingerprint._seen.clear()
    fingerprint.memo_path(tmp_path / "data").unlink()
    fingerprint.dataset_fingerprint(tmp_path / "data")
    assert "reading the data set once" in capsys.readouterr().err    # the bar it would show
    fingerprint._seen.clear()


def test_an_existing_run_is_not_overwritten_without_resume(trained):
    with pytest.raises(ValueError, match="--resume"):
        train(profile_config("smoke", **SMOKE), "unused", trained, progress=False)


@pytest.mark.parametrize("device", [
    "cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs a CUDA device")])])
def test_non_finite_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(
        sample_root, tmp_path, monkeypatch, device):
    # on CUDA the guard reads the loss one step late (LossGuard); the outcome is the same
    import lab2.ops.trainer as train_module
    built = []
    original = train_module.model_for
    monkeypatch.setattr(train_module, "model_for",
                        lambda *a, **k: built.append(original(*a, **k)) or built[-1])

    def poison(epoch, batch):
        if epoch == 1 and batch == 0:  # weights turn NaN during epoch 2
            with torch.no_grad():
                for p in built[-1].parameters():
                    p.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match="epoch 2.*--resume"):
        train(profile_config("smoke", **{**SMOKE, "device": device}), sample_root, tmp_path / "nan",
              progress=False, on_batch=poison)
    state = load_checkpoint(tmp_path / "nan" / "last.pt")
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_the_loss_guard_on_the_cpu_stops_at_the_bad_batch_itself():
    guard = LossGuard(torch.device("cpu"))
    guard.check(torch.tensor(0.7), epoch=0, batch=0)
    with pytest.raises(NonFiniteLossError, match=r"became nan in epoch 3, batch 5"):
        guard.check(torch.tensor(float("nan")), epoch=2, batch=4)
    guard.flush()   # nothing pending on the CPU


# PyTorch's profile-guided-compile cache remembers (and warns once) that an earlier test in the
# session turned the compile caches off
@pytest.mark.filterwarnings("ignore:dynamo_pgo force disabled")
def test_a_compiled_network_keeps_one_static_graph_per_batch_shape():
    """Dynamo's default would compile a graph with a symbolic batch size at the last, shorter
    batch and then run every batch through it; the speed measured for --compile is that of
    static graphs. A counting backend sees which graphs are made and which serve the batches."""
    graphs = []                                # per graph: [kinds of its inputs, calls]

    def counting(graph, inputs):
        graphs.append([[type(t).__name__ for t in inputs], 0])
        entry = graphs[-1]

        def run(*args):
            entry[1] += 1
            return graph.forward(*args)
        return run

    torch._dynamo.reset()
    model = compile_model(torch.nn.Conv2d(3, 4, 3), backend=counting)
    for batch in (8, 3, 8, 8, 3):               # full batches, then the last one, each epoch
        model(torch.randn(batch, 3, 16, 16))
    torch._dynamo.reset()
    assert len(graphs) == 2
    assert not any("SymInt" in kinds for kinds, _ in graphs)
    assert [calls for _, calls in graphs] == [3, 2]   # the full batches' graph serves them


def test_a_compiled_run_compiles_with_static_shapes(sample_root, tmp_path, monkeypatch):
    """What the training loop asks of torch.compile (the test above shows what it does)."""
    asked = []
    monkeypatch.setattr(torch, "compile", lambda model, **options: asked.append(options) or model)
    train(profile_config("smoke", **{**SMOKE, "epochs": 1, "compile": True}), sample_root,
          tmp_path / "run", progress=False)
    assert asked == [{"dynamic": False}]


def test_evaluate_reports_both_dice_figures_at_both_resolutions(trained, sample_root):
    metrics = evaluate_checkpoint(trained / "best.pt", sample_root, "test", progress=False)
    for key in ("dice", "dice_pooled", "dice_original", "dice_pooled_original"):
        assert 0 <= metrics[key] <= 1
    assert metrics["n_images"] == SMOKE["max_eval_samples"]
    stored = json.loads((trained / "metrics.json").read_text(encoding="utf-8"))
    assert stored["test"]["dice"] == metrics["dice"]
    assert stored["test"]["data"] == "synthetic sample"
    lines = (trained / "per_image_test.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "name,dice,dice_original,boundary_iou,background_fpr"
    assert len(lines) == 1 + metrics["n_images"]
    for key in ("dice_per_batch", "boundary_iou", "background_fpr"):
        assert 0 <= metrics[key] <= 1


def test_predict_writes_mask_and_overlay_at_the_photos_own_size(trained, tmp_path):
    photo = tmp_path / "odd_size.png"
    cv2.imwrite(str(photo), np.random.default_rng(0).integers(0, 256, (77, 123, 3), np.uint8))
    from lab2.ops.notices import SyntheticDataWarning
    with pytest.warns(SyntheticDataWarning, match="trained on the SYNTHETIC sample"):
        [(_, mask_path, overlay_path)], _ = predict_files(trained / "best.pt", [photo],
                                                           tmp_path / "pred")
    mask = cv2.imread(str(mask_path), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (77, 123) and set(np.unique(mask)) <= {0, 255}
    assert cv2.imread(str(overlay_path)).shape == (77, 123, 3)


def test_predict_turns_a_phone_photo_upright_as_a_viewer_shows_it(trained, tmp_path):
    # a phone stores a portrait photo sideways, with EXIF orientation 6 ("turn 90 degrees
    # clockwise to view"): the mask and overlay must match the photo people see
    from PIL import Image
    stored = np.random.default_rng(1).integers(0, 256, (60, 90, 3), np.uint8)   # landscape
    photo = tmp_path / "portrait.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6                                                 # Orientation
    Image.fromarray(stored).save(photo, exif=exif)
    [(_, mask_path, overlay_path)], _ = predict_files(trained / "best.pt", [photo],
                                                       tmp_path / "pred")
    assert cv2.imread(str(mask_path), cv2.IMREAD_UNCHANGED).shape == (90, 60)   # upright
    overlay = cv2.imread(str(overlay_path))
    assert overlay.shape == (90, 60, 3)
    from lab2.data.reading import read_rgb
    assert read_rgb(photo).shape == (60, 90, 3)          # the data set's reading: as stored



def test_a_prediction_at_the_photos_size_is_the_evaluations_at_original_size(trained,
                                                                           sample_root):
    # predict resizes one channel (the logit margin) instead of both logits and a softmax:
    # bilinear resizing is linear, so the mask is evaluation's argmax of the resized logits
    import torch.nn.functional as F

    from lab2.augment import normalize_images
    from lab2.data.resize import resize_image
    from lab2.predict import predict_mask
    model, config, _ = load_trained_model(trained / "best.pt")
    photo = np.random.default_rng(2).integers(0, 256, (75, 131, 3), np.uint8)
    x = resize_image(photo, (config.image_size, config.image_size))
    x = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]
    with torch.no_grad():
        logits = F.interpolate(model(normalize_images(x)), size=(75, 131), mode="bilinear",
                               align_corners=False)
    margin = (logits[0, 1] - logits[0, 0]).abs().numpy()
    agree = predict_mask(model, config, photo) == logits.argmax(1)[0].numpy()
    assert agree[margin > 1e-5].all()          # exact ties may round either way


def test_the_overlay_tints_the_pet_outlines_it_and_leaves_the_rest():
    import cv2 as cv

    from lab2.predict import PET_COLOUR, overlay
    image = np.random.default_rng(3).integers(0, 256, (60, 80, 3), np.uint8)
    mask = np.zeros((60, 80), np.uint8)
    mask[10:40, 20:60] = 1
    out = overlay(image, mask)
    assert out.dtype == np.uint8 and out.shape == image.shape
    inside = cv.erode(mask, np.ones((5, 5), np.uint8)).astype(bool)
    expected = 0.55 * image[inside] + 0.45 * np.array(PET_COLOUR)
    assert np.abs(out[inside] - expected).max() <= 1
    far = ~cv.dilate(mask, np.ones((5, 5), np.uint8)).astype(bool)
    assert np.array_equal(out[far], image[far])
    edge = mask.astype(bool) & ~inside
    assert (out[edge] == (255, 255, 0)).all(axis=1).any()             # the outline


def test_predict_says_how_to_read_an_iphone_heic_photo(trained, tmp_path):
    photo = tmp_path / "IMG_0001.HEIC"
    photo.write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(64))      # an HEIF header
    with pytest.raises(ValueError, match="HEIC: export the photo as JPEG"):
        predict_files(trained / "best.pt", [photo], tmp_path / "pred")


def test_prediction_sees_what_evaluation_sees(trained, sample_root):
    from lab2.ops.loaders import build_datasets
    from lab2.ops.machine import plan_for
    model, config, _ = load_trained_model(trained / "best.pt")
    dataset = build_datasets(config, sample_root, splits=("test",), progress=False)["test"]
    image, mask, _ = dataset[0]
    images, _ = plan_for(config)[0].inputs(image[None], mask[None])
    with torch.no_grad():
        expected = model(images).softmax(1)[0, 1].numpy()
    resized = dataset.read_resized(0)[0]                       # already at the training size
    probability = torch.sigmoid(torch.from_numpy(predict_margin(model, config, resized)))
    assert np.allclose(probability.numpy(), expected, atol=1e-5)


def test_cli_train_evaluate_predict(sample_root, tmp_path, capsys, monkeypatch):
    out = tmp_path / "cli_run"
    args = ["--profile", "smoke", "--epochs", "1", "--base-channels", "4", "--num-workers", "0"]
    assert cli.main(["train", "--model", "resnet34_unet", "--root", str(sample_root),
                     "--out", str(out), *args]) == 0
    # without --root: the data the run was trained on (it was the real data's folder, absent
    # here: "no data set in data/oxford-iiit-pet ... python -m lab2 sample --root data")
    monkeypatch.setenv("LAB2_DATA_DIR", str(tmp_path / "no-data"))
    assert cli.main(["evaluate", "--checkpoint", str(out / "best.pt")]) == 0
    printed, bars = capsys.readouterr()
    assert "average Dice" in printed and "original resolution" in printed
    # every number from the sample says so: train's last line, its bar's validation Dice too
    assert "resnet34_unet_raw: best validation Dice " in printed
    assert "(synthetic sample); run in" in printed and "split of the synthetic sample" in printed
    assert "resnet34_unet_raw (synthetic sample): 100%" in bars and "val_dice=" in bars
    name = open_dataset(sample_root, "test", None, progress=False).names[0]
    image = sample_root / "oxford-iiit-pet" / "images" / f"{name}.jpg"
    assert cli.main(["predict", "--checkpoint", str(out / "best.pt"), str(image),
                     "--out", str(tmp_path / "p")]) == 0
    assert len(list((tmp_path / "p").glob("*.png"))) == 2


def test_cli_train_takes_every_setting_from_another_runs_config(sample_root, tmp_path, capsys):
    first, second = tmp_path / "first", tmp_path / "second"
    assert cli.main(["train", "--model", "unet", "--preprocess", "--root", str(sample_root),
                     "--out", str(first), "--profile", "smoke", "--epochs", "1",
                     "--base-channels", "4", "--lr", "0.003"]) == 0
    assert cli.main(["train", "--config", str(first / "config.json"), "--root",
                     str(sample_root), "--out", str(second), "--seed", "5"]) == 0
    a, b = (TrainConfig.load(run / "config.json") for run in (first, second))
    assert b == a.replace(seed=5)           # the model, lr, width... of the first; the new seed
    capsys.readouterr()
    assert cli.main(["train", "--config", str(first / "config.json"), "--profile", "quick",
                     "--out", str(tmp_path / "x")]) == 1
    assert "pass one" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    assert cli.main(["train", "--config", str(tmp_path / "bad.json"), "--out",
                     str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.json: not a readable lab2 config.json" in err


def test_cli_resume_without_a_run_is_one_clear_line(tmp_path, capsys):
    code = cli.main(["train", "--model", "unet", "--root", str(tmp_path), "--out",
                     str(tmp_path / "none"), "--resume", "--profile", "smoke"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "drop --resume" in err


def test_experiment_trains_four_models_writes_table_1_and_skips_finished_runs(
        sample_root, tmp_path, monkeypatch):
    tiny = dict(epochs=1, base_channels=4, max_train_samples=8, max_eval_samples=4)
    rows, out = run_experiment("smoke", sample_root, tmp_path / "exp", progress=False, **tiny)
    assert [(r["model"], r["preprocess"]) for r in rows] == list(REPORTED_DICE)
    table = (out / "results.md").read_text(encoding="utf-8")
    assert "SYNTHETIC SAMPLE" in table and "0.9359" in table
    model_rows = [line for line in table.splitlines() if line.startswith(("| unet |",
                                                                           "| resnet34_unet |"))]
    assert len(model_rows) == 4 and "One training run per model" in table
    assert table.count("interval") >= 12 and "Dice: preprocessing vs none, UNet" in table
    results, histories = load_results(out)
    assert len(results) == 4 and len(histories) == 4
    assert all(0 <= r["dice"] <= 1 for r in results)

    import lab2.ops.experiment as experiment_module
    monkeypatch.setattr(experiment_module, "train",
                        lambda *a, **k: pytest.fail("a finished run was trained again"))
    again, _ = run_experiment("smoke", sample_root, tmp_path / "exp", progress=False, **tiny)
    assert [r["dice"] for r in again] == [r["dice"] for r in rows]


@pytest.mark.parametrize("options", [["--model", "levit_unet"],
                                     ["--model", "unet", "--input", "gray"],
                                     ["--model", "unet", "--input", "edges"]])
def test_the_future_work_options_train_resume_exactly_and_evaluate(sample_root, tmp_path,
                                                                   options):
    base = ["train", "--root", str(sample_root), "--profile", "smoke", "--base-channels", "4",
            "--max-train-samples", "8", "--max-eval-samples", "4", "--device", "cpu", *options]
    assert cli.main([*base, "--epochs", "2", "--out", str(tmp_path / "straight")]) == 0
    assert cli.main([*base, "--epochs", "1", "--out", str(tmp_path / "resumed")]) == 0
    assert cli.main(["train", "--out", str(tmp_path / "resumed"), "--resume", "--epochs",
                     "2"]) == 0
    a = load_checkpoint(tmp_path / "straight" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "resumed" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert cli.main(["evaluate", "--checkpoint", str(tmp_path / "resumed" / "best.pt")]) == 0
    metrics = json.loads((tmp_path / "resumed" / "metrics.json").read_text(encoding="utf-8"))
    input_kind = options[options.index("--input") + 1] if "--input" in options else "rgb"
    assert metrics["test"]["key"].get("input", "rgb") == input_kind
