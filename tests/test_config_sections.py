"""The one config merge with registered extra sections (IMP's ``imp:``, a procedure's own)."""

from __future__ import annotations

import pytest

from sparsetrain.errors import SparsetrainError
from sparsetrain.train.config import SECTIONS, load_config, merge_config, register_section


@pytest.fixture
def probe_section():
    seen = []

    def check(values: dict) -> None:
        seen.append(dict(values))
        if values["rate"] > 1:
            raise SparsetrainError(f"probe.rate must be at most 1, got {values['rate']}.")
    register_section("probe", {"rate": 0.5, "mode": "fast"}, check=check)
    yield seen
    del SECTIONS["probe"]


def test_extra_section_takes_defaults_yaml_layers_and_overrides(probe_section, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("epochs: 2\nprobe: {mode: slow}\n")
    cfg = load_config(recipe, ["--probe.rate", "0.25"], sections=("probe",))
    assert cfg["probe"] == {"rate": 0.25, "mode": "slow"} and cfg["epochs"] == 2
    assert probe_section == [{"rate": 0.25, "mode": "slow"}]  # the section's own check ran once, on the result
    assert merge_config([], sections=("probe",))["probe"] == {"rate": 0.5, "mode": "fast"}


def test_bad_key_in_an_extra_section_lists_its_keys(probe_section):
    with pytest.raises(SparsetrainError, match=r"^unknown probe key 'rat'. Did you mean: rate\? Choices: mode, rate.$"):
        load_config(None, ["--probe.rat", "0.1"], sections=("probe",))
    with pytest.raises(SparsetrainError, match="at most 1"):
        load_config(None, ["--probe.rate", "2"], sections=("probe",))


def test_a_section_is_refused_where_it_was_not_asked_for(probe_section):
    with pytest.raises(SparsetrainError, match="unknown config key probe"):
        load_config(None, ["--probe.rate", "0.1"])
    with pytest.raises(SparsetrainError, match="unknown config section 'prob'. Did you mean: probe"):
        merge_config([], sections=("prob",))
    with pytest.raises(SparsetrainError, match="trainer's own"):
        register_section("optim", {})


def test_imp_section_is_registered_and_checked():
    from sparsetrain.procedures.lottery import load_tickets_config
    with pytest.raises(SparsetrainError, match=r"unknown imp key 'prune_rate'. Did you mean: prune_fraction\?"):
        load_tickets_config(None, ["--imp.prune_rate", "0.2"])
    with pytest.raises(SparsetrainError, match="looks like a percentage"):
        load_tickets_config(None, ["--imp.rounds", "2", "--imp.prune_fraction", "20"])
    cfg, imp = load_tickets_config(None, ["--imp.rounds", "2", "--epochs", "1"])
    assert "imp" not in cfg and imp.rounds == 2 and cfg["method"] == {"name": "dense"}


def test_gem_miner_files_are_read_like_recipes(tmp_path):
    """One YAML reader: scientific notation is a number in a Gem-Miner file too (YAML 1.1 made 1e-4 a string)."""
    from sparsetrain.procedures.gems_config import load_gems_config
    path = tmp_path / "g.yaml"
    path.write_text("target_sparsity: 5\nlmbda: 1e-4\nwd: 5e-4\n")
    cfg = load_gems_config(path)
    assert (cfg["gems"]["lmbda"], cfg["optim"]["weight_decay"]) == (1e-4, 5e-4)
    path.write_text("target_sparsity: [5\n")
    with pytest.raises(SparsetrainError, match="Gem-Miner config .* is not valid YAML"):
        load_gems_config(path)
