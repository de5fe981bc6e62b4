# The interactive results page (beyond_imagenet/results_page.py): one standalone HTML file per study,
# beside the Snakemake report, from the profile (and the across-model correlations where there are).
rule results_page:
    input:
        profile=f"{RESULTS}/metrics/profile.csv",
        **({"across": STUDY.metric("across_models")} if ACROSS_REFERENCE else {}),
    output:
        f"{RESULTS}/results.html",
    params:
        title=f"Results: study {config['study']}",
        reference=ACROSS_REFERENCE,
    log:
        f"{RESULTS}/logs/results_page.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/results_page.py"


if PROFILE_TABLES:
    register_targets(f"{RESULTS}/results.html")
