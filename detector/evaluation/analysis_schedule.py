"""Which evaluations draw the analysis pictures (test.analysis): `final`, `every` or `off`.

The pictures (PR curves, confusion matrix, TIDE errors, AP per size and a grid of test images
with ground truth and predictions, detector/evaluation/eval_pictures.py) are what shows a user
what the model gets wrong, so the final evaluation draws them by default; drawing them at
every periodic evaluation costs about 10% of each evaluation and is asked for with `every`.
The booleans of earlier versions keep working: true is `every`, false is `off`.
"""
from __future__ import annotations

ANALYSIS_MODES = ("final", "every", "off")
_BOOLEAN_NAMES = {"true": "every", "false": "off"}


def analysis_mode(value) -> str:
    """test.analysis as one of ANALYSIS_MODES; ValueError naming the key for anything else."""
    if isinstance(value, bool):
        return "every" if value else "off"
    text = str(value).strip().lower()
    text = _BOOLEAN_NAMES.get(text, text)
    if text not in ANALYSIS_MODES:
        raise ValueError(f"test.analysis={value!r}: use final (the pictures of the final evaluation, the default), "
                         "every (each evaluation) or off.")
    return text


def draws_pictures(mode: str, final: bool) -> bool:
    """Whether an evaluation draws the pictures under `mode`; `final` says whether it is the
    run's last evaluation (the end of training, or eval_only)."""
    return mode == "every" or (mode == "final" and final)
