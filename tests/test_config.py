"""The typed config: dotted overrides, one-line errors naming the key, named configs, --help."""
import json
import subprocess
import sys

import pytest

from pipeline import config as C
from pipeline import schedule as S


def test_defaults_validate_and_round_trip(tmp_path):
    cfg = C.validate(C.Config())
    C.save(cfg, tmp_path / "config.json")
    assert C.from_dict(json.loads((tmp_path / "config.json").read_text())) == cfg


def test_overrides_parse_types():
    a = C.parse_args(["--config", "demo", "--train.batch_size=32", "--optim.lr", "3e-4",
                      "--curriculum.starts=0,0.5", "--curriculum.resolutions=16,32",
                      "--augment.flip=false", "--train.clock=epoch", "--train.epochs=2"])
    c = a.cfg
    assert a.config_name == "demo"
    assert (c.train.batch_size, c.optim.lr, c.augment.flip) == (32, 3e-4, False)
    assert c.curriculum.starts == (0.0, 0.5) and c.curriculum.resolutions == (16, 32)
    assert c.train.clock == "epoch"


@pytest.mark.parametrize("argv, key, words", [
    (["--train.bach_size=3"], "train.bach_size", "did you mean train.batch_size"),
    (["--nosection.x=1"], "nosection.x", "unknown key"),
    (["--train.batch_size=abc"], "train.batch_size", "expected int"),
    (["--train.batch_size=2.5"], "train.batch_size", "expected int"),
    (["--optim.lr=fast"], "optim.lr", "expected float"),
    (["--train.clock=hours"], "train.clock", "not one of progress, epoch"),
    (["--optim.decay=step"], "optim.decay", "not one of"),
    (["--train.progress_bar=maybe"], "train.progress_bar", "boolean"),
    (["--train.batch_size=0"], "train.batch_size", ">= 1"),
    (["--optim.lr=-1"], "optim.lr", "> 0"),
    (["--curriculum.starts=0,0.5"], "curriculum.starts", "one start per resolution"),
    (["--curriculum.starts=0.1", "--curriculum.resolutions=32"], "curriculum.starts", "start at 0"),
    (["--curriculum.starts=0,0.5,0.4", "--curriculum.resolutions=8,16,32"], "curriculum.starts", "increasing"),
    (["--optim.warmup=2"], "optim.warmup", "progress fraction"),
    (["--augment.erase_prob=1.5"], "augment.erase_prob", "[0, 1]"),
    (["--data.batches_ahead=0"], "data.batches_ahead", "must be >= 1"),
    (["--data.beton_scale=0.5"], "data.beton_scale", "expected >= 1, got 0.5"),
    (["--augment.mean=0.5,0.5"], "augment.mean", "3 values"),
    (["--train.budget_s=10", "--train.budget_h=1"], "train.budget_h", "not both"),
    (["--train.epochs=0"], "train.epochs", "budget"),
    (["--train.clock=epoch", "--train.epochs=0", "--train.budget_s=60"], "optim.decay_end", "run end"),
    (["--train.batch_size"], "train.batch_size", "missing value"),
    (["--train.eval_every=2"], "train.eval_every", "progress fraction"),  # was: silently only at the end
    (["--train.ckpt_every=1.5"], "train.ckpt_every", "progress fraction"),
    (["--train.clock=epoch", "--train.epochs=2", "--curriculum.starts=0,3", "--curriculum.resolutions=8,16"],
     "curriculum.starts", "would never run"),
    (["--train.budget_s=inf"], "train.budget_s", "finite"),  # would hold progress at 0 forever
    (["--optim.lr=nan"], "optim.lr", "finite"),
    (["--curriculum.starts=0,,0.5", "--curriculum.resolutions=8,16"], "curriculum.starts", "empty item"),
])
def test_bad_configs_fail_with_one_line_naming_the_key(argv, key, words):
    with pytest.raises(C.ConfigError) as e:
        C.parse_args(argv)
    msg = str(e.value)
    assert msg.startswith(key + ":"), msg
    assert words in msg
    assert "\n" not in msg


def test_config_file_values_are_type_checked():
    cfg = C.Config()
    cfg.train.batch_size = "64"
    with pytest.raises(C.ConfigError, match=r"^train\.batch_size: expected int"):
        C.validate(cfg)
    with pytest.raises(C.ConfigError, match=r"^--config: no config named 'nope'"):
        C.load_config("nope")


def test_non_finite_values_in_a_config_file_are_rejected():
    cfg = C.Config()
    cfg.optim.lr = float("inf")
    with pytest.raises(C.ConfigError, match=r"^optim\.lr: expected a finite number"):
        C.validate(cfg)


def test_a_budget_given_in_one_unit_replaces_the_configs_budget_in_the_other():
    """s16_24h sets budget_h, demo budget_s: a command-line budget in the other unit replaces it
    (before, both were set and the run refused to start); both on the command line is still an error."""
    s16 = C.parse_args(["--config", "s16_24h", "--train.budget_s=600"]).cfg
    assert (s16.train.budget_s, s16.train.budget_h, s16.budget) == (600.0, 0.0, 600.0)
    demo = C.parse_args(["--config", "demo", "--train.budget_h=0.5"]).cfg
    assert (demo.train.budget_s, demo.budget) == (0.0, 1800.0)


def test_config_from_path(tmp_path):
    p = tmp_path / "mine.py"
    p.write_text("from pipeline.config import Config\n"
                 "def get_config():\n    c = Config()\n    c.train.batch_size = 7\n    return c\n")
    assert C.parse_args(["--config", str(p)]).cfg.train.batch_size == 7


@pytest.mark.parametrize("name", ["demo", "paper", "s16_24h"])
def test_named_configs_are_valid(name):
    cfg = C.validate(C.load_config(name))
    assert cfg.budget > 0
    assert C.load_config(name) is not C.load_config(name)  # get_config returns a fresh Config
    mod = __import__(f"configs.{name}", fromlist=["get_config"])
    assert "python -m pipeline.train --config" in mod.__doc__


def test_paper_config_is_the_authors_recipe():
    c = C.load_config("paper")
    assert c.model.name == "vitday_small_patch16_local"
    assert c.train.batch_size == 64 and c.optim.lr == pytest.approx(1.25e-4)
    assert c.train.clock == "epoch" and c.optim.decay_end == 300 and c.optim.warmup == 0
    assert c.budget == 24 * 3600
    assert [S.resolution_at(e, c.curriculum.starts, c.curriculum.resolutions) for e in (0, 5, 30)] == [32, 64, 224]
    # their model: no qkv bias, 129,024 parameters more than ViT-S (the locality conv and MLP, less 13,824 biases)
    from pipeline.train import build_model
    import model
    net = build_model(c, num_classes=1000, img_size=224)
    assert net.blocks[0].attn.qkv.bias is None and model.count_params(net) == 22_050_664 + 129_024
    # their init (xavier_normal, the head not zeroed) and their cosine's floor (timm's min-lr 1e-5)
    assert c.model.init == "xavier" and net.weight_init_mode == "xavier"
    assert net.head.weight.std().item() == pytest.approx((2 / (384 + 1000)) ** 0.5, rel=0.05)
    assert c.optim.final_lr_ratio * c.optim.lr == pytest.approx(1e-5)


def test_s16_config_ends_at_224_with_lr_decayed():
    c = C.load_config("s16_24h")
    assert c.curriculum.resolutions[-1] == 224 and c.train.clock == "progress"
    assert S.lr_at(1.0, peak=c.optim.lr, warmup=c.optim.warmup, decay=c.optim.decay, decay_end=1.0,
                   final_ratio=c.optim.final_lr_ratio) <= 0.05 * c.optim.lr


def test_help_lists_every_key_with_default():
    out = subprocess.run([sys.executable, "-m", "pipeline.train", "--config", "demo", "--help"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for key, (value, _, help) in C.keys(C.load_config("demo")).items():
        assert f"--{key}={C._fmt(value)}" in out.stdout
        assert help in out.stdout


def test_cli_bad_key_is_one_line_error(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pipeline.train", "--run-dir", str(tmp_path / "r"),
                          "--optim.lrr=1"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip() == "error: optim.lrr: unknown key (did you mean optim.lr?)"


def test_a_saved_config_breaking_a_newer_rule_resumes_with_an_override(tmp_path):
    """Rules added after a run was saved (here: eval_every <= 1 under the progress clock) are checked
    after the resume's overrides, so an override makes the run resumable instead of refusing it."""
    cfg = C.load_config("demo")
    d = C.to_dict(cfg)
    d["train"]["eval_every"] = 2.0  # valid when it was saved: it meant "only at the end"
    (tmp_path / "config.json").write_text(json.dumps(d))
    with pytest.raises(C.ConfigError, match=r"^train\.eval_every: .*must be <= 1, got 2\.0 \(in .*config\.json or"):
        C.parse_args(["--resume", str(tmp_path)])
    args = C.parse_args(["--resume", str(tmp_path), "--train.eval_every=0.05"])  # resume-safe: no --force
    assert args.resume and args.cfg.train.eval_every == 0.05
