from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "rules/captions/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/preflight.smk"
include: "rules/standardize.smk"
include: "rules/embed.smk"
include: "rules/train.smk"
include: "rules/infer.smk"
include: "rules/report.smk"
include: "rules/learning_curve.smk"
include: "rules/curate.smk"


# Steps of a second or two run where Snakemake runs, not as cluster jobs (each would wait for a
# scheduler slot and a status check).
localrules:
    all,
    demo_data,
    ingest,
    preflight_memory,
    calibrate,
    report,
    review_tasks,
    leaderboard,
    register_run,
    learning_curve_page,
    learning_curve,


rule all:
    default_target: True
    input:
        all_targets(),
        chain_files,
