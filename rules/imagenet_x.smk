# Types of mistakes (docs/evaluations.md §2): ImageNet-X error ratios per factor, from the
# ImageNet val outputs joined with the imagenet-x package's annotations (no extraction of its own).
# Its record: beyond_imagenet/evaluations/imagenet_x.py.


rule compute_imagenet_x:
    input:
        **table_inputs("imagenet_x"),
    output:
        f"{RESULTS}/metrics/imagenet_x.csv",
        comparisons=comparisons_output("imagenet_x"),
    params:
        **table_params("imagenet_x"),
    log:
        f"{RESULTS}/logs/compute_imagenet_x.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/compute_table.py"


rule plot_imagenet_x:
    input:
        figure_input("imagenet_x", "imagenet_x"),
    output:
        **figure_files("imagenet_x", "imagenet_x"),
    params:
        **figure_params("imagenet_x", "imagenet_x"),
    log:
        figure_log("imagenet_x", "imagenet_x"),
    wildcard_constraints:
        **figure_wildcards("imagenet_x", "imagenet_x"),
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/plot_figure.py"


register_evaluation("imagenet_x")
