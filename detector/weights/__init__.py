"""Every file of weights in and out, as a stack of layers: each imports only the layers below it.

    5  loading into models     loading.py (load_model, load_initial_weights), starting_weights.py,
                               weight_settings.py, checkpointer.py (training-state checkpoints)
    4  published names         zoo.py: torchvision://... -> cached, hash-checked file -> converted file
    3  conversion              conversion/: one converter per source, each returning one record;
                               one assembly step (config, class layers, strict check, write);
                               the registry of weights sources (conversion/registry.py)
    2  one reader, one writer  checkpoint_io.py (read_checkpoint -> CheckpointRecord: state, config,
                               iteration; save_checkpoint), state_dicts.py (strict loading),
                               config_upgrade.py (stored configs brought to today's layout)
    1  formats                 formats/: .pth (weights_only, zip CRC), .safetensors (sha256),
                               .pkl (restricted unpickler), atomic writes, CheckpointError

Why layers: the zoo fetches and converts, conversion reads and writes, and the reader knows
formats; none of them reaches up, so a new format, a new source or a new way of loading
changes one layer. The layers with several modules are subpackages (formats/, conversion/);
the others are single modules here, beside the top layer. A new weights source is one module
plus one `register_source` call (docs/extending.md, "A new weights source").

Names used from outside: `read_checkpoint`, `load_checkpoint`, `checkpoint_iteration`,
`save_checkpoint`, `CheckpointError` (checkpoint_io); `load_state_dict_strict`,
`WeightsMismatchError` (state_dicts); `resolve_weights`, `PublishedWeightsError` (zoo);
`convert_weights` (conversion/convert.py). It builds models through detector.modeling;
detector.modeling never imports it.
"""
