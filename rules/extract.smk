# One forward pass per (model, dataset): logits + features + labels + ids in one HDF5 file.


rule build_zero_shot_head:
    input:
        checkpoint_input,
    output:
        f"{RESULTS}/heads/{{model}}.h5",
    params:
        model=head_params,
    log:
        f"{RESULTS}/logs/build_zero_shot_head/{{model}}.log",
    conda:
        "../envs/torch.yaml"
    resources:
        gpu=GPU_SLOTS,
    script:
        "../scripts/build_zero_shot_head.py"


rule extract_outputs:
    input:
        manifest=f"{RESULTS}/manifests/{{dataset}}.json",
        head=head_input,
        weights=checkpoint_input,
    output:
        f"{RESULTS}/outputs/{{model}}/{{dataset}}.h5",
    params:
        model=model_params,
        preprocessing=config["preprocessing"],
        input_transform=lambda w: STUDY.input_transform(w.dataset),
        features_dtype=config["extraction"]["features_dtype"],
        on_bad_image=config["extraction"]["on_bad_image"],
    log:
        f"{RESULTS}/logs/extract_outputs/{{model}}/{{dataset}}.log",
    conda:
        "../envs/torch.yaml"
    resources:
        gpu=GPU_SLOTS,
    script:
        "../scripts/extract_outputs.py"


rule extract_variant_outputs:
    input:
        manifest=f"{RESULTS}/manifests/{{dataset}}.json",
        head=head_input,
        weights=checkpoint_input,
    output:
        f"{RESULTS}/outputs/{{model}}/{{dataset}}@{{variant}}.h5",
    params:
        model=variant_model_params,
        preprocessing=config["preprocessing"],
        max_images=lambda w: config["evaluations"].get("invariance", {}).get("max_images"),
        features_dtype=config["extraction"]["features_dtype"],
        on_bad_image=config["extraction"]["on_bad_image"],
    log:
        f"{RESULTS}/logs/extract_variant_outputs/{{model}}/{{dataset}}@{{variant}}.log",
    wildcard_constraints:
        variant=r"(scale|shift|res)-[0-9][0-9.]*",
    conda:
        "../envs/torch.yaml"
    resources:
        gpu=GPU_SLOTS,
    script:
        "../scripts/extract_variant_outputs.py"


# Every image an extraction skipped (extraction.on_bad_image: skip), one row each, across the study;
# the evaluation tables carry the counts (metric n_skipped).
rule list_skipped_images:
    input:
        sorted(set(STUDY.extraction_targets()) | set(STUDY.invariance_inputs())),
    output:
        report(f"{RESULTS}/metrics/skipped.csv", category="Extraction", caption="../report/skipped.rst"),
    params:
        models=MODEL_COLUMNS,
    log:
        f"{RESULTS}/logs/list_skipped_images.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/list_skipped_images.py"


register_targets(STUDY.metric("skipped"))
