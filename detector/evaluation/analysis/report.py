"""summary.md (markdown tables) and analysis.json from an analysis dict (see pipeline.py).

AP values are fractions in analysis.json (like metrics.json) and percentage points in the
markdown, where they are read by people.
"""
from __future__ import annotations

from pathlib import Path

from detector.evaluation.analysis.errors import ERROR_KINDS, FP_KINDS
from detector.evaluation.json_files import write_json

SPECIAL_NAMES = {"false_positives": "all false positives (perfect precision)",
                 "false_negatives": "all unmatched objects (perfect recall)"}


def _pct(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{100 * value:.{digits}f}"


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def overall_table(analysis: dict) -> str:
    names = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")
    return _table(list(names), [[_pct(analysis["overall"].get(n)) for n in names]])


def error_table(analysis: dict) -> str:
    """The main table: count, AP after the fix and dAP for each kind of error."""
    ap_name = analysis["settings"]["ap_name"]
    rows = []
    for kind in ERROR_KINDS:
        error = analysis["errors"][kind]
        rows.append([kind if kind == error["name"] else f"{kind} ({error['name']})", error["count"], _pct(error["ap_fixed"]), _pct(error["dap"], 2)])
    for kind, special in analysis["special"].items():
        rows.append([SPECIAL_NAMES[kind], "", _pct(special["ap_fixed"]), _pct(special["dap"], 2)])
    return _table(["error", "count", f"{ap_name} after fix", f"d{ap_name}"], rows)


def counts_line(analysis: dict) -> str:
    c = analysis["counts"]
    return (f"{c['detections']} detections: {c['considered']} considered = {c['tp']} true positives + "
            f"{sum(c[k] for k in FP_KINDS)} false positives; {c['ignored']} ignored (on crowd regions), "
            f"{c['not_considered']} beyond max_dets={analysis['settings']['max_dets']}. "
            f"{c['objects']} objects (non-crowd) = {c['tp']} matched + {c['missed']} missed + "
            f"{c['covered']} covered by a cls/loc error; {c['crowd_regions']} crowd regions.")


def _dap_base(analysis: dict) -> float | None:
    return analysis.get("dap_base_ap", analysis["base_ap"])


def _dap_source(settings: dict) -> str:
    if settings.get("dap_evaluator", "tide") == "tide":
        return "TIDE's own AP, as tidecv 1.0.1 computes it"
    return "COCOeval re-run after each fix"


def per_class_table(analysis: dict) -> str:
    ap_name = analysis["settings"]["ap_name"]
    kinds = list(FP_KINDS) + ["missed"]
    rows = [[r["name"], r["objects"], r["detections"], _pct(r["AP"]), _pct(r[ap_name]), r["tp"]] + [r[k] for k in kinds]
            for r in analysis["per_class"] if r["objects"] or r["detections"]]
    return _table(["class", "objects", "detections", "AP", ap_name, "tp"] + kinds, rows)


def size_table(analysis: dict) -> str:
    ap_name = analysis["settings"]["ap_name"]
    kinds = ["tp"] + list(FP_KINDS) + ["missed", "covered"]
    rows = [[name, _pct(s["AP"]), _pct(s[ap_name]), s["objects"]] + [s[k] for k in kinds]
            for name, s in analysis["sizes"].items()]
    return _table(["size", "AP", ap_name, "objects"] + kinds, rows)


def _iou_by(settings: dict) -> str:
    # Analyses written before masks existed carry no iou_type: they were by box.
    return "mask (segm)" if settings.get("iou_type") == "segm" else "box (bbox)"


def summary_markdown(analysis: dict) -> str:
    settings, files = analysis["settings"], analysis.get("files", {})
    ap_name = settings["ap_name"]
    sources = "".join(f"- {key}: `{value}`\n" for key, value in settings.get("sources", {}).items())

    def picture(key: str, title: str) -> str:
        return f"![{title}]({files[key]})\n\n[{files[key]}]({files[key]})\n" if key in files else ""

    return f"""# Error analysis

{sources}- evaluator: {settings['evaluator']}; IoU by {_iou_by(settings)}; TIDE thresholds: foreground IoU {settings['fg_iou']}, background IoU {settings['bg_iou']}; max_dets {settings['max_dets']}

## Overall (COCO, %)

{overall_table(analysis)}

## Errors (TIDE) and the {ap_name} gained by fixing each kind (base {ap_name} {_pct(_dap_base(analysis))}, {_dap_source(settings)})

{error_table(analysis)}

{counts_line(analysis)}

loc: right class, {settings['bg_iou']} <= IoU <= {settings['fg_iou']}; cls: IoU >= {settings['fg_iou']} with an object of another class;
dupe: right class, IoU >= {settings['fg_iou']}, object already taken by a higher-scoring detection; bkg: IoU <= {settings['bg_iou']}
with every object; both: the rest (wrong class, {settings['bg_iou']} < IoU < {settings['fg_iou']}); missed: objects no detection
found and no cls/loc error points at (the first kind that applies, in this order, as TIDE). Fixes: a cls or loc error
becomes a true positive of its object when the object is free and the error is its highest-scoring cls or loc error
(the others are removed), both/dupe/bkg are removed, missed objects are removed from the ground truth (TIDE's recall
fix). Detections on crowd regions are ignored, as in COCO. See docs/error_analysis.md.

{picture('errors', 'error breakdown')}
## Confusion matrix (IoU >= {analysis['confusion_matrix']['iou']}, score >= {analysis['confusion_matrix']['score_thresh']})

Rows: ground truth, columns: prediction, last row/column: background. The numbers are in analysis.json.

{picture('confusion', 'confusion matrix')}
## Per class (%)

{per_class_table(analysis)}

## Object sizes

AP in %; counts of objects (tp, missed, covered: by annotation area) and of false positives (by {"mask" if settings.get("iou_type") == "segm" else "box"} area).

{size_table(analysis)}

{picture('sizes', 'size breakdown')}
## Precision-recall curves per class

{picture('pr_curves', 'precision-recall curves')}"""


def write_report(analysis: dict, output_dir: Path) -> dict[str, Path]:
    output_dir = Path(output_dir)
    summary = output_dir / "summary.md"
    summary.write_text(summary_markdown(analysis))
    return {"summary": summary, "analysis": write_json(analysis, output_dir / "analysis.json")}
