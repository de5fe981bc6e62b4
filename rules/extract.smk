# One forward pass per (model, dataset[, variant]): logits + features + labels + ids in one HDF5 file.
from beyond_imagenet.extraction_jobs import COMPILE_CACHE


# One job per (model, extraction group) writes every output of the group under
# results/extracted/<model>/ (each file atomic and resumable on its own), where readers find it, and
# then its marker, the job's only Snakemake output and its readers' input. Groups: extraction.group /
# extraction.groups (Study.extraction_plan). A rerun of a group reuses every extracted file whose
# extraction key still matches (Snakemake's deleting a rerun job's outputs leaves them alone); a
# file deleted or replaced since the marker was written makes the group rerun (group_manifests).
# The job also runs the evaluations' own passes over the images that its model takes part in (CKA's
# Gram matrices: group_passes, Study.pass_plan) with the network it built, reused the same way.
rule extract_outputs:
    input:
        manifests=group_manifests,
        weights=checkpoint_input,
    output:
        f"{RESULTS}/extracted/{{model}}/{{group}}.group.json",
    params:
        model=model_entry,
        head_identity=head_params,
        # A CLIP model's zero-shot head is built in its first job that builds the model, cached at
        # results/heads/<model>.h5 for the others (beyond_imagenet/heads.py: cached_head).
        head=head_file,
        templates=head_templates,
        protocol=config["preprocessing"],
        logit_scale=config["zero_shot"]["logit_scale"],
        cached=group_items,
        passes=group_passes,
        batch_size=config["extraction"]["batch_size"],
        shard_size=config["extraction"]["shard_size"],
        features_dtype=config["extraction"]["features_dtype"],
        on_bad_image=config["extraction"]["on_bad_image"],
        compile=config["extraction"]["compile"],
        compile_cache=f"{RESOURCES}/{COMPILE_CACHE}",
    log:
        f"{RESULTS}/logs/extract_outputs/{{model}}/{{group}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/extract_outputs/{{model}}/{{group}}.tsv"
    wildcard_constraints:
        group=r"[A-Za-z0-9][A-Za-z0-9_-]*(@variants|@passes|@part-[0-9]+-of-[0-9]+)?",
    threads: MODEL_JOB_THREADS
    conda:
        "../envs/torch.yaml"
    resources:
        **EXECUTION,
    script:
        "../scripts/extract_outputs.py"


# extraction.split: {<dataset>: K}. The K part jobs are extract_outputs jobs (groups
# <dataset>@part-<k>-of-<K>: same resources, GPU lease, SLURM settings), each computing a contiguous
# slice of the dataset's checkpoint shards, resumable; this job (CPU, no GPU) assembles them into
# results/extracted/<model>/<dataset>.h5, byte-identical to one job's file, and writes the dataset's
# group marker, which readers take as usual (beyond_imagenet/extract.py: extract_part, merge_parts).
rule merge_extraction_parts:
    input:
        parts=split_part_markers,
        manifest=split_manifest,
    output:
        f"{RESULTS}/extracted/{{model}}/{{dataset}}.group.json",
    params:
        item=split_item,
        on_bad_image=config["extraction"]["on_bad_image"],
    log:
        f"{RESULTS}/logs/merge_extraction_parts/{{model}}/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/merge_extraction_parts/{{model}}/{{dataset}}.tsv"
    wildcard_constraints:
        dataset="|".join(re.escape(d) for d in SPLIT_DATASETS) or "(?!)",
    conda:
        "../envs/torch.yaml"
    script:
        "../scripts/merge_extraction_parts.py"


# A split dataset's marker matches both rules' outputs; its merge writes it.
ruleorder: merge_extraction_parts > extract_outputs


# Every image an extraction skipped (extraction.on_bad_image: skip), one row each, across the study;
# the evaluation tables carry the counts (metric n_skipped).
rule list_skipped_images:
    input:
        STUDY.all_markers(),
    output:
        report(f"{RESULTS}/metrics/skipped.csv", category="Extraction", caption="../report/skipped.rst"),
    params:
        models=MODEL_COLUMNS,
        outputs=STUDY.all_outputs(),
    log:
        f"{RESULTS}/logs/list_skipped_images.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/list_skipped_images.py"


register_targets(STUDY.metric("skipped"))
