# ImageNet accuracy (docs/evaluations.md §1): top-1 / top-5 from the cached logits. Its record:
# beyond_imagenet/evaluations/accuracy.py.


rule compute_accuracy:
    input:
        **table_inputs("accuracy"),
    output:
        f"{RESULTS}/metrics/accuracy.csv",
        comparisons=comparisons_output("accuracy"),
    params:
        **table_params("accuracy"),
    log:
        f"{RESULTS}/logs/compute_accuracy.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/compute_table.py"


register_evaluation("accuracy")
