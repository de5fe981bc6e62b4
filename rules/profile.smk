# Model profile: one table and one figure with every model across every evaluation the study ran
# (the headlines of each evaluation's registry record). It reads the metric tables of the study's
# evaluations, so it grows as evaluations are added.
from beyond_imagenet.profile import profile_tables

# In the registry's order (the paper's), whatever the order of the study's evaluations: that order
# carries no meaning (study.canonical_order sorts it).
PROFILE_TABLES = profile_tables([e for e in EVALUATIONS if e in STUDY.evaluations])


rule compute_profile:
    input:
        **{evaluation: STUDY.metric(table) for evaluation, table in PROFILE_TABLES.items()},
        # whether each ranking is significant (rules/comparisons.smk)
        **({"comparisons": STUDY.metric("comparisons")} if COMPARISON_TABLES else {}),
    output:
        report(f"{RESULTS}/metrics/profile.csv", category="Model profile", caption="../report/profile_table.rst"),
    params:
        models=list(STUDY.models),
        # chance top-1 per dataset / VTAB task: a guessing model's cells are greyed, not ranked
        chance=CHANCE_LEVELS,
    log:
        f"{RESULTS}/logs/compute_profile.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/compute_profile.py"


rule plot_profile:
    input:
        f"{RESULTS}/metrics/profile.csv",
    output:
        png=report(f"{RESULTS}/figures/profile.png", category="Model profile", caption="../report/profile.rst"),
        pdf=f"{RESULTS}/figures/profile.pdf",
    params:
        title=f"Model profile: study {config['study']}",
    log:
        f"{RESULTS}/logs/plot_profile.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/plot_profile.py"


if PROFILE_TABLES:
    register_targets(STUDY.metric("profile"), STUDY.figure("profile", "png"), STUDY.figure("profile", "pdf"))
