"""Error analysis of detection results: TIDE error kinds with dAP, confusion matrix, PR curves, sizes."""
