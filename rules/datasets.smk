# Datasets: generate (offline default study) | download -> verify -> unpack | manual, then a manifest.


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


rule download_dataset:
    output:
        f"{RESOURCES}/downloads/{{dataset}}/{{filename}}",
    params:
        dataset=dataset_entry,
    log:
        f"{RESULTS}/logs/download_dataset/{{dataset}}/{{filename}}.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/download_dataset.py"


rule unpack_dataset:
    input:
        archive=dataset_archive,
    output:
        directory(f"{RESOURCES}/datasets/{{dataset}}"),
    params:
        dataset=dataset_entry,
    log:
        f"{RESULTS}/logs/unpack_dataset/{{dataset}}.log",
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/unpack_dataset.py"


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
