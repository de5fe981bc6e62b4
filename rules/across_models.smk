# Across models (docs/evaluations.md §14): each headline of the profile against ImageNet top-1 over
# the study's models (rank correlation), and the paradigm / family / training-data groups at matched
# ImageNet accuracy, with bootstrap intervals over models. A study-wide aggregate of the profile.
from beyond_imagenet.across_models import reference_headline

ACROSS_REFERENCE = reference_headline(STUDY)


rule compute_across_models:
    input:
        f"{RESULTS}/metrics/profile.csv",
    output:
        report(f"{RESULTS}/metrics/across_models.csv", category="Model profile",
               caption="../report/across_models.rst"),
    params:
        reference=ACROSS_REFERENCE,
        uncertainty=UNCERTAINTY,
    log:
        f"{RESULTS}/logs/compute_across_models.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/compute_across_models.py"


rule plot_across_models:
    input:
        f"{RESULTS}/metrics/across_models.csv",
    output:
        png=report(f"{RESULTS}/figures/across_models.png", category="Model profile",
                   caption="../report/across_models.rst"),
        pdf=f"{RESULTS}/figures/across_models.pdf",
    params:
        title=f"Across models: study {config['study']}",
    log:
        f"{RESULTS}/logs/plot_across_models.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/plot_across_models.py"


# Only where the profile has an ImageNet top-1 to relate the other headlines to.
if PROFILE_TABLES and ACROSS_REFERENCE:
    register_targets(STUDY.metric("across_models"), STUDY.figure("across_models", "png"),
                     STUDY.figure("across_models", "pdf"))


# Each headline against ImageNet top-1, one point per model (docs/evaluations.md §15): the figure
# that scales with the number of models; the robustness panel draws the effective-robustness fit.
rule plot_vs_imagenet:
    input:
        profile=f"{RESULTS}/metrics/profile.csv",
        **({"robustness": STUDY.metric("robustness")} if "robustness" in PROFILE_TABLES else {}),
    output:
        png=report(f"{RESULTS}/figures/vs_imagenet.png", category="Model profile",
                   caption="../report/vs_imagenet.rst"),
        pdf=f"{RESULTS}/figures/vs_imagenet.pdf",
    params:
        reference=ACROSS_REFERENCE,
        # the models named beside their point (None: every model up to style.MANY_MODELS, then the paper's)
        label_models=config.get("label_models"),
        title=f"Each headline against ImageNet top-1: study {config['study']}",
    log:
        f"{RESULTS}/logs/plot_vs_imagenet.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/plot_vs_imagenet.py"


if PROFILE_TABLES and ACROSS_REFERENCE:
    register_targets(STUDY.figure("vs_imagenet", "png"), STUDY.figure("vs_imagenet", "pdf"))
