"""Jobs load only what they need: no torch/timm/anomalib/lightning where no network runs, and
the delivery path imports no training code (a job's start-up is seconds of imports otherwise)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "timm", "anomalib", "lightning")


def _loaded(module: str) -> set[str]:
    code = f"import sys, json, {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out))


@pytest.mark.parametrize(
    "module",
    [
        "defectflow.data.ingest",
        "defectflow.data.preflight",
        "defectflow.models.memory",
        "defectflow.data.standardize",
        "defectflow.features.embeddings",
        "defectflow.models.train",
        "defectflow.deploy.scoring",
        "defectflow.models.calibrate",
        "defectflow.deploy.predict",
        "defectflow.evaluation.metrics",
        "defectflow.evaluation.report",
        "defectflow.deploy.detector",
        "defectflow.deploy.service",
        "defectflow.deploy.watch",
        "defectflow.models.backends.knn",
        "defectflow.models.backends.patchcore",
        "defectflow.models.backends.padim",
    ],
)
def test_stage_modules_do_not_import_torch(module):
    loaded = _loaded(module)
    assert not [m for m in HEAVY if m in loaded], module


def test_delivery_path_imports_no_training_code():
    # the detector and the backends it loads a checkpoint into (PatchCore's coreset is training)
    loaded = _loaded(
        "defectflow.deploy.detector, defectflow.models.backends.patchcore, defectflow.models.backends.knn"
    )
    training = {
        "defectflow.models.train",
        "defectflow.features.embeddings",
        "defectflow.features.backbone",
        "defectflow.features.export",
        "defectflow.models.backends.coreset",
        "defectflow.data.standardize",
        "defectflow.data.preflight",
    }
    assert not training & loaded, training & loaded


def test_parsing_the_config_imports_no_backend_implementation():
    loaded = _loaded("defectflow.config")
    assert not {
        m
        for m in loaded
        if m.startswith(
            ("defectflow.models.backends.knn", "defectflow.models.backends.anomalib", "torch")
        )
    }


# The layers, lowest first: a module may import its own layer and those below it, never above.
LAYERS = [
    (
        "shared helpers",
        [
            "errors",
            "io",
            "logs",
            "progress",
            "threads",
            "device",
            "sharding",
            "records",
            "codes",
            "tables",
            "contracts",
            "manifests",
            "artifact_files",
            "false_alarms",
        ],
    ),
    (
        "backbone runtime",
        ["features.preprocess", "features.onnx_runtime", "features.catalog", "features.backbone"],
    ),
    ("model backends", ["models.backends"]),
    ("artifacts", ["artifacts"]),
    ("data sources", ["data.sources"]),
    ("config", ["config"]),
    ("features", ["features"]),
    ("data", ["data"]),
    ("evaluation", ["evaluation"]),
    ("models", ["models"]),
    ("deploy", ["deploy"]),
    ("curation", ["curation"]),
    ("command line", ["cli", "__init__"]),
]


def _layer(module: str) -> int | None:
    best = None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (best is None or len(p) > best[1]):
                best = (i, len(p))
    return best[0] if best else None


def _imports(path) -> list[tuple[int, str]]:
    """(line, module) of every defectflow import in a file, at the top or inside functions."""
    import ast

    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.split(".")[0] == "defectflow"
        ):
            base = node.module.removeprefix("defectflow").lstrip(".")
            for a in node.names:  # `from defectflow.models import backends` is models.backends
                out.append(
                    (
                        node.lineno,
                        f"{base}.{a.name}"
                        if base
                        and a.name.islower()
                        and a.name != "normalize"
                        and (path.parents[0].parent / base.replace(".", "/") / a.name).exists()
                        else (base or a.name),
                    )
                )
        elif isinstance(node, ast.Import):
            out += [
                (node.lineno, a.name.removeprefix("defectflow."))
                for a in node.names
                if a.name.startswith("defectflow.")
            ]
    return out


def test_no_module_imports_a_higher_layer():
    from conftest import REPO

    src = REPO / "src" / "defectflow"
    bad = []
    for f in sorted(src.rglob("*.py")):
        mod = ".".join(f.relative_to(src).with_suffix("").parts).removesuffix(".__init__")
        own = _layer(mod)
        assert own is not None, f"{mod} is in no layer: add it to LAYERS"
        for line, target in _imports(f):
            layer = _layer(target)
            if layer is not None and layer > own:
                bad.append(
                    f"{mod}:{line} imports {target} ({LAYERS[layer][0]} above {LAYERS[own][0]})"
                )
            if (
                mod.startswith("deploy")
                and target.startswith(("models", "data", "config", "evaluation", "curation"))
                and not target.startswith("models.backends")
            ):
                bad.append(f"{mod}:{line} imports {target}: the detector stands alone")
    assert not bad, "\n".join(bad)


def test_the_infer_command_loads_only_deploy_artifacts_and_shared_modules(tmp_path):
    """`defectflow infer` as a user runs it (a folder of images; here, none readable): the
    modules of defectflow it loads are the deliverable's own."""
    from conftest import save_image

    save_image(tmp_path / "imgs" / "a.png")
    code = (
        "import sys, json\nfrom defectflow.cli import main\n"
        "try:\n    main(['infer', '--infer-config', sys.argv[1], sys.argv[2], '--out', sys.argv[3]])\n"
        "finally:\n    print(json.dumps(sorted(m for m in sys.modules if m.startswith('defectflow'))))\n"
    )
    (tmp_path / "ic.json").write_text("{}")
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            str(tmp_path / "ic.json"),
            str(tmp_path / "imgs"),
            str(tmp_path / "p.jsonl"),
        ],
        capture_output=True,
        text=True,
    )
    loaded = set(json.loads(r.stdout.strip().splitlines()[-1]))
    allowed = (
        "defectflow.deploy",
        "defectflow.artifacts",
        "defectflow.models.backends",
        "defectflow.features.preprocess",
        "defectflow.features.onnx_runtime",
        "defectflow.features.torch_runtime",  # picks ONNX or, on CUDA, torch (loaded lazily)
        "defectflow.cli",
    )
    shared = {f"defectflow.{m}" for m in LAYERS[0][1]} | {"defectflow"}
    assert "defectflow.deploy.detector" in loaded, r.stderr
    packages = {"defectflow.features", "defectflow.models"}  # their __init__ alone: a docstring
    assert not {m for m in loaded if not m.startswith(allowed) and m not in shared | packages}, (
        loaded
    )


def test_imports_inside_functions_say_why_they_are_lazy():
    """Imports go at the top; one inside a function is a deliberate lazy load (a heavy or
    optional dependency, or a command's own modules) and its block starts with `# lazy: why`."""
    import ast

    from conftest import REPO

    bad = []
    for f in sorted((REPO / "src" / "defectflow").rglob("*.py")):
        lines = f.read_text(encoding="utf-8").splitlines()
        for fn in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(fn):
                if not isinstance(node, ast.Import | ast.ImportFrom):
                    continue
                i = node.lineno - 2  # back over the imports (and blank lines) of its block
                while i >= 0 and (
                    not lines[i].strip()
                    or lines[i].strip().startswith(("import ", "from ", ")"))
                    or (lines[i].strip().endswith(",") and not lines[i].strip().startswith("#"))
                ):
                    i -= 1
                if not lines[i].strip().startswith("# lazy:"):
                    bad.append(
                        f"{f.relative_to(REPO)}:{node.lineno}: {lines[node.lineno - 1].strip()}"
                    )
    assert not bad, "move these to the top, or say `# lazy: why`:\n" + "\n".join(bad)
