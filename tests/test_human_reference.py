"""The stored human shape-bias summary is what the raw human decisions give (../shared/data)."""

from __future__ import annotations

import pytest

from beyond_imagenet.human_reference import load_human_shape_bias, read_subject, summarise
from conftest import SHARED

HUMANS = SHARED / "data" / "cue-conflict" / "human-decisions"


@pytest.mark.skipif(not HUMANS.is_dir(), reason="needs ../shared/data/cue-conflict/human-decisions")
def test_stored_summary_recomputes_from_the_raw_decisions():
    stored, recomputed = load_human_shape_bias(), summarise(HUMANS)
    assert recomputed == stored
    # What model-vs-human reports for its observers: around 0.96, range about 0.92-0.99.
    assert len(stored["per_subject"]) == 10 and stored["n_images_per_subject"] == [1200]
    assert 0.91 < stored["overall"]["min"] < 0.93 and 0.95 < stored["overall"]["mean"] < 0.97
    assert 0.98 < stored["overall"]["max"] < 0.995


def test_summary_is_per_observer_then_over_observers(tmp_path):
    header = "subj,session,trial,rt,object_response,category,condition,imagename\n"
    # Observer a: 2 shape, 1 texture decision on conflict images (bias 2/3); the no-conflict image
    # (cat1-cat2) and the "na" response count for neither. Observer b: all shape (bias 1).
    a = ["cat,cat,0,x_cat1-dog2.png", "cat,cat,0,x_cat2-bird1.png", "bird,cat,0,x_cat3-bird2.png",
         "cat,cat,0,x_cat1-cat2.png", "na,dog,0,x_dog1-cat2.png"]
    b = ["cat,cat,0,x_cat1-dog2.png", "dog,dog,0,x_dog1-cat2.png"]
    for name, rows in (("01", a), ("02", b)):
        (tmp_path / f"cue-conflict_subject-{name}_session_1.csv").write_text(
            header + "".join(f"subject-{name},1,{k},0.5,{r}\n" for k, r in enumerate(rows)))
    summary = summarise(tmp_path)
    assert summary["per_subject"] == {"subject-01": round(2 / 3, 4), "subject-02": 1.0}
    assert summary["overall"] == {"mean": round((2 / 3 + 1) / 2, 4), "min": round(2 / 3, 4), "max": 1.0,
                                  "n_subjects": 2}
    assert summary["per_category"]["cat"]["mean"] == round((2 / 3 + 1) / 2, 4)
    assert summary["per_category"]["dog"] == {"mean": 1.0, "min": 1.0, "max": 1.0, "n_subjects": 1}


def test_a_file_without_the_columns_is_refused(tmp_path):
    path = tmp_path / "cue-conflict_subject-01_session_1.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="object_response"):
        read_subject(path)
