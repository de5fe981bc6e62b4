from pathlib import Path

from beyond_imagenet.download import download
from beyond_imagenet.workflow import setup

study = setup(snakemake)
recipe = study.datasets[snakemake.wildcards.dataset].download
out = Path(snakemake.output[0])
download(recipe["url"], out, sha256=recipe.get("sha256"), size=recipe.get("size"),
         record_checksum=None if recipe.get("sha256") else out.with_name(out.name + ".sha256"))
