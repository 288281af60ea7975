"""The tasks the engine trains and evaluates (detector/engine/task.py is their contract):
detection (tools/train_net.py) and classification (tools/train_cls.py), with what only
detection uses beside them: the validation loss and prediction on image files (tools/predict.py)."""
