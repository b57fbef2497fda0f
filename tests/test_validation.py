"""Every check of the distillation, sampling, training and student settings, and the
closed-form worlds' refusal of them: one line naming the key, before anything runs."""

import pytest
from hydra import compose, initialize_config_dir

from sim import experiment
from sim.cli import CONF_DIR
from sim.config import to_config
from sim.errors import ConfigError

BAD = [  # (override, the start of the one-line error)
    ("distill=soft distill.alpha=1.5", "distill.alpha=1.5 is not allowed: a float in [0, 1]"),
    ("distill=soft distill.tau=0", "distill.tau=0.0 is not allowed: a positive float"),
    ("distill=topk distill.top_k=0", "distill.top_k=0 is not allowed: an integer >= 1"),
    ("distill=jsd distill.beta=-0.1", "distill.beta=-0.1 is not allowed: a float in [0, 1]"),
    ("distill=feature distill.feature_weight=-1",
     "distill.feature_weight=-1.0 is not allowed: a float >= 0"),
    ("distill=on_policy distill.on_policy_fraction=2",
     "distill.on_policy_fraction=2.0 is not allowed: a float in [0, 1]"),
    ("sampling.temperature=-1", "sampling.temperature=-1.0 is not allowed: a float >= 0"),
    ("sampling.top_k=-1", "sampling.top_k=-1 is not allowed: an integer >= 0"),
    ("sampling.top_p=0", "sampling.top_p=0.0 is not allowed: a float in (0, 1]"),
    ("sampling.top_p=1.5", "sampling.top_p=1.5 is not allowed: a float in (0, 1]"),
    ("sampling.min_p=1.5", "sampling.min_p=1.5 is not allowed: a float in [0, 1]"),
    ("train.steps=0", "train.steps=0 is not allowed: an integer >= 1"),
    ("train.batch_size=0", "train.batch_size=0 is not allowed: an integer >= 1"),
    ("train.lr=0", "train.lr=0.0 is not allowed: a positive float"),
    ("train.weight_decay=-1", "train.weight_decay=-1.0 is not allowed: a float >= 0"),
    ("train.warmup_steps=100", "train.warmup_steps=100 is not allowed: an integer in [0, "),
    ("student.width=-1", "student.width=-1 is not allowed: an integer >= 0"),
    ("student.layers=-1", "student.layers=-1 is not allowed: an integer >= 0"),
    ("student.heads=-1", "student.heads=-1 is not allowed: an integer >= 0"),
    ("world=digits student.hidden=[0]", "student.hidden=[0] is not allowed: positive layer"),
    ("world=digits student.width=8", "student.width=8 is not allowed: 0 in the digits world, "
                                     "whose models are MLPs (size its student with "
                                     "student.hidden)"),
    ("world=digits student.layers=1", "student.layers=1 is not allowed: 0 in the digits"),
    ("world=gaussian generations=2 mix.synthetic_schedule=[50,200]",
     "mix.synthetic_schedule=[50, 200] is not allowed: one integer count in [3, 100]"),
    ("world=gaussian mix.synthetic_decay=1.5",
     "mix.synthetic_decay=1.5 is not allowed: a factor in (0, 1]"),
    ("world=gaussian distill=soft", "distill.objective='soft' is not allowed: only the "
                                    "default 'hard' in the closed-form world 'gaussian'"),
    ("world=linreg sampling.temperature=0.5", "sampling.temperature=0.5 is not allowed: only "
                                              "the default 1.0 in the closed-form world"),
    ("world=gmm student.width=8", "student.width=8 is not allowed: only the default 0 in "
                                  "the closed-form world 'gmm'"),
]


@pytest.mark.parametrize("overrides,message", BAD, ids=[b[0] for b in BAD])
def test_a_bad_setting_is_refused_at_build_in_one_line(overrides, message):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = to_config(compose("config", overrides=overrides.split()))
    with pytest.raises(ConfigError) as error:
        experiment.build(cfg)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)
