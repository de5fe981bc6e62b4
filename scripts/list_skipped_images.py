# Images left out of any extraction of the study (on_bad_image: skip) -> results/metrics/skipped.csv.
import pandas as pd

from beyond_imagenet.extract import read_outputs
from beyond_imagenet.io import atomic_path
from beyond_imagenet.workflow import setup

job = setup(snakemake)
COLUMNS = ["model", "label", "family", "paradigm", "paper_key", "training_data", "dataset", "variant", "id", "reason"]
models = job.params.models
rows = []
for path in job.params.outputs:  # the input: their groups' markers
    out = read_outputs(path, fields=("skipped_ids", "skipped_reasons"))
    model = out["attrs"]["model"]
    if model not in models:  # extracted/<model>/ of a model this study does not have
        raise ValueError(f"{path} was made for model {model!r}, which is not a model of this study ({', '.join(models)})")
    for sid, reason in zip(out["skipped_ids"], out["skipped_reasons"]):
        rows.append({**models[model], "dataset": out["attrs"]["dataset"],
                     "variant": out["attrs"].get("variant", ""), "id": sid, "reason": reason})
with atomic_path(job.output[0]) as tmp:
    pd.DataFrame(rows, columns=COLUMNS).to_csv(tmp, index=False)  # the header even when nothing was skipped
