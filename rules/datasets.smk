# Datasets: generate (offline default study) | download -> verify -> unpack | manual, then a manifest.
# A dataset's preparation is one job (fetch_dataset) or two (generate_dataset or unpack_dataset,
# then build_manifest); VTAB's task splits: build_vtab_manifest (rules/transfer.smk).


rule generate_dataset:
    output:
        directory(f"{RESOURCES}/generated/{{dataset}}"),
    params:
        dataset=dataset_entry,
    log:
        f"{RESULTS}/logs/generate_dataset/{{dataset}}.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/generate_dataset.py"


# One job per downloaded dataset: its files (downloaded to resources/downloads/<name>/, verified),
# its folder (unpacked to resources/datasets/<name>/) and its manifest. The files and folder are
# shared by every study on the same resources folder and kept as they are once complete (their
# .complete marker), so a rerun of the job, or another study's, neither downloads nor unpacks again;
# only the manifest is the job's Snakemake output (per study, under results_dir).
rule fetch_dataset:
    output:
        f"{RESULTS}/manifests/{{dataset}}.json",
    params:
        dataset=dataset_entry,
    log:
        f"{RESULTS}/logs/fetch_dataset/{{dataset}}.log",
    wildcard_constraints:
        dataset="|".join(re.escape(n) for n in FETCHED) or "(?!)",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/fetch_dataset.py"


# A manual archive (datasets.<name>.archive): unpacked once into resources/datasets/<name>/.
rule unpack_dataset:
    input:
        archive=dataset_archive,
    output:
        directory(f"{RESOURCES}/datasets/{{dataset}}"),
    params:
        dataset=dataset_entry,
    log:
        f"{RESULTS}/logs/unpack_dataset/{{dataset}}.log",
    wildcard_constraints:
        dataset="|".join(re.escape(n) for n, s in STUDY.datasets.items() if s.source == "manual" and s.archive)
        or "(?!)",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/unpack_dataset.py"


ruleorder: fetch_dataset > build_manifest


rule build_manifest:
    input:
        dataset_folder,
    output:
        f"{RESULTS}/manifests/{{dataset}}.json",
    params:
        dataset=dataset_entry,
        listing=lambda w: manual_folder_signature(w.dataset),
    log:
        f"{RESULTS}/logs/build_manifest/{{dataset}}.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/build_manifest.py"
