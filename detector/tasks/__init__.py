"""The tasks the engine trains and evaluates (detector/engine/task.py is their contract):
detection (tools/train_net.py) and classification (tools/train_cls.py)."""
