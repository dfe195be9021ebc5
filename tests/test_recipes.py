"""TrainConfig's recipes: PALM's settings for every method (the default) or each method's own paper's.

The expected numbers are read off the reference repositories' files, named beside each case;
they are written out here rather than taken from sept.trainer.config, so a changed table fails.
"""
from __future__ import annotations

import pytest

from sept.trainer.config import ConfigError, config_hash, make_config

# dassl's cosine schedule after one constant warm-up epoch at 1e-5, SGD momentum 0.9, weight decay 5e-4
DASSL = {"lr_schedule": "cosine", "warmup_epochs": 1, "warmup_lr": 1e-5, "weight_decay": 5e-4, "momentum": 0.9}
REFERENCE = {
    # KaiyangZhou/CoOp configs/trainers/CoOp/rn50.yaml (16 shots: MAX_EPOCH 200, batch 32, lr 0.002)
    "coop": {**DASSL, "lr": 0.002, "batch_size": 32, "epochs": 200, "n_ctx": 16, "ctx_init": ""},
    # KaiyangZhou/CoOp configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml
    "cocoop": {**DASSL, "lr": 0.002, "batch_size": 1, "epochs": 10, "n_ctx": 4, "ctx_init": "a sound of a"},
    # htyao89/KgCoOp configs/trainers/KgCoOp/vit_b16_ep100_ctxv1.yaml, scripts/base2new_train.sh (W=8.0)
    "kgcoop": {**DASSL, "lr": 0.002, "batch_size": 128, "epochs": 100, "ctx_init": "a sound of a",
               "kgcoop_weight": 8.0},
    # asif-hanif/palm scripts/<dataset>.sh: --lr 0.05 --batch_size 16 --n_epochs 50
    "palm": {"lr": 0.05, "batch_size": 16, "epochs": 50, "lr_schedule": "constant", "weight_decay": 0.0},
}
# recipe=palm, as every run trained before recipes existed
PALM = {
    "coop": {"lr": 0.05, "batch_size": 16, "epochs": 50, "lr_schedule": "constant", "warmup_epochs": 0,
             "weight_decay": 0.0},
    "cocoop": {"lr": 0.032, "batch_size": 16, "epochs": 10, "n_ctx": 4, "lr_schedule": "constant"},
    "kgcoop": {"lr": 0.05, "batch_size": 16, "epochs": 50, "kgcoop_weight": 8.0},
    "palm": {"lr": 0.05, "batch_size": 16, "epochs": 50},
}


def _picked(cfg, keys):
    return {k: getattr(cfg, k) for k in keys}


@pytest.mark.parametrize("method", sorted(REFERENCE))
def test_reference_recipe_is_the_papers_settings(method):
    cfg = make_config(overrides={"method": method, "recipe": "reference"})
    assert cfg.recipe == "reference"
    assert _picked(cfg, REFERENCE[method]) == REFERENCE[method]


@pytest.mark.parametrize("method", sorted(PALM))
def test_palm_recipe_is_the_default_and_unchanged(method):
    default = make_config(overrides={"method": method})
    assert default.recipe == "palm" and default == make_config(overrides={"method": method, "recipe": "palm"})
    assert _picked(default, PALM[method]) == PALM[method]


@pytest.mark.parametrize("shots,epochs", [(1, 50), (2, 100), (4, 100), (8, 200), (16, 200), (0, 200)])
def test_coop_reference_epochs_follow_the_shot_count(shots, epochs):
    # COOP.md: 1 shot rn50_ep50, 2 and 4 shots rn50_ep100, 8 and 16 shots rn50 (200 epochs)
    cfg = make_config(overrides={"method": "coop", "recipe": "reference", "shots": shots})
    assert cfg.epochs == epochs and cfg.batch_size == 32


def test_dept_under_the_reference_recipe_takes_depts_files():
    coop = make_config(overrides={"method": "coop", "dept": True, "recipe": "reference"})
    # Koorye/DePT configs/trainers/ExtrasLinearProbeCoOp/vit_b16_ep10_bs4_lr35.yaml
    assert (coop.epochs, coop.batch_size, coop.lr, coop.weight_decay) == (10, 4, 0.0035, 5e-4)
    cocoop = make_config(overrides={"method": "cocoop", "dept": True, "recipe": "reference"})
    # configs/trainers/ExtrasLinearProbeCoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml: batch 1, lr 0.002
    assert (cocoop.epochs, cocoop.batch_size, cocoop.lr) == (10, 1, 0.002)
    # the palm recipe keeps the project's CoCoOp batch
    assert make_config(overrides={"method": "cocoop", "dept": True}).batch_size == 16


def test_explicit_values_win_over_the_recipe(tmp_path):
    cfg = make_config(overrides={"method": "kgcoop", "recipe": "reference", "lr": 0.01, "epochs": 3})
    assert (cfg.lr, cfg.epochs, cfg.batch_size) == (0.01, 3, 128)
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("method: cocoop\nrecipe: reference\nbatch_size: 8\n")
    from_file = make_config(yaml_file, ["warmup_epochs=0"])
    assert (from_file.batch_size, from_file.warmup_epochs, from_file.lr) == (8, 0, 0.002)
    # the resolved values are what the saved config holds
    saved = from_file.to_dict()
    assert saved["recipe"] == "reference" and saved["lr"] == 0.002 and saved["weight_decay"] == 5e-4


def test_config_hash_differs_between_recipes_and_palm_keeps_old_hashes():
    palm = make_config(overrides={"method": "coop", "dataset_root": "/data/ESC50", "seed": 1})
    reference = make_config(overrides={"method": "coop", "dataset_root": "/data/ESC50", "seed": 1,
                                       "recipe": "reference"})
    assert config_hash(palm) != config_hash(reference)
    # the same numbers under the other recipe's name are still another run
    assert config_hash(palm) != config_hash(palm.replace(recipe="reference"))
    # a config saved before the field existed is the palm recipe's run
    saved = palm.to_dict()
    del saved["recipe"]
    assert config_hash(saved) == config_hash(palm)


def test_unknown_recipe_is_refused_naming_the_parameter():
    with pytest.raises(ConfigError, match="parameter 'recipe'"):
        make_config(overrides={"method": "coop", "recipe": "clip"})


def test_logit_scale_is_the_checkpoints_unless_set():
    assert make_config(overrides={"method": "coop"}).logit_scale is None
    assert make_config(overrides=["logit_scale=100"]).logit_scale == 100.0
