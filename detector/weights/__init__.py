"""Everything about weight files, in one package: checkpoint reading and writing (checkpoint_io,
safetensors_io), training-state checkpoints (checkpointer), loading weights into models
(loading: load_model, load_initial_weights, ...), conversion of torchvision and Detectron2
weights (convert), published weights by name (zoo), the restricted unpickler, and the upgrade of
configs stored by older versions (config_upgrade). It builds models through detector.modeling;
detector.modeling never imports it."""
