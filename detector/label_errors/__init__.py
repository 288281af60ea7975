"""Finding the mistakes in a dataset's labels (detector-find-label-errors, docs/label_errors.md).

The flow: pooled_dataset (every image, any layout) -> folds (stratified, split_carving) ->
fold_training (honest predictions through detector-train) -> kinds (the error analysis'
matching) + scoring (cleanlab) -> suspects -> report, gallery; corrections applies the accepted
entries; planting plants errors for the benchmark (tools/bench_label_errors.py).
"""
