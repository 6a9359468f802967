from pathlib import Path

import pytest
import yaml

from defectflow.config import Config, config_reference, load_config, parse_config
from defectflow.contracts import ARTIFACTS, schema_for
from defectflow.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_default_config_is_valid_and_runs_the_demo():
    cfg = load_config(REPO / "config" / "config.yaml")
    assert cfg.active_datasets == ["demo"]
    assert cfg.datasets["demo"].sources[0].type == "demo"


def test_config_yaml_states_the_model_defaults():
    """config.yaml documents defaults: its values must be the model's (no silent divergence)."""
    data = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    defaults = Config.model_validate({"datasets": data["datasets"]}).model_dump(mode="json")
    for section in (
        "split",
        "demo",
        "preflight",
        "backbone",
        "models",
        "threshold",
        "maps",
        "export",
        "synthetic",
    ):
        if section == "models":  # each entry states some of its model's keys
            for name, entry in data["models"].items():
                assert entry == {k: defaults["models"][name][k] for k in entry}, name
            continue
        assert data[section] == {k: defaults[section][k] for k in data[section]}, section
    assert data["seed"] == defaults["seed"]


def test_config_error_names_key_value_and_allowed():
    with pytest.raises(ConfigError) as exc:
        parse_config(
            {
                "datasets": {"d": {"sources": [{"type": "demo"}]}},
                "preflight": {"verify": "quick", "verfy": 1},
            }
        )
    msg = str(exc.value)
    assert "preflight.verify" in msg and "'quick'" in msg and "'header' or 'full'" in msg
    assert "preflight.verfy: unknown key" in msg


def test_unknown_source_type_lists_allowed_types():
    with pytest.raises(ConfigError, match="mvtec"):
        parse_config({"datasets": {"d": {"sources": [{"type": "mvtek", "path": "x"}]}}})


def test_bad_dataset_name_rejected():
    with pytest.raises(ConfigError, match="folder name"):
        parse_config({"datasets": {"a/b": {"sources": [{"type": "demo"}]}}})


def test_missing_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize("name", sorted(ARTIFACTS))
def test_checked_in_schema_matches_model(name):
    """Schema drift: regenerate with `make docs` when a model changes."""
    import json

    path = REPO / "schemas" / f"{name}.schema.json"
    assert path.exists(), f"{path} missing: run `make docs`"
    assert json.loads(path.read_text()) == schema_for(name), f"{path} is stale: run `make docs`"


def test_config_readme_documents_every_key():
    text = (REPO / "config" / "README.md").read_text()
    assert config_reference() in text, "config/README.md key table is stale: run `make docs`"


def test_preflight_codes_doc_is_current():
    from defectflow.codes import codes_markdown

    assert (REPO / "docs" / "preflight_codes.md").read_text() == codes_markdown(), "run `make docs`"


def test_misspelt_backbone_is_refused_at_parse_with_a_suggestion():
    demo = {"d": {"sources": [{"type": "demo"}]}}
    with pytest.raises(ConfigError) as exc:
        parse_config({"datasets": demo, "backbone": {"name": "tf_efficientnet_lit0"}})
    assert "backbone.name" in str(exc.value) and "'tf_efficientnet_lite0'" in str(exc.value)
    ok = parse_config(
        {"datasets": demo, "backbone": {"name": "resnet18.a1_in1k", "weights": "pretrained"}}
    )  # a timm tag
    assert ok.backbone.name == "resnet18.a1_in1k"


def test_missing_source_paths_are_listed(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "m.jsonl").write_text("{}\n")
    cfg = parse_config(
        {
            "datasets": {
                "a": {
                    "sources": [
                        {"type": "manifest", "path": "m.jsonl"},
                        {"type": "mvtec", "path": "datta"},
                    ]
                },
                "b": {"sources": [{"type": "manifest", "path": "data"}]},
                "off": {"enabled": False, "sources": [{"type": "mvtec", "path": "gone"}]},
            }
        }
    )
    problems = cfg.missing_sources(tmp_path)
    assert len(problems) == 2, problems
    assert "datasets.a.sources[1].path: datta does not exist" in problems[0]
    assert "datasets.b.sources[0].path: data is a folder" in problems[1]


def test_backbone_sweep_runs_every_feature_model_once_per_backbone():
    cfg = parse_config(
        {
            "datasets": {"d": {"sources": [{"type": "demo"}]}},
            "backbone": {
                "name": ["tf_efficientnet_lite0", "tf_efficientnet_lite1"],
                "layers": [[2, 3], [2, 4]],
                "image_size": 128,
            },
            "models": {
                "pc": {"backend": "patchcore", "seeds": [0, 1]},
                "knn": {"backend": "knn"},
                "st": {"backend": "anomalib", "model": "Stfpm"},
            },
        }
    )
    assert sorted(cfg.backbones) == [
        f"tf_efficientnet_lite{n}_L{la}_p3_s128" for n in (0, 1) for la in ("23", "24")
    ]
    assert cfg.backbone.id == "tf_efficientnet_lite0_L23_p3_s128"  # the first: curation's default
    bb = [f"-tf_efficientnet_lite{n}-layers{la}" for n in (0, 1) for la in ("23", "24")]
    assert sorted(cfg.models) == sorted(
        [f"pc{b}-s{s}" for b in bb for s in (0, 1)] + [f"knn{b}" for b in bb] + ["st"]
    )
    v = cfg.models["pc-tf_efficientnet_lite1-layers24-s1"]
    assert (
        v.variant_of == "pc"
        and v.seed == 1
        and v.backbone_variant == "tf_efficientnet_lite1_L24_p3_s128"
    )
    assert cfg.backbone_for("pc-tf_efficientnet_lite1-layers24-s1").layers == [2, 4]
    assert cfg.backbone_for("pc-tf_efficientnet_lite1-layers24-s1").image_size == 128
    assert cfg.models["st"].backbone_variant is None  # its own network: not crossed
    assert "backbone_variant" not in v.fit_params()
    # the default models are crossed too; one layers list is no sweep
    cfg = parse_config(
        {"datasets": {"d": {"sources": [{"type": "demo"}]}}, "backbone": {"layers": [[2, 3], [3]]}}
    )
    defaults = ("combined", "knn", "padim", "patchcore")
    assert sorted(cfg.models) == sorted(f"{m}-layers{la}" for m in defaults for la in ("23", "3"))
    # the combined model of each backbone combines that backbone's models
    assert cfg.models["combined-layers3"].members == [
        f"{m}-layers3" for m in ("knn", "patchcore", "padim")
    ]
    one = parse_config(
        {"datasets": {"d": {"sources": [{"type": "demo"}]}}, "backbone": {"layers": [[2, 4]]}}
    )  # a one-value sweep is that value
    assert one.backbone.layers == [2, 4] and sorted(one.models) == list(defaults)
    cfg = parse_config(
        {"datasets": {"d": {"sources": [{"type": "demo"}]}}, "backbone": {"layers": [2, 4]}}
    )
    assert sorted(cfg.models) == list(defaults) and list(cfg.backbones) == [cfg.backbone.id]
    # a bad value in one variant names the key
    with pytest.raises(ConfigError, match=r"backbone\.name: .*timm has no model 'resnet1'"):
        parse_config(
            {
                "datasets": {"d": {"sources": [{"type": "demo"}]}},
                "backbone": {"name": ["tf_efficientnet_lite0", "resnet1"]},
            }
        )
    with pytest.raises(ConfigError, match=r"backbone_variant: 'nope' is no backbone"):
        parse_config(
            {
                "datasets": {"d": {"sources": [{"type": "demo"}]}},
                "models": {"k": {"backend": "knn", "backbone_variant": "nope"}},
            }
        )


def test_sweeps_expand_into_named_variants():
    cfg = parse_config(
        {
            "datasets": {"d": {"sources": [{"type": "demo"}]}},
            "models": {
                "patchcore": {
                    "backend": "patchcore",
                    "coreset_ratio": [0.01, 0.1],
                    "seeds": [0, 1, 2],
                },
                "knn": {"backend": "knn", "k": [1, 5]},
                "padim": {"backend": "padim"},
            },
        }
    )
    names = sorted(cfg.models)
    assert names == sorted(
        ["knn-k1", "knn-k5", "padim"]
        + [f"patchcore-coreset_ratio{r}-s{s}" for r in ("0.01", "0.1") for s in (0, 1, 2)]
    )
    v = cfg.models["patchcore-coreset_ratio0.1-s2"]
    assert v.coreset_ratio == 0.1 and v.seed == 2 and v.variant_of == "patchcore"
    assert cfg.models["padim"].variant_of is None and cfg.models["padim"].seed is None
    with pytest.raises(ConfigError, match="seeds: give a list"):
        parse_config(
            {
                "datasets": {"d": {"sources": [{"type": "demo"}]}},
                "models": {"p": {"backend": "patchcore", "seeds": 3}},
            }
        )


def test_a_key_written_twice_is_refused_with_its_lines(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "datasets:\n  parts: {sources: [{type: demo}]}\n  parts: {sources: [{type: demo}]}\n"
    )
    with pytest.raises(
        ConfigError, match=r"line 3: .*key 'parts' is written twice \(lines 2 and 3\)"
    ):
        load_config(path)


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"treshold": {}}, "treshold: unknown key; did you mean `threshold`?"),
        (
            {"models": {"knn": {"backend": "knn", "kk": 3}}},
            "models.knn.kk: unknown key; did you mean `k`?",
        ),
        ({"models": {"knn": {"backend": "knn", "k": 0}}}, "models.knn.k: Input should be greater"),
        (
            {"backbone": {"layers": [2, 7]}},
            "backbone.layers: tf_efficientnet_lite0 has 5 feature levels (0-4)",
        ),
        (
            {"backbone": {"name": "resnet18"}},
            "backbone.weights: packaged (`builtin`) weights exist for",
        ),
        (
            {"models": {"knn": {"backend": "knnn"}}},
            "models.knn.backend: 'knnn' is not one of knn, patchcore",
        ),
        (
            {"models": {"knn": {"k": 3}}},
            "models.knn: needs `backend:`, one of knn, patchcore, padim",
        ),
        (
            {"models": {"pc": {"backend": "patchcore", "seeds": "x"}}},
            "models.pc.seeds: give a list",
        ),
    ],
)
def test_config_mistakes_name_the_file_and_the_key_once(tmp_path, extra, message):
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"datasets": {"d": {"sources": [{"type": "demo"}]}}, **extra}))
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    text = str(exc.value)
    assert text.startswith(f"invalid {path}:") and message in text
    assert "models.knn.knn" not in text


def test_dry_run_names_the_users_config_file_for_each_mistake(workflow_dir, tmp_path):
    """Snakemake merges config/config.yaml and --configfile: each mistake is named with the
    file that makes it, before any job, and a weights file that does not exist is one."""
    import subprocess
    import sys

    def dry_run(content: dict) -> str:
        mine.write_text(yaml.safe_dump(content))
        r = subprocess.run(
            [sys.executable, "-m", "snakemake", "-n", "--configfile", str(mine)],
            cwd=workflow_dir,
            capture_output=True,
            text=True,
        )
        assert r.returncode != 0
        return r.stdout + r.stderr

    mine = tmp_path / "mine.yaml"
    out = dry_run({"models": {"knn": {"backend": "knn", "k": 0}}})
    assert f"invalid {mine}:\n  models.knn.k:" in out, out[-2000:]
    out = dry_run({"backbone": {"weights": str(tmp_path / "nope.pth")}})
    assert (
        f"invalid {mine}:\n  backbone.weights: weights file {tmp_path / 'nope.pth'} does not exist"
        in out
    )
    assert "invalid config/config.yaml" not in out


def test_an_empty_sweep_list_is_refused_not_a_dropped_model():
    data = {"datasets": {"demo": {"sources": [{"type": "demo"}]}}}
    with pytest.raises(ConfigError, match=r"models.knn.k: an empty list sweeps no value"):
        parse_config(data | {"models": {"knn": {"backend": "knn", "k": []}}})


@pytest.mark.parametrize("name", ["run.json", "backbones"])
def test_a_dataset_name_taken_by_a_results_file_is_refused(name):
    with pytest.raises(ConfigError, match=f"dataset name '{name}' is taken by results/{name}"):
        parse_config({"datasets": {name: {"sources": [{"type": "demo"}]}}})


def test_a_mistake_in_dash_dash_config_is_blamed_on_it_not_on_the_file(tmp_path):
    from defectflow.config import parse_workflow_config

    f = tmp_path / "config.yaml"
    f.write_text("datasets:\n  demo:\n    sources: [{type: demo}]\nthreshold:\n  fpr: 0.05\n")
    data = {"datasets": {"demo": {"sources": [{"type": "demo"}]}}, "threshold": {"fpr": 2}}
    with pytest.raises(ConfigError, match=r"invalid --config:\n  threshold.fpr") as exc:
        parse_workflow_config(data, [f], command_line={"threshold": {"fpr": 2}})
    assert str(f) not in str(exc.value)
