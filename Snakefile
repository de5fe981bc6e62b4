# Beyond ImageNet accuracy: a study of models x datasets x evaluations.
#   snakemake --cores 2                                  # the default study (config.yaml), offline
#   snakemake --configfile studies/paper.yaml --cores 8 --resources gpu=4
#   snakemake results/figures/reliability_imagenet_val.png --cores 2   # one figure
import os

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

# string resources, `localrule:`, the API the tests drive, the SLURM executor plugin's interface
min_version("9.0")

from beyond_imagenet.study import ConfigError, Study, check_config_files, validate_config

# config.yaml is the default study; a --configfile on the command line replaces it entirely
# (Snakemake would otherwise merge the two, mixing the default study's models into another).
if not workflow.overwrite_configfiles:
    if os.path.exists("config.yaml"):
        # Read strictly first: Snakemake's loader names no line for a syntax error.
        try:
            check_config_files(["config.yaml"])
        except ConfigError as err:
            raise WorkflowError(f"invalid study config: {err}")

    configfile: "config.yaml"


try:
    # A key given twice (two `vit_sup:` entries, a repeated block) is kept once by YAML, silently.
    check_config_files(workflow.configfiles)
except ConfigError as err:
    raise WorkflowError(f"invalid study config: {err}")
try:
    validate_config(config, os.path.join(workflow.basedir, "schemas", "config.schema.yaml"))
except ConfigError as err:
    raise WorkflowError(str(err))

# envs/*.yaml install this checkout's package into each conda env from here.
os.environ.setdefault("BEYOND_IMAGENET_ROOT", workflow.basedir)

STUDY = Study(config)
RESULTS = str(STUDY.results)
RESOURCES = STUDY.resources


wildcard_constraints:
    model=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    dataset=r"[A-Za-z0-9][A-Za-z0-9_-]*",
    filename=r"[^/]+",


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/datasets.smk"
include: "rules/extract.smk"
# One file per evaluation (its compute and plot rules, its targets), named after its registry
# record in beyond_imagenet/evaluations/; add new evaluations here.
include: "rules/accuracy.smk"
include: "rules/calibration.smk"
include: "rules/robustness.smk"
include: "rules/imagenet_x.smk"
include: "rules/shape_bias.smk"
include: "rules/pug.smk"
include: "rules/invariance.smk"
include: "rules/cka.smk"
include: "rules/transfer.smk"
# Model against model: the paired differences of every headline, with their intervals.
include: "rules/comparisons.smk"
# Every model across every evaluation above, from their metric tables.
include: "rules/profile.smk"
# The profile's headlines against ImageNet top-1 across the study's models.
include: "rules/across_models.smk"
# One interactive HTML page of the study (sortable profile, scatters with hover).
include: "rules/results_page.smk"


onstart:
    check_manual_datasets()
    check_study_ready()
    check_disk_space()
    check_slurm_jobs()


rule all:
    input:
        TARGETS,
    default_target: True
