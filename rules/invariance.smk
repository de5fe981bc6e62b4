# Transformation invariance (docs/evaluations.md §8): every variant is an extraction of its own
# (extracted/{model}/{dataset}@{variant}.h5, planned through the record's `variants` hook and written
# by extract_outputs); the variant equal to the standard evaluation is read from the standard
# outputs, so no job exists for it. Its record: beyond_imagenet/evaluations/invariance/.
from beyond_imagenet.evaluations.invariance import items as invariance_items

INVARIANCE_ITEMS = invariance_items(STUDY) if "invariance" in STUDY.evaluations else []


rule compute_invariance:
    input:
        **item_inputs(INVARIANCE_ITEMS),
    output:
        f"{RESULTS}/metrics/invariance.csv",
        comparisons=comparisons_output("invariance"),
    params:
        **table_params("invariance", INVARIANCE_ITEMS),
    log:
        f"{RESULTS}/logs/compute_invariance.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/compute_table.py"


if plot_items("invariance"):

    # Every figure of the evaluation in one job (rules/common.smk: plot_items).
    rule plot_invariance:
        input:
            plot_inputs("invariance"),
        output:
            plot_outputs("invariance"),
        params:
            figures=plot_params("invariance"),
        log:
            f"{RESULTS}/logs/plot_invariance.log",
        conda:
            "../envs/analysis.yaml"
        script:
            "../scripts/plot_figure.py"


register_evaluation("invariance")
