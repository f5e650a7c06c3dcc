"""`fer-train fit --recipe NAME`: the shipped recipes are valid, flags override them, config.json records
the recipe and its sha256, and a bad recipe is a one-line error naming the file, table and key."""
from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path

import pytest

keras = pytest.importorskip("keras")

from click.testing import CliRunner  # noqa: E402

from fer_edge.errors import ConfigError  # noqa: E402
from fer_train import recipes as RC  # noqa: E402
from fer_train.cli import cli  # noqa: E402
from fer_train.fit import FitConfig  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")
REPO = Path(__file__).resolve().parents[2]


def fit(args, out: Path, name: str):
    res = CliRunner().invoke(cli, ["fit", *map(str, args), "--out", str(out), "--name", name, "-q"])
    if res.exception and not isinstance(res.exception, SystemExit):
        raise res.exception
    assert res.exit_code == 0, res.output
    return out / name


@pytest.mark.parametrize("name,model", [("default", "edgenet"), ("fast", "edgenet_s"), ("ferplus", "edgenet")])
def test_shipped_recipes_are_long_from_scratch_schedules(name, model):
    settings, info = RC.load_recipe(name, FitConfig)
    assert info["version"] >= 1 and info["description"]
    assert info["sha256"] == hashlib.sha256((REPO / "train" / "recipes" / f"{name}.toml").read_bytes()).hexdigest()
    assert settings["model"] == model and 150 <= settings["epochs"] <= 300
    assert "init_from" not in settings  # from scratch
    for teacher in settings.get("teacher", []):  # the shipped models: present in a clone
        assert Path(teacher).is_file(), teacher
    cfg = FitConfig(**{**settings, "teacher": settings.get("teacher")})
    cfg.validate()
    # the runtime-crop variation of the pipeline is in every recipe
    assert cfg.shift > 0 and cfg.zoom > 0 and cfg.rotation > 0 and cfg.blur > 0 and cfg.jpeg > 0
    assert cfg.swa_epochs > 0 and cfg.patience == 0


def test_recipes_ship_as_package_data():
    doc = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = doc["tool"]["setuptools"]["package-data"]["fer_train"]
    shipped = {p.relative_to(REPO / "train").as_posix() for p in (REPO / "train" / "recipes").glob("*.toml")}
    assert shipped and all(any(Path(s).match(p) for p in patterns) for s in shipped)


@pytest.mark.parametrize("text,match", [
    ('version = 1\n[optimizer]\nlearning_rate = 0.1\n', r"table \[optimizer\], key 'learning_rate': not a fit setting"),
    ('version = 1\nepochs = "many"\n', r"key 'epochs': 'many' is not int$"),
    ('version = 1\nout = "elsewhere"\n', r"key 'out': belongs on the command line"),
    ('version = 1\n[a]\nlr = 0.1\n[b]\nlr = 0.2\n', r"key 'lr': set twice"),
    ('epochs = 3\n', r"needs an integer 'version'"),
    ('version = 1\nepochs = [\n', r"not valid TOML"),
    ('version = 1\nepochs = 0\n', r"epochs must be >= 1"),
])
def test_bad_recipes_are_one_line_errors(tmp_path, text, match):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as exc:
        RC.apply_recipe(FitConfig(), path, set())
    assert str(path) in str(exc.value) or "epochs must be" in str(exc.value)
    assert "\n" not in str(exc.value)


def test_unknown_recipe_name_lists_the_shipped_ones():
    res = CliRunner().invoke(cli, ["fit", "--recipe", "nonesuch"])
    assert isinstance(res.exception, ConfigError)
    assert "unknown recipe 'nonesuch'" in str(res.exception) and "default" in str(res.exception)


def test_flags_override_the_recipe_and_config_records_it(tiny, tmp_path):
    recipe = tmp_path / "mine.toml"
    recipe.write_text('version = 3\ndescription = "test"\n[model]\nmodel = "edgenet_s"\nwidth = 0.5\n'
                      '[optimizer]\nepochs = 9\nbatch_size = 16\nlr = 0.003\n[loss]\nlabel_smoothing = 0.2\n'
                      '[augment]\nblur = 0.5\njpeg = 0.5\nnoise = 2.0\n')
    run = fit(["--recipe", recipe, "--data", tiny, "--epochs", "1", "--lr", "0.001"], tmp_path, "r")
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["recipe"] == "mine" and cfg["recipe_sha256"] == hashlib.sha256(recipe.read_bytes()).hexdigest()
    assert cfg["epochs"] == 1 and cfg["lr"] == 0.001  # given on the command line
    assert cfg["label_smoothing"] == 0.2 and cfg["model"] == "edgenet_s" and cfg["width"] == 0.5  # the recipe's
    assert cfg["blur"] == 0.5 and cfg["jpeg"] == 0.5 and cfg["noise"] == 2.0 and cfg["batch_size"] == 16
    assert cfg["optimizer"] == FitConfig.optimizer  # neither: the default


@pytest.mark.slow
def test_the_shipped_fast_recipe_runs_with_its_teachers(tiny, tmp_path):
    """The real recipe file, shortened by flags: the shipped teachers predict, training runs."""
    run = fit(["--recipe", "fast", "--data", tiny, "--epochs", "2", "--swa-epochs", "1", "--width", "0.5",
               "--batch-size", "32"], tmp_path, "fast")
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["recipe"] == "fast" and cfg["epochs"] == 2 and cfg["kd_alpha"] == 0.6
    assert [Path(t).name for t in cfg["teacher"]] == ["fer_default_float32.tflite", "fer_fast_float32.tflite"]
    # v2: the runtime views of this data, made in the runs folder on first use ("auto"), are a source too
    assert Path(cfg["runtime_views"]).parent == tmp_path and Path(cfg["runtime_views"]).is_file()
    assert cfg["zoom"] == 0.3 and cfg["runtime_view_p"] == 0.5
    assert set(cfg["source_files_sha256"]) == {*cfg["teacher"], cfg["runtime_views"]}
    assert (run / "teacher_targets.npy").is_file()
    assert json.loads((run / "metrics.json").read_text())["epochs_run"] == 2
