"""The SLURM profile on a real one-node SLURM (slurm-wlm 22.05 on 127.0.0.1, no accounting).

A reduced demo (one category, few images) goes through `--workflow-profile profiles/slurm` as a
user would run it, with the profile's three site settings edited (partition, max-threads). Every
remote job must reach sbatch with its rule's threads, mem_mb and runtime; a training job cancelled
with `scancel` fails the run, and the same command run again completes with the metrics of a
local run. `make test-slurm` runs this file alone; `make test` runs it with the rest.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from slurm_cluster import SlurmCluster, missing_reason

pytestmark = pytest.mark.slow

SMALL = {
    "demo": {"categories": ["bracket"], "n_train": 12, "n_test_normal": 4, "n_test_per_defect": 2},
    "threshold": {"folds": 3},
    "backbone": {"threads": 4},  # more than the node has: max-threads must cap it
}
# rules the Snakefile keeps local (seconds each); every other job must go through sbatch
LOCAL = {"all", "demo_data", "ingest", "preflight_memory", "calibrate", "report"}
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def _site_profile(wf: Path, cpus: int) -> None:
    """What the profile asks a user to edit: the partition and the node's core count."""
    path = wf / "profiles" / "slurm" / "config.yaml"
    prof = yaml.safe_load(path.read_text())
    prof["default-resources"]["slurm_partition"] = "debug"
    prof["max-threads"] = cpus
    path.write_text(yaml.safe_dump(prof, sort_keys=False))


def _jobcomp(cluster: SlurmCluster) -> dict[str, dict[str, str]]:
    """SLURM's own record of every finished job (jobcomp/filetxt), by job id."""
    jobs = {}
    for line in cluster.jobcomp.read_text().splitlines():
        fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
        jobs[fields["JobId"]] = fields
    return jobs


def _submitted(log: str) -> dict[str, tuple[str, str]]:
    """SLURM job id -> (rule, wildcard values joined by '_'), from Snakemake's 'submitted with
    SLURM jobid' lines (the plugin's log path is rule_{rule}/{wildcards}/{jobid}.log)."""
    pat = r"submitted with SLURM jobid (\d+) \(log: \S*/rule_(\w+)/(?:(\S+?)/)?\d+\.log\)"
    return {m.group(1): (m.group(2), m.group(3) or "") for m in re.finditer(pat, log)}


def test_demo_through_slurm_with_a_cancelled_job(workflow_dir, tmp_path):
    reason = missing_reason()
    if reason:
        pytest.skip(f"no SLURM cluster here: {reason}")
    cpus = 2
    wf = workflow_dir
    cfg = tmp_path / "small.yaml"
    cfg.write_text(yaml.safe_dump(SMALL))
    _site_profile(wf, cpus)

    # the reference: the same small demo run locally, in a folder of its own
    local = tmp_path / "local"
    subprocess.run(["cp", "-r", str(wf), str(local)], check=True)
    subprocess.run(
        [*SNAKEMAKE, "--cores", "2", "--configfile", str(cfg)],
        cwd=local,
        check=True,
        capture_output=True,
    )
    metrics = sorted(local.glob("results/demo/models/*/bracket/metrics.json"))
    assert len(metrics) == 4  # knn, padim, patchcore and their combination

    cmd = [
        "timeout",
        "-s",
        "KILL",
        "400",
        *SNAKEMAKE,
        "--workflow-profile",
        "profiles/slurm",
        "--configfile",
        str(cfg),
    ]
    with SlurmCluster(tmp_path / "slurm", cpus=cpus) as cluster:
        env = cluster.env()
        # 1. run, and cancel a training job while it runs (no automatic retry for this run)
        first_log = tmp_path / "first.log"
        with open(first_log, "w") as fh:
            proc = subprocess.Popen(
                [*cmd, "--retries", "0"], cwd=wf, env=env, stdout=fh, stderr=subprocess.STDOUT
            )
            cancelled, deadline = None, time.monotonic() + 300
            while cancelled is None and proc.poll() is None and time.monotonic() < deadline:
                q = subprocess.run(
                    ["squeue", "-h", "-o", "%i|%T|%k"], env=env, capture_output=True, text=True
                ).stdout
                for line in q.splitlines():
                    job, state, comment = line.split("|", 2)
                    if state == "RUNNING" and "rule_train" in comment:
                        subprocess.run(["scancel", job], env=env, check=True)
                        cancelled = job
                        break
                time.sleep(0.3)
            rc = proc.wait(timeout=400)
        first = first_log.read_text()
        assert cancelled is not None, f"no training job seen running:\n{first[-3000:]}"
        assert rc != 0, f"a run with a cancelled job must fail:\n{first[-3000:]}"
        assert f"SLURM-job '{cancelled}' failed" in first and "CANCELLED" in first, first[-3000:]

        # 2. the same command again completes
        second = subprocess.run(cmd, cwd=wf, env=env, capture_output=True, text=True)
        log = first + second.stdout + second.stderr
        assert second.returncode == 0, log[-5000:]
        jobs = _jobcomp(cluster)

    # every job that is not a local rule went through sbatch with its rule's resources
    submitted = _submitted(log)
    assert set(submitted) <= set(jobs)
    rules_seen = {rule for rule, _ in submitted.values()}
    assert {
        "backbone",
        "preflight",
        "standardize",
        "embed",
        "train",
        "score",
        "predict",
        "metrics",
    } <= rules_seen, rules_seen
    assert not rules_seen & LOCAL, rules_seen & LOCAL
    planned = _planned(local, cfg, cpus)
    for job, (rule, wc) in submitted.items():
        rec = jobs[job]
        tres = dict(kv.split("=") for kv in rec["Tres"].split(","))
        want = planned[(rule, wc)]  # per job: a train job's mem_mb comes from its own features
        assert int(tres["cpu"]) == want["threads"], (rule, rec, want)
        assert tres["mem"] == f"{want['mem_mb']}M", (rule, rec, want)
        assert int(rec["TimeLimit"]) == want["runtime"], (rule, rec, want)
        assert rec["Partition"] == "debug"
    embed = [jobs[j]["Tres"] for j, (r, _) in submitted.items() if r == "embed"]
    # backbone.threads (4) reach --cpus-per-task, capped to the node's 2 by the profile's max-threads
    assert embed and all("cpu=2" in t for t in embed), embed
    assert jobs[cancelled]["JobState"] == "CANCELLED"

    # the rerun's metrics are the local run's, byte for byte
    for path in metrics:
        rel = path.relative_to(local)
        assert (wf / rel).read_bytes() == path.read_bytes(), rel
    report = json.loads((wf / "results/demo/preflight.json").read_text())
    assert report["ok"]


def _planned(wf: Path, cfg: Path, cpus: int) -> dict[tuple[str, str], dict[str, int]]:
    """Threads, mem_mb and runtime of each job, by (rule, wildcard values joined by '_'), as
    Snakemake resolves them with the SLURM profile:
    dry runs in a folder whose checkpoint has run (everything forced, then every rule after the
    checkpoint forced, since a forced checkpoint hides the jobs after it)."""
    out: dict[tuple[str, str], dict[str, int]] = {}
    after = ["embed", "synthetic", "train", "score", "predict", "metrics"]
    for force in (["--forceall"], ["--forcerun", *after]):
        r = subprocess.run(
            [
                *SNAKEMAKE,
                "-n",
                "--workflow-profile",
                "profiles/slurm",
                "--configfile",
                str(cfg),
                "--executor",
                "local",
                "--cores",
                str(cpus),
                *force,
            ],
            cwd=wf,
            capture_output=True,
            text=True,
            check=True,
        )
        for block in re.split(r"\n(?=(?:local)?(?:rule|checkpoint) \w+:)", r.stdout):
            rule = re.match(r"(?:local)?(?:rule|checkpoint) (\w+):", block)
            res = re.search(r"resources: (.*)", block)
            if rule and res:
                kv = dict(p.split("=", 1) for p in res.group(1).split(", ") if "=" in p)
                threads = re.search(r"threads: (\d+)", block)
                wc = re.search(r"wildcards: (.*)", block)
                values = [w.split("=", 1)[1] for w in wc.group(1).split(", ")] if wc else []
                key = (rule.group(1), "_".join(values).replace("/", "_"))
                out.setdefault(
                    key,
                    {
                        "threads": int(threads.group(1)) if threads else 1,
                        "mem_mb": int(kv["mem_mb"]),
                        "runtime": int(kv["runtime"]),
                    },
                )
    return out


def test_generic_profile_submits_through_a_real_scheduler(workflow_dir, tmp_path):
    """profiles/generic (cluster-generic executor, job status from the job script's own marker
    files) with its SLURM submit line, up to the standardized table."""
    reason = missing_reason()
    if reason:
        pytest.skip(f"no SLURM cluster here: {reason}")
    cfg = tmp_path / "small.yaml"
    cfg.write_text(yaml.safe_dump(SMALL))
    path = workflow_dir / "profiles" / "generic" / "config.yaml"
    prof = yaml.safe_load(path.read_text())
    prof["max-threads"] = 2
    path.write_text(yaml.safe_dump(prof, sort_keys=False))
    with SlurmCluster(tmp_path / "slurm", cpus=2) as cluster:
        r = subprocess.run(
            [
                "timeout",
                "-s",
                "KILL",
                "300",
                *SNAKEMAKE,
                "results/demo/standardized.parquet",
                "--workflow-profile",
                "profiles/generic",
                "--configfile",
                str(cfg),
            ],
            cwd=workflow_dir,
            env=cluster.env(),
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
        jobs = {j["Name"]: j for j in _jobcomp(cluster).values()}
    assert {"defectflow-preflight", "defectflow-standardize"} <= set(jobs), sorted(jobs)
    assert not {"defectflow-ingest", "defectflow-demo_data"} & set(jobs)  # local rules stay local
    for job in jobs.values():
        assert job["JobState"] == "COMPLETED", job
        assert "mem=" in job["Tres"] and int(job["TimeLimit"]) > 0
    assert (workflow_dir / "results/demo/standardized.parquet").stat().st_size > 0
